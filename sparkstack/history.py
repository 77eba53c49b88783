"""verify's history, read back: regressions against each profile's baseline, and a plot over time.

Each run of `sparkstack verify` is a JSON line in the host's history (sparkstack/verify.py: append_history): what
was measured (decode tok/s, TTFT, each check's result, the profile's baseline for that variant) and how. A run is
a regression when its decode rate is below the baseline x the regression share (verify's --regression-share, 0.8 by
default), as verify itself judges one. A run with an INSTRUMENT result measured something other than the model's
speed (nothing reached it, or an answer verify could not score): it is drawn hollow and never called a regression.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

INSTRUMENT = "INSTRUMENT"


def load_history(paths: list[Path]) -> list[dict]:
    entries = []
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("time"):
                entries.append(entry)
    return sorted(entries, key=lambda e: e["time"])


def instrument(entry: dict) -> bool:
    return INSTRUMENT in (entry.get("results") or {}).values()


def regressions(entries: list[dict], share: float) -> list[str]:
    """One line per run whose decode fell below its baseline x share, with the numbers."""
    found = []
    for entry in entries:
        baseline, rate = entry.get("baseline_tok_s"), entry.get("decode_tok_s")
        if baseline and rate is not None and not instrument(entry) and rate < baseline * share:
            found.append(f"{entry['time']} {entry.get('model')} ({entry.get('variant')}) on {entry.get('host') or entry.get('url')}: "
                         f"{rate:.1f} tok/s < {share:g} x baseline {baseline:g} = {baseline * share:.1f} tok/s")
    return found


def by_image(entries: list[dict], model: str) -> list[str]:
    """The model's last measured run with each engine image it ran (a rollback's before and after), oldest first."""
    last: dict[str, dict] = {}
    for entry in entries:
        if entry.get("model") == model and entry.get("image") and entry.get("decode_tok_s") is not None \
                and not instrument(entry):
            last.pop(entry["image"], None)
            last[entry["image"]] = entry
    lines = []
    for image, entry in last.items():
        start = entry.get("start") or {}
        lines.append(f"{image}: {entry['decode_tok_s']:.1f} tok/s, TTFT {entry.get('ttft_s') or 0:.3f} s "
                     f"({entry['time']}, variant {entry.get('variant')}"
                     + (f", a {start['compile_cache']} start ready after {start.get('ready_s')} s" if start.get("compile_cache") else "")
                     + ")")
    return lines


def _when(entry: dict) -> datetime.datetime:
    return datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ")


def plot_history(entries: list[dict], out: Path, share: float) -> str:
    """tok/s and TTFT per model and variant over time, into `out` (PNG); what it drew, as a line."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str], list[dict]] = {}
    for entry in entries:
        series.setdefault((str(entry.get("model")), str(entry.get("variant"))), []).append(entry)
    figure, (rate_axis, ttft_axis) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for number, ((model, variant), runs) in enumerate(sorted(series.items())):
        color = f"C{number}"
        label = f"{model} ({variant})"
        for axis, key in ((rate_axis, "decode_tok_s"), (ttft_axis, "ttft_s")):
            measured = [e for e in runs if e.get(key) is not None and not instrument(e)]
            axis.plot([_when(e) for e in measured], [e[key] for e in measured], "o-", color=color, label=label)
            hollow = [e for e in runs if e.get(key) is not None and instrument(e)]
            if hollow:
                axis.plot([_when(e) for e in hollow], [e[key] for e in hollow], "o", color=color, markerfacecolor="none",
                          markersize=9, label=f"{label}: INSTRUMENT")
        baselines = [e["baseline_tok_s"] for e in runs if e.get("baseline_tok_s")]
        if baselines:
            baseline = baselines[-1]
            rate_axis.axhline(baseline, color=color, linestyle="--", linewidth=1, label=f"{label}: baseline {baseline:g}")
            rate_axis.axhline(baseline * share, color=color, linestyle=":", linewidth=1,
                              label=f"{label}: regression below {baseline * share:.1f}")
            low = [e for e in runs if e.get("decode_tok_s") is not None and not instrument(e)
                   and e["decode_tok_s"] < baseline * share]
            if low:
                rate_axis.plot([_when(e) for e in low], [e["decode_tok_s"] for e in low], "x", color="red", markersize=12,
                               markeredgewidth=2, label=f"{label}: regression")
    rate_axis.set_ylabel("decode tok/s")
    ttft_axis.set_ylabel("TTFT s (verify's: HTTP, template and prefill)")
    rate_axis.set_title("sparkstack verify history")
    rate_axis.legend(fontsize=7, loc="lower left")
    ttft_axis.legend(fontsize=7, loc="upper left")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return f"plotted {len(entries)} run(s) of {len(series)} model variant(s) to {out}"
