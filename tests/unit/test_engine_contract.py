"""The real engine's contract, replayed: every request captured from a real vLLM (tests/contracts/, written by
tools/capture_engine.py on the GPU machine) is sent to the stand-in, and then through a local front door in front
of it, and the answers must have the real one's shape.

Compared: the status, the content type, the `allow` header, the error shape, the keys of bodies and stream chunks
(values such as text, ids and times may differ), the finish reasons, the [DONE] marker and, for /metrics, the
counter families verify reads. Where the stand-in or the door differs on purpose, STANDIN_DIFFERS and DOOR_DIFFERS
name the exchange and say why.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from sparkstack import engine_metrics
from tests.standin_engine.server import make_handler

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
CAPTURES = sorted(CONTRACTS.glob("*/*.json"))
STARTED = [p for p in CAPTURES if json.loads(p.read_text()).get("started")]
API_KEY = "capture-key"  # tools/capture_engine.py's key for the engine it started

# (config, exchange) -> why the stand-in answers otherwise. Keep it short: each entry is a place where a test
# double could hide a difference from the real engine.
STANDIN_DIFFERS: dict[tuple[str, str], str] = {
    ("parsers", "tools-named"): "the capture build answered 500 with an empty message (its cause is not in the log kept; "
                                "see tests/contracts/README.md); the stand-in answers a named tool choice with a tool call",
    ("parsers", "tools-named-stream"): "as tools-named: an in-band 500 error on the capture build",
    ("parsers", "tools-required"): "as tools-named: a 500 on the capture build",
}


def keys_only(value):
    """The key skeleton: dicts compared by their keys, down through choices, messages, deltas and usage."""
    if isinstance(value, dict):
        return {k: keys_only(v) for k, v in value.items() if isinstance(v, (dict, list))} | {"_keys": sorted(value)}
    if isinstance(value, list):
        return [keys_only(value[0])] if value and isinstance(value[0], (dict, list)) else []
    return None


def stream_summary(chunks: list) -> dict:
    """What a client relies on in a stream: the keys of its chunks, of their choices and deltas, the finish
    reasons, whether a usage chunk came, and the [DONE] at the end."""
    events = [c for c in chunks if isinstance(c, dict)]
    choices = [ch for c in events for ch in c.get("choices") or []]
    return {
        "chunk_keys": sorted({k for c in events for k in c}),
        "choice_keys": sorted({k for ch in choices for k in ch}),
        "delta_keys": sorted({k for ch in choices for k in (ch.get("delta") or {})}),
        "finish_reasons": sorted({ch.get("finish_reason") for ch in choices if ch.get("finish_reason")}),
        "usage_chunk": any(not c.get("choices") and c.get("usage") for c in events),
        "done": bool(chunks) and chunks[-1] == "[DONE]",
    }


def summary(answer: dict) -> dict:
    """The parts of a recorded answer that the replay compares."""
    out = {"status": answer["status"],
           "content_type": answer["headers"].get("content-type", "").split(";")[0].strip(),
           "allow": answer["headers"].get("allow")}
    if "chunks" in answer:
        out["stream"] = stream_summary(answer["chunks"])
    elif "families" in answer:
        wanted = {f"{name} {kind}" for name, kind in ((f"{engine_metrics.GENERATED}_total", "counter"),
                                                      (engine_metrics.DECODE_TIME, "histogram"),
                                                      (engine_metrics.TTFT, "histogram"))}
        out["families verify reads"] = sorted(wanted & set(answer["families"]))
    elif "body" in answer:
        body = answer["body"]
        out["body"] = keys_only(body)
        if isinstance(body, dict) and isinstance(body.get("choices"), list):
            out["finish_reasons"] = sorted({c.get("finish_reason") for c in body["choices"] if isinstance(c, dict)})
    return out


@functools.cache
def capture_tool():
    spec = importlib.util.spec_from_file_location("capture_engine", CONTRACTS.parents[1] / "tools" / "capture_engine.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def record(response: requests.Response) -> dict:
    """The replayed answer in the capture tool's own form (tools/capture_engine.py, record_response)."""
    return capture_tool().record_response(response, streamed=True)


def replay(base: str, exchange: dict, key: str) -> dict:
    request = exchange["request"]
    headers = {}
    if request["key"] == "right":
        headers["Authorization"] = f"Bearer {key}"
    elif request["key"] == "wrong":
        headers["Authorization"] = "Bearer wrong"
    data = None
    if "raw" in request:
        data, headers["Content-Type"] = request["raw"].encode(), "application/json"
    elif "body" in request:
        data, headers["Content-Type"] = json.dumps(request["body"]).encode(), "application/json"
    response = requests.request(request["method"], base + request["path"], data=data, headers=headers, stream=True,
                                timeout=30)
    return record(response)


