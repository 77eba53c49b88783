"""verify's history read back: the seeds' EAGLE regression (safer-eagle's decode falling from 36.5 to 12 tok/s) is
listed with its numbers and drawn, and a run that measured nothing is never called one."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from sparkstack.cli import main
from sparkstack.paths import repo_root


def synthetic_history(path) -> None:
    runs = []
    for day in range(1, 8):  # a week at the baseline, as seed 001 measured it, then the regression
        rate = 36.5 - 0.3 * (day % 3) if day < 6 else 12.0
        runs.append({"time": f"2026-11-{day:02d}T09:00:00Z", "host": "spark-1", "model": "mistral4",
                     "variant": "safer-eagle", "decode_tok_s": rate, "ttft_s": 0.41 + 0.02 * (day % 2),
                     "baseline_tok_s": 36.5, "results": {"decode": "PASS" if rate > 29.2 else "FAIL"}})
        runs.append({"time": f"2026-11-{day:02d}T10:00:00Z", "host": "spark-1", "model": "qwen36", "variant": "default",
                     "decode_tok_s": 58.0 + day % 3, "ttft_s": 0.25, "baseline_tok_s": 57,
                     "results": {"decode": "PASS"}})
    # A run that never reached the model: drawn hollow, not a regression.
    runs.append({"time": "2026-11-04T11:00:00Z", "host": "spark-1", "model": "mistral4", "variant": "safer-eagle",
                 "decode_tok_s": 3.0, "ttft_s": 9.0, "baseline_tok_s": 36.5, "results": {"decode": "INSTRUMENT"}})
    path.write_text("".join(json.dumps(run) + "\n" for run in runs))


def test_the_eagle_regression_is_listed_and_plotted_and_an_instrument_run_is_not_one(tmp_path):
    history = tmp_path / "spark-1.jsonl"
    synthetic_history(history)
    out = tmp_path / "history.png"
    result = CliRunner().invoke(main, ["verify", "--history", "--history-file", str(history), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    regressions = [line for line in result.output.splitlines() if line.startswith("REGRESSION")]
    assert regressions == [
        f"REGRESSION 2026-11-0{day}T09:00:00Z mistral4 (safer-eagle) on spark-1: 12.0 tok/s < 0.8 x baseline 36.5 = 29.2 tok/s"
        for day in (6, 7)]
    assert "plotted 15 run(s) of 2 model variant(s)" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    # Kept for the README (docs/verify-history.png is a copy of this test's plot).
    artifacts = repo_root() / "build" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, artifacts / "verify-history.png")


def test_only_the_model_asked_for_is_read(tmp_path):
    history = tmp_path / "spark-1.jsonl"
    synthetic_history(history)
    result = CliRunner().invoke(main, ["verify", "--history", "--history-file", str(history), "--model", "qwen36"])
    assert result.exit_code == 0 and "REGRESSION" not in result.output


def test_the_status_page_draws_each_model_variants_runs_as_recorded_on_the_host(tmp_path):
    from sparkstack_host import status_page

    history = tmp_path / "verify-history.jsonl"
    synthetic_history(history)
    series = status_page.read_verify_history(history)
    view = {"now": 0, "hot": None, "set": False, "models": [], "hot_for_s": None, "loading": None, "switching": None,
            "in_flight": 0, "waiting": 0, "memory": None, "guard_action": None, "recent": [], "usage": {},
            "switches": [], "verify": series}
    page = status_page.render(view)
    assert sorted(series) == [("mistral4", "safer-eagle"), ("qwen36", "default")]
    # The last run of each, and the series as a line: eight mistral4 runs (one INSTRUMENT, drawn hollow).
    assert "<td>mistral4</td><td>safer-eagle</td><td>2026-11-07T09:00:00Z</td><td>12.0</td><td>36.5</td>" in page
    assert page.count('fill="none" stroke="#36c"/>') == 1 + 2  # the INSTRUMENT dot and the two polylines
    assert page.count("<circle") == 15 and "<script" not in page


def test_an_attacker_who_writes_the_hosts_verify_history_cannot_put_markup_on_the_status_page(tmp_path):
    """The history on the host is written by verify over ssh; a line with markup in it is shown as text."""
    from sparkstack_host import status_page

    history = tmp_path / "verify-history.jsonl"
    history.write_text(json.dumps({"time": "2026-11-01T09:00:00Z", "model": "<script>alert(1)</script>",
                                   "variant": "\"><img src=x onerror=alert(1)>", "decode_tok_s": 30.0,
                                   "results": {"decode": "<b>PASS</b>"}}) + "\nnot json\n")
    view = {"now": 0, "hot": None, "set": False, "models": [], "hot_for_s": None, "loading": None, "switching": None,
            "in_flight": 0, "waiting": 0, "memory": None, "guard_action": "<iframe>", "recent": [], "usage": {},
            "switches": [], "verify": status_page.read_verify_history(history)}
    page = status_page.render(view)
    assert "<script>" not in page and "<img" not in page and "<iframe>" not in page and "<b>PASS" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
