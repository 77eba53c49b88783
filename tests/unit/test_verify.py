"""`sparkstack verify` against a local stand-in server with controlled behaviour (no VM)."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from sparkstack.cli import main
from sparkstack.verify import FAIL, INSTRUMENT, PASS, Client, Expectations, history_table, run_checks


def qwen(**overrides) -> Expectations:
    return Expectations(**({"served_model_name": "qwen36", "vision": False, "tools": True,
                            "expected_decode_tok_s": None, "profile": "qwen36", "variant": "default"} | overrides))


def statuses(report) -> dict:
    return {c.name: c.status for c in report.checks}


@pytest.mark.parametrize("rate", [25.0, 60.0])
def test_measured_decode_rate_lands_within_ten_percent_of_the_controlled_rate(engine, rate):
    url = engine(token_rate=rate)
    report = run_checks(Client(url, read_timeout_s=10), qwen(), runs=3, max_tokens=int(rate * 1.5))
    assert report.exit_code == 0, report.table()
    measured = report.figures["decode"]["decode_tok_s_median"]
    print(f"controlled {rate} tok/s, measured {measured} tok/s")
    assert abs(measured - rate) / rate <= 0.10
    assert report.figures["decode"]["max_tokens"] == int(rate * 1.5)
    assert report.figures["decode"]["prompt_words"] > 0
    assert report.figures["decode"]["counted"] == "usage per chunk"


def closed_port_url(engine) -> tuple[str, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}", 2.0


@pytest.mark.parametrize("target,expected", [
    (closed_port_url, "could not connect"),
    (lambda engine: (engine(hang=1), 1.5), "timed out after 1.5 s before any byte"),
], ids=["refused connection", "hanging server"])
def test_no_request_reaching_the_model_is_an_instrument_failure_not_a_score(engine, target, expected):
    url, read_timeout = target(engine)
    report = run_checks(Client(url, read_timeout_s=read_timeout), qwen())
    assert statuses(report) == {"readiness": INSTRUMENT}
    assert expected in report.checks[0].detail
    assert report.exit_code == 2


def test_zero_token_replies_are_instrument_failures(engine):
    url = engine(zero_tokens=1)
    report = run_checks(Client(url, read_timeout_s=5), qwen())
    assert statuses(report)["deterministic"] == INSTRUMENT
    deterministic = next(c for c in report.checks if c.name == "deterministic")
    assert "no tokens" in deterministic.detail
    # An unscored smoke answer stops nothing: decode is still measured (and is INSTRUMENT too, with no tokens).
    assert statuses(report)["decode"] == INSTRUMENT
    assert report.exit_code == 2


def test_an_impossible_stream_is_flagged_not_averaged(engine):
    url = engine(burst=1)
    report = run_checks(Client(url, read_timeout_s=5), qwen(), runs=3, max_tokens=64)
    decode = next(c for c in report.checks if c.name == "decode")
    assert decode.status == INSTRUMENT and "impossible" in decode.detail
    assert report.exit_code == 2


@pytest.mark.parametrize("language_only,vision_expected,status", [
    (True, False, PASS),    # qwen36: images refused with 400, as declared
    (False, True, PASS),    # mistral4: images read with 200, as declared
    (True, True, FAIL),     # a vision profile whose server refuses images
    (False, False, FAIL),   # a language-only profile whose server takes images
])
def test_vision_probe_compares_the_served_model_with_the_profile(engine, language_only, vision_expected, status):
    url = engine(language_only=language_only, token_rate=100)
    report = run_checks(Client(url, read_timeout_s=5), qwen(vision=vision_expected), runs=1, max_tokens=20)
    vision = next(c for c in report.checks if c.name == "vision")
    assert vision.status == status, vision
    assert vision.figure == ("HTTP 400" if language_only else "HTTP 200")


def test_deterministic_answer_and_tool_call(engine):
    report = run_checks(Client(engine(token_rate=100), read_timeout_s=5), qwen(), runs=1, max_tokens=20)
    assert statuses(report) == {"readiness": PASS, "deterministic": PASS, "decode": PASS, "vision": PASS, "tools": PASS,
                                "engine": "INFO"}  # no engine declared in these expectations: reported, not judged


MARLIN_COMMAND = ["vllm", "serve", "m", "--moe-backend", "marlin"]


@pytest.mark.parametrize("overrides,status,detail", [
    ({"engine_version": ">=0.33.0", "moe_backend": "marlin", "command": MARLIN_COMMAND}, PASS, "MoE guard in force: --moe-backend marlin"),
    ({"engine_version": ">=0.33.0", "moe_backend": "marlin", "command": ["vllm", "serve", "m"]}, FAIL, "MoE guard NOT in force"),
    ({"engine_version": ">=0.33.0", "moe_backend": "marlin", "command": None}, PASS, "not observable over HTTP"),
    ({"engine_version": "==0.24.0", "moe_backend": None, "command": None}, FAIL, "the profile declares '==0.24.0'"),
], ids=["guard in force", "guard missing", "url only", "other release"])
def test_verify_reports_the_engine_release_and_the_moe_guard(engine, overrides, status, detail):
    report = run_checks(Client(engine(token_rate=200), read_timeout_s=5), qwen(engine="vllm", **overrides), runs=1, max_tokens=5)
    check = next(c for c in report.checks if c.name == "engine")
    assert (check.status, check.figure) == (status, "vllm 0.33.0"), check
    assert detail in check.detail


def test_a_decode_regression_is_flagged(engine):
    url = engine(token_rate=25)
    report = run_checks(Client(url, read_timeout_s=10), qwen(expected_decode_tok_s=57), runs=1, max_tokens=30)
    decode = next(c for c in report.checks if c.name == "decode")
    assert decode.status == FAIL and "REGRESSION" in decode.detail
    assert report.exit_code == 1


def test_a_server_that_is_up_but_not_ready_fails_readiness(engine):
    report = run_checks(Client(engine(never_ready=1), read_timeout_s=5), qwen())
    assert statuses(report) == {"readiness": FAIL}
    assert report.exit_code == 1


def test_cli_json_exit_codes_and_history(engine, tmp_path):
    history = tmp_path / "history.jsonl"
    url = engine(token_rate=100)
    result = CliRunner().invoke(main, ["verify", "--url", url, "--model", "qwen", "--runs", "1", "--max-tokens", "20",
                                       "--json", "--history-file", str(history)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["expectations"]["profile"] == "qwen36"
    assert [c["status"] for c in report["checks"]] == [PASS] * 6
    engine_check = report["checks"][-1]
    assert engine_check["figure"] == "vllm 0.33.0" and "--moe-backend marlin" in engine_check["detail"]
    refused = CliRunner().invoke(main, ["verify", "--url", "http://127.0.0.1:9", "--model", "qwen",
                                        "--history-file", str(history)])
    assert refused.exit_code == 2 and "INSTRUMENT" in refused.output
    table = history_table(history)
    assert table.count("qwen36") == 2
    shown = CliRunner().invoke(main, ["verify", "--history", "--history-file", str(history)])
    assert shown.exit_code == 0 and "readiness=INSTRUMENT" in shown.output


def test_cli_needs_exactly_one_target():
    assert CliRunner().invoke(main, ["verify"]).exit_code == 2


def test_the_engines_own_counters_stand_beside_verifys_figures(engine):
    from sparkstack import engine_metrics

    report = run_checks(Client(engine(token_rate=80), read_timeout_s=10), qwen(), runs=2, max_tokens=60)
    decode = next(c for c in report.checks if c.name == "decode")
    assert decode.status == PASS, decode
    engine_figures = report.figures["decode"]["engine"]
    assert engine_figures["requests"] == 2
    # Both clocks read the same stream (the stand-in paces 80 tok/s; a real vLLM's counters agreed with verify
    # within 0.6%): within the bound verify itself holds them to.
    assert abs(engine_figures["decode_difference"]) <= engine_metrics.DECODE_BOUND, engine_figures
    assert "engine's own /metrics over 2 request(s): decode" in decode.detail
    assert "ttft as the client sees it (HTTP, template and tokenization included)" in decode.detail


def test_counters_that_disagree_with_verifys_clock_make_the_reading_instrument(engine, monkeypatch):
    from sparkstack import engine_metrics, verify

    readings = iter([engine_metrics.Counters(0, 0, 0, 0, 0),
                     # The engine says it decoded at half the rate verify timed: one of the clocks is wrong.
                     engine_metrics.Counters(generated=2 + 2 * 59, decode_sum=2 * 59 / 40, decode_count=2,
                                             ttft_sum=0.02, ttft_count=2)])
    monkeypatch.setattr(verify, "engine_counters", lambda client: next(readings))
    report = run_checks(Client(engine(token_rate=80), read_timeout_s=10), qwen(), runs=2, max_tokens=60)
    decode = next(c for c in report.checks if c.name == "decode")
    assert decode.status == INSTRUMENT and "more than 10% apart" in decode.detail, decode
    assert report.exit_code == 2


def test_a_rambling_smoke_answer_is_instrument_and_the_rest_is_still_measured(engine):
    # A model that thinks past the smoke check's budget even with thinking off (finish length): its answer is
    # not a score, but decode, vision, tools and engine are measured all the same.
    # Paced so a run lasts about half a second: a shorter window lets scheduling jitter part the two clocks.
    url = engine(token_rate=150, thinking_tokens=600, thinking_always=1)
    report = run_checks(Client(url, read_timeout_s=10), qwen(), runs=1, max_tokens=80)
    found = statuses(report)
    assert found["deterministic"] == INSTRUMENT, report.table()
    assert "budget ran out" in next(c for c in report.checks if c.name == "deterministic").detail
    assert found["decode"] == PASS and found["vision"] == PASS and found["tools"] == PASS, report.table()
    assert report.exit_code == 2  # the worst result
    # Half a second of decoding is too short to hold the two clocks to 10%: reported, not judged.
    assert "not compared" in next(c for c in report.checks if c.name == "decode").detail


def test_through_the_door_verify_measures_the_hot_model_never_the_first_listed(monkeypatch):
    from sparkstack import verify_cli

    class Listing:
        def __init__(self, data):
            self.data = data

        def request(self, method, path, **kwargs):
            data = self.data

            class Answer:
                status_code = 200

                def json(self):
                    return {"object": "list", "data": data}
            return Answer()

    door = [{"id": "mistral4", "hot": False, "state": "stopped"}, {"id": "qwen36", "hot": True, "state": "hot"}]
    assert verify_cli.served_names(Listing(door)) == ["qwen36"]
    with pytest.raises(verify_cli.UsageError, match="no model is hot behind it"):
        verify_cli.served_names(Listing([dict(m, hot=False) for m in door]))
    # A plain engine lists what it serves, every name.
    assert verify_cli.served_names(Listing([{"id": "a"}, {"id": "b"}])) == ["a", "b"]
