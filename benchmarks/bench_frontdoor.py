"""The front door's cost on a stream: time to first byte and token rate through the door against a direct call.

    .venv/bin/python benchmarks/bench_frontdoor.py      (or: make bench; needs python3-aiohttp, which make deps installs)

Runs on this machine, not in the VM (TCG would measure the emulator): the stand-in engine in its own process
with a fixed token rate, and files/sparkstack-frontdoor under the distribution's python3 and aiohttp, as on a
Spark. Direct and door requests alternate, so both see the same machine; the figures go side by side.
Goal: TTFB through the door within 5 ms of direct, token rate within 2%.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_section  # noqa: E402
from sparkstack.remote import free_port  # noqa: E402
from sparkstack_host.contract import REGISTRY_FORMAT  # noqa: E402

RUNS = 40
TOKENS = 100
TOKEN_RATE = 200  # tokens/s: a Spark's qwen36 decodes at about 50-70; faster is harsher on the door
SYSTEM_PYTHON = "/usr/bin/python3"  # the distribution's, with python3-aiohttp: what runs the door on a Spark

STANDIN = """
import sys, threading
from http.server import ThreadingHTTPServer
sys.path.insert(0, {root!r})
from tests.standin_engine.server import make_handler
ready = threading.Event(); ready.set()
server = ThreadingHTTPServer(("127.0.0.1", {port}), make_handler("qwen36", True, {{"token_rate": {rate}}}, ready, "vllm",
                                                                   "Qwen/Qwen3.6-35B-A3B"))
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
"""


def registry(engine_port: int, door_port: int, scratch: Path) -> dict:
    return {
        "format": REGISTRY_FORMAT,
        "secrets_file": "/dev/null",
        "models": {"qwen36": {
            "served_model_name": "qwen36", "aliases": ["qwen"], "port": engine_port, "unit": "sparkstack-bench-none.service",
            "api_key_env": None, "vision": False, "language_model_only": True, "tools": True, "context_length": 65536,
            "request_fixes": ["system_first"], "cluster": None}},
        "frontdoor": {"bind": "127.0.0.1", "port": door_port, "api_key_env": None, "on_demand": False, "min_hot_s": 0,
                      "hold_s": 10, "connect_timeout_s": 5, "read_timeout_s": 60, "switch_socket": "/nonexistent",
                      "max_requests": 64, "max_requests_per_model": 32, "max_waiting": 16, "monitoring": "key",
                      "clients_file": str(scratch / "door-clients.json"), "usage_db": str(scratch / "usage.sqlite3")},
    }


def stream_once(port: int) -> tuple[float, float]:
    """(seconds to the first body byte, tokens per second from the first to the last token) of one stream."""
    body = json.dumps({"model": "qwen36", "stream": True, "max_tokens": TOKENS,
                       "messages": [{"role": "user", "content": "count"}]})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    first_byte = None
    stamps = []
    buffer = b""
    while True:
        piece = response.read1(65536)
        if not piece:
            break
        now = time.perf_counter()
        if first_byte is None:
            first_byte = now - started
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = event.removeprefix(b"data: ")
            if data != b"[DONE]" and json.loads(data)["choices"] and json.loads(data)["choices"][0]["delta"].get("content"):
                stamps.append(now)
    connection.close()
    assert len(stamps) == TOKENS, len(stamps)
    return first_byte, (len(stamps) - 1) / (stamps[-1] - stamps[0])


def scrape_size(port: int) -> tuple[int, int, float]:
    """(bytes, series, seconds) of one scrape of the door's /metrics: its own series and the engine's."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.perf_counter()
    connection.request("GET", "/metrics")
    body = connection.getresponse().read()
    seconds = time.perf_counter() - started
    connection.close()
    series = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    return len(body), len(series), seconds


def wait_hot(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v1/models")
            listed = json.loads(connection.getresponse().read())
            if listed["data"][0]["hot"]:
                return
        except (OSError, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.2)
    raise SystemExit("the door never saw the stand-in as hot")


def main() -> None:
    if subprocess.run([SYSTEM_PYTHON, "-c", "import aiohttp"], capture_output=True).returncode != 0:
        raise SystemExit(f"{SYSTEM_PYTHON} has no aiohttp: install python3-aiohttp (make deps does)")
    engine_port, door_port = free_port(), free_port()
    engine = subprocess.Popen([sys.executable, "-c", STANDIN.format(root=str(ROOT), port=engine_port, rate=TOKEN_RATE)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    engine.stdout.readline()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "models.json"
        path.write_text(json.dumps(registry(engine_port, door_port, Path(scratch))))
        # The shim finds the host package where the deploy installs it; here, in the checkout.
        door = subprocess.Popen([SYSTEM_PYTHON, str(ROOT / "files" / "sparkstack-frontdoor"), "--registry", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            wait_hot(door_port)
            for port in (engine_port, door_port):  # warm both paths
                stream_once(port)
            direct, through = [], []
            for _ in range(RUNS):
                direct.append(stream_once(engine_port))
                through.append(stream_once(door_port))
            scrape = scrape_size(door_port)
        finally:
            door.terminate()
            engine.terminate()
            door.wait(10)
            engine.wait(10)
    ttfb_direct = statistics.median(d[0] for d in direct) * 1000
    ttfb_door = statistics.median(d[0] for d in through) * 1000
    rate_direct = statistics.median(d[1] for d in direct)
    rate_door = statistics.median(d[1] for d in through)
    body = (f"{RUNS} streams of {TOKENS} tokens each way, alternating; the stand-in paces {TOKEN_RATE} tokens/s.\n\n"
            "| | direct | through the door | difference |\n|---|---|---|---|\n"
            f"| time to first byte (median) | {ttfb_direct:.2f} ms | {ttfb_door:.2f} ms | {ttfb_door - ttfb_direct:+.2f} ms (goal: within 5 ms) |\n"
            f"| token rate (median) | {rate_direct:.1f} tok/s | {rate_door:.1f} tok/s | {100 * (rate_door / rate_direct - 1):+.2f}% (goal: within 2%) |\n"
            f"\nThe door counts every request for /metrics meanwhile (always on). One scrape after the run: "
            f"{scrape[0]:,} bytes, {scrape[1]} series (the door's and the engine's), {scrape[2] * 1000:.1f} ms.\n")
    print(body)
    write_section("Front door against a direct call (this machine)", "make bench (benchmarks/bench_frontdoor.py)", body)


if __name__ == "__main__":
    main()
