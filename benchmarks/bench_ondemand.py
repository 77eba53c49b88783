"""The door on demand: what a client waits for when its model is cold, and what the door adds to the switch.

    .venv/bin/python benchmarks/bench_ondemand.py      (or: make bench; needs python3-aiohttp)

Runs on this machine: the door as its unit runs it (the distribution's python3 and aiohttp) in front of two
stand-ins, and a switch socket that stops one and starts the other, each load taking LOAD_S (a Spark's loads take
minutes; the door's share is what matters here). The switch's own time (its stops and the load) is taken inside
the socket, so the door's share is what the client waited beyond it. Side by side in one run:
  - a request to the hot model (the baseline);
  - a swap: a request for the cold model with nothing in flight;
  - a swap behind an answer in flight: the door lets the answer finish first, then switches;
  - a queue: QUEUED clients asking for the cold model at once, all served after one switch.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_section  # noqa: E402
from tests.unit.test_frontdoor_process import ModelsSwitch, ask, start_door, two_models  # noqa: E402

LOAD_S = 1.0
RUNS = 5
QUEUED = 8
IN_FLIGHT_TOKENS = 20
TOKEN_RATE = 20  # the answer in flight lasts IN_FLIGHT_TOKENS / TOKEN_RATE = 1 s
NAMES = ("qwen36", "mistral4")


def timed(port: int, model: str, **extra) -> float:
    started = time.perf_counter()
    code, body = ask(port, "POST", "/v1/chat/completions",
                     {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra})
    assert code == 200, body
    return time.perf_counter() - started


def hot(port: int) -> str:
    """The hot model, once the door's view has one (it looks again after each switch)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        name = json.loads(ask(port, "GET", "/running")[1])["hot"]
        if name:
            return name
        time.sleep(0.05)
    raise SystemExit("the door saw no model hot within 10 s")


def other(name: str) -> str:
    return NAMES[1 - NAMES.index(name)]


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        registry = two_models(root)
        switch = ModelsSwitch(root / "switch.sock", registry, load_s=LOAD_S,
                              knobs={name: {"token_rate": TOKEN_RATE} for name in NAMES})
        switch.start("qwen36")
        process, port, _ = start_door(root, registry, ready=lambda code, body: code == 200 and '"hot": true' in body)
        try:
            baseline, swap, behind, queued = [], [], [], []
            for _ in range(RUNS):
                warm = hot(port)
                baseline.append(timed(port, warm))
                swap.append(timed(port, other(warm)) - _switch_time(switch))
            for _ in range(RUNS):
                warm = hot(port)
                answer = threading.Thread(target=timed, args=(port, warm),
                                          kwargs={"max_tokens": IN_FLIGHT_TOKENS, "stream": True})
                answer.start()
                time.sleep(0.2)
                started = time.perf_counter()
                timed(port, other(warm))
                answer.join()
                # Beyond the switch, the client waited for the answer in flight to finish: that is the drain.
                behind.append(time.perf_counter() - started - _switch_time(switch))
            for _ in range(2):
                cold = other(hot(port))
                waits: list[float] = []
                threads = [threading.Thread(target=lambda: waits.append(timed(port, cold))) for _ in range(QUEUED)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                took = _switch_time(switch)
                queued.extend(wait - took for wait in waits)
        finally:
            process.terminate()
            process.wait(10)
            switch.stop_all()
            switch.server.close()
    switches = len([w for w, _ in switch.began if w != "none"])
    drain = IN_FLIGHT_TOKENS / TOKEN_RATE - 0.2
    ms = lambda seconds: f"{seconds * 1000:.0f} ms"  # noqa: E731
    body = (f"Each switch: the stand-ins stopped and the next one loaded in {LOAD_S:g} s (timed inside the switch "
            f"socket, median {ms(statistics.median(switch.took))}); {RUNS} runs each, medians.\n\n"
            "| | the door's own share of the client's wait |\n|---|---|\n"
            f"| request to the hot model (no switch) | {ms(statistics.median(baseline))} |\n"
            f"| swap, nothing in flight | {ms(statistics.median(swap))} beyond the switch |\n"
            f"| swap behind an answer in flight (about {ms(drain)} of it left) | {ms(statistics.median(behind))} beyond "
            f"the switch (the drain included) |\n"
            f"| {QUEUED} clients queued for one switch (each) | {ms(statistics.median(queued))} median, "
            f"{ms(max(queued))} worst, beyond the switch |\n"
            f"\nSwitches asked for: {switches} for {2 * RUNS + 2} switches needed (one per swap, one per queue of {QUEUED}).\n")
    print(body)
    write_section("Front door on demand: queue wait and swap (this machine)", "make bench (benchmarks/bench_ondemand.py)", body)


def _switch_time(switch: ModelsSwitch) -> float:
    return switch.took[-1]


if __name__ == "__main__":
    main()