def standin_for(capture: dict, monkeypatch, key: str | None = API_KEY) -> ThreadingHTTPServer:
    """The stand-in as the capture's flags start the engine: its served names and context, the tool-call flags,
    and with a reasoning parser a model that thinks (with random weights the real one's output is all thinking).
    `key`: the engine's API key (VLLM_API_KEY), or None for an engine with none."""
    flags = capture["flags"]
    if key:
        monkeypatch.setenv("VLLM_API_KEY", key)
    else:
        monkeypatch.delenv("VLLM_API_KEY", raising=False)
    ready = threading.Event()
    ready.set()
    # The capture's model has random weights: it rambles to max_tokens and never calls a tool (knob `ramble`).
    knobs = {"ramble": 1, **({"thinking_tokens": 64} if "--reasoning-parser" in flags else {})}
    if "--speculative-config" in flags:
        knobs["tokens_per_chunk"] = json.loads(flags[flags.index("--speculative-config") + 1])["num_speculative_tokens"] + 1
    names = capture["served_model_names"]
    handler = make_handler(names[0], True, knobs, ready, capture["engine"], "tiny-qwen3-moe", names,
                           capture["max_model_len"], "--enable-auto-tool-choice" in flags)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def exchanges():
    for path in STARTED:
        capture = json.loads(path.read_text())
        for exchange in capture["exchanges"]:
            if "failed" not in exchange["response"]:
                yield pytest.param(path, exchange["name"], id=f"{path.parent.name}/{path.stem}/{exchange['name']}")


def load(path: Path, name: str) -> tuple[dict, dict]:
    capture = json.loads(path.read_text())
    return capture, next(e for e in capture["exchanges"] if e["name"] == name)


@pytest.mark.skipif(not CONTRACTS.is_dir(), reason="no captures yet: tools/capture_engine.py has not run on a GPU "
                                                     "machine for this checkout (issue 23)")
def test_the_captures_come_from_a_real_engine_with_their_tool():
    assert STARTED, "no capture from a real engine under tests/contracts/ (tools/capture_engine.py writes them)"
    for path in CAPTURES:
        capture = json.loads(path.read_text())
        assert capture["tool"] == "tools/capture_engine.py" and capture["version"] in path.parent.name
        assert path.parent.name == f"{capture['engine']}-{capture['version']}"


@pytest.mark.parametrize("path,name", list(exchanges()))
def test_the_standin_answers_as_the_real_engine_did(path, name, monkeypatch):
    capture, exchange = load(path, name)
    server = standin_for(capture, monkeypatch)
    try:
        got = replay(f"http://127.0.0.1:{server.server_address[1]}", exchange, API_KEY)
    finally:
        server.shutdown()
        server.server_close()
    why = STANDIN_DIFFERS.get((capture["config"], name))
    if why:
        pytest.skip(f"the stand-in differs here on purpose: {why}")
    assert summary(got) == summary(exchange["response"])


# (config, exchange) -> what the door means to do otherwise. The door owns the key, its own routes and its
# refusals (in the OpenAI error shape); everything it forwards must come back as the engine said it.
DOOR_DIFFERS: dict[tuple[str, str], str] = {
    ("plain", "health"): "the door's own /health: its state and the hot model",
    ("plain", "models"): "the door lists every model of the host with its state (hot or not), and max_model_len",
    ("plain", "models-no-key"): "the door's key guards /v1/models too; its 401 is OpenAI-shaped",
    ("plain", "unknown-path"): "the door's own 404, OpenAI-shaped, naming the routes it serves",
    ("plain", "get-on-post-route"): "the door's own 405 with Allow: POST, OpenAI-shaped",
    ("plain", "no-key"): "the door's key, not the engine's: its 401 is OpenAI-shaped",
    ("plain", "wrong-key"): "the door's key, not the engine's: its 401 is OpenAI-shaped",
}


@functools.cache
def _door_module():
    from tests.unit import test_frontdoor_process

    return test_frontdoor_process


@pytest.fixture
def door_before_standin(tmp_path, monkeypatch):
    """A local sparkstack-frontdoor (as its unit runs it) in front of a stand-in started as each capture's flags
    start the engine. The door holds the key; the engine behind it has none, as on a Spark's loopback."""
    started = []

    def start(capture: dict) -> int:
        server = standin_for(capture, monkeypatch, key=None)
        from tests.unit.fakehost import rendered_registry

        registry = json.loads(rendered_registry())
        template = registry["models"]["qwen36"]
        names = capture["served_model_names"]
        registry["models"] = {"tiny": {**template, "served_model_name": names[0], "aliases": names[1:],
                                       "unit": "vllm-tiny.service", "port": server.server_address[1],
                                       "api_key_env": None, "request_fixes": [], "context_length": capture["max_model_len"],
                                       "tools": "--enable-auto-tool-choice" in capture["flags"]}}
        process, port, _ = _door_module().start_door(tmp_path, registry,
                                                     ready=lambda code, body: code == 200 and '"hot": true' in body)
        started.append((process, server))
        return port

    yield start
    for process, server in started:
        process.terminate()
        process.wait(10)
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path,name", list(exchanges()))
def test_the_door_passes_the_engines_answers_through_and_its_own_are_openai_shaped(path, name, door_before_standin):
    capture, exchange = load(path, name)
    if (capture["config"], name) in STANDIN_DIFFERS:
        pytest.skip(f"the stand-in behind the door differs here: {STANDIN_DIFFERS[capture['config'], name]}")
    port = door_before_standin(capture)
    got = replay(f"http://127.0.0.1:{port}", exchange, _door_module().KEY)
    why = DOOR_DIFFERS.get((capture["config"], name))
    if why:
        answer = got
        if answer["status"] >= 400:
            assert set(answer.get("body", {})) == {"error"}, answer  # the door's own errors: OpenAI's shape
            assert set(answer["body"]["error"]) == {"message", "type", "param", "code"}, answer
        pytest.skip(f"the door differs here on purpose: {why}")
    assert summary(got) == summary(exchange["response"])
