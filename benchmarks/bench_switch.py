"""Switch overhead: total `llm-switch` time minus the stand-in's load delay, median of several runs.

    .venv/bin/python benchmarks/bench_switch.py      (or: make bench; needs the VM up and deployed)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_section  # noqa: E402
from sparkstack import testhost  # noqa: E402

LOAD_DELAY_S = 5
RUNS = 5
KNOBS = "/var/lib/sparkstack/huggingface/standin-knobs.json"


def timed_switch(target: str) -> float:
    """Seconds `llm-switch TARGET` took, clocked inside the VM (no ssh overhead)."""
    clock = ("import subprocess, sys, time; s = time.monotonic(); "
             f"r = subprocess.run(['llm-switch', '{target}'], capture_output=True); "
             "print(r.returncode, time.monotonic() - s)")
    out = testhost.ssh(f'python3 -c "{clock}"', timeout=600)
    code, seconds = out.stdout.split()
    if code != "0":
        raise SystemExit(f"llm-switch {target} failed: {out.stderr}")
    return float(seconds)


def main() -> None:
    testhost.ssh(f"echo '{json.dumps({'qwen36': {'load_delay_s': LOAD_DELAY_S}, 'mistral4': {'load_delay_s': LOAD_DELAY_S}})}' > {KNOBS}")
    testhost.ssh("llm-switch none")
    cold, swap = [], []
    try:
        for _ in range(RUNS):
            cold.append(timed_switch("qwen") - LOAD_DELAY_S)      # from nothing hot
            swap.append(timed_switch("mistral") - LOAD_DELAY_S)   # stop qwen, start mistral
            testhost.ssh("llm-switch none")
    finally:
        testhost.ssh(f"rm -f {KNOBS}; llm-switch none")
    body = f"""Stand-in load delay {LOAD_DELAY_S} s, subtracted; {RUNS} runs each, clocked inside the VM.

| switch | median overhead | runs (s) |
|---|---|---|
| none -> qwen | {statistics.median(cold):.1f} s | {', '.join(f'{v:.1f}' for v in cold)} |
| qwen -> mistral | {statistics.median(swap):.1f} s | {', '.join(f'{v:.1f}' for v in swap)} |

The overhead includes starting the container with docker under TCG emulation, readiness
polling at 1 s, and the memory gate, which runs twice (llm-switch, then the unit's
ExecStartPre) and passes at once when MemAvailable already covers the model."""
    print(body)
    write_section("llm-switch overhead (test VM)", "make bench (benchmarks/bench_switch.py)", body)


if __name__ == "__main__":
    main()
