"""The front door as a local process (the distribution's python3 and python3-aiohttp, as on a Debian 12 host)
in front of the stand-in engine, and an attacker who has the door's address and key.

Each attack is written as the attacker's steps; the engine records every path it is asked for, so "refused"
means the engine never saw it.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from sparkstack.paths import repo_root
from sparkstack.remote import free_port
from tests.standin_engine.server import make_handler
from tests.unit.fakehost import rendered_registry

SYSTEM_PYTHON = "/usr/bin/python3"
KEY = "door-key-for-the-test"


@pytest.fixture(scope="module")
def engine_paths():
    """The stand-in serving qwen36, recording the path of every POST it gets (the door's own poll is a GET of
    /v1/models about once a second)."""
    seen: list[str] = []
    ready = threading.Event()
    ready.set()
    served = json.loads(rendered_registry())["models"]["qwen36"]["served_model_name"]
    handler = make_handler(served, True, {}, ready, "vllm")

    class Recording(handler):
        def parse_request(self):
            ok = super().parse_request()
            if self.command == "POST":
                seen.append(self.path)
            return ok

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def standin(served: str, **knobs) -> ThreadingHTTPServer:
    ready = threading.Event()
    ready.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served, True, knobs, ready, "vllm"))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def door(engine_paths, tmp_path_factory):
    """sparkstack-frontdoor on a free loopback port, exposed with a key, qwen36's port pointing at the stand-in;
    mistral4's at a stand-in whose streams drop after 3 tokens, and a third model's at one that never says [DONE]."""
    if subprocess.run([SYSTEM_PYTHON, "-c", "import aiohttp"], capture_output=True).returncode != 0:
        pytest.fail("python3-aiohttp is missing: `make test` installs it (the door's library on the host)")
    engine_port, _ = engine_paths
    root = tmp_path_factory.mktemp("door")
    registry = json.loads(rendered_registry())
    registry["models"]["qwen36"]["port"] = engine_port
    registry["models"]["qwen36"]["api_key_env"] = None
    cut = standin(registry["models"]["mistral4"]["served_model_name"], drop_after=3)
    registry["models"]["mistral4"].update(port=cut.server_address[1], api_key_env=None, request_fixes=[])
    no_done = standin("no-done", no_done=True)
    registry["models"]["no-done"] = {**registry["models"]["qwen36"], "served_model_name": "no-done", "aliases": [],
                                     "unit": "vllm-no-done.service", "port": no_done.server_address[1]}
    port = free_port()
    registry["frontdoor"].update(bind="127.0.0.1", port=port, api_key_env="SPARKSTACK_DOOR_KEY")
    (root / "models.json").write_text(json.dumps(registry))
    log = (root / "door.log").open("w")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(repo_root()), "SPARKSTACK_DOOR_KEY": KEY}
    process = subprocess.Popen([SYSTEM_PYTHON, "-m", "sparkstack_host.frontdoor", "--registry", str(root / "models.json")],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if ask(port, "GET", "/v1/models")[0] == 200 and '"hot": true' in ask(port, "GET", "/v1/models")[1]:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"the door did not come up: {(root / 'door.log').read_text()[-2000:]}")
    yield port, root / "door.log"
    process.terminate()
    process.wait(10)
    for server in (cut, no_done):
        server.shutdown()
        server.server_close()


def ask(port: int, method: str, raw_path: str, body: dict | None = None, key: str | None = KEY,
        headers: dict | None = None) -> tuple[int, str]:
    """One request with the path sent exactly as written: http.client does not normalise it, as curl
    --path-as-is and an attacker's own client do not."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    connection.request(method, raw_path, body=json.dumps(body) if body is not None else None, headers=sent)
    response = connection.getresponse()
    answer = response.status, response.read().decode()
    connection.close()
    return answer


CHAT = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_a_chat_through_the_door_reaches_the_engine_at_its_chat_route(door, engine_paths):
    port, _ = door
    _, seen = engine_paths
    code, body = ask(port, "POST", "/v1/chat/completions", CHAT)
    assert code == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"]
    assert seen[-1] == "/v1/chat/completions"


# The attacker holds a door key and wants the engine's own routes: SGLang's /update_weights_from_disk and
# /configure_logging, vLLM's /invocations and /tokenize, which have no key of their own on loopback.
TRAVERSALS = [
    "/v1/../admin",
    "/v1/%2E%2E/flush_cache",
    "/v1/%2e%2e/update_weights_from_disk",
    "/v1/chat/../../configure_logging",
    "/v1/models/..",
    "/v1/./chat/completions",
    "/v1/%252e%252e/invocations",
    "/v1/chat%2f..%2f..%2ftokenize",
    "/v1/chat/completions/..%5c..%5cabort_request",
]


@pytest.mark.parametrize("raw_path", TRAVERSALS)
def test_an_attacker_walking_out_of_v1_with_dot_segments_is_refused_with_400(door, engine_paths, raw_path):
    port, log = door
    _, seen = engine_paths
    before = list(seen)
    code, body = ask(port, "POST", raw_path, CHAT)
    assert code == 400, body
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert seen == before, f"the engine was asked for {seen[len(before):]}"


@pytest.mark.parametrize("raw_path", ["/invocations", "/tokenize", "/v1/tokenize", "/v1/pooling", "/metrics",
                                      "/update_weights_from_disk", "/v1/chat/completions/x", "/v1/load_lora_adapter"])
def test_an_attacker_asking_for_an_engine_route_by_name_gets_404_and_the_engine_never_hears_of_it(
        door, engine_paths, raw_path):
    port, _ = door
    _, seen = engine_paths
    before = list(seen)
    code, body = ask(port, "POST", raw_path, CHAT)
    assert code == 404, body
    assert "nothing else" in json.loads(body)["error"]["message"]
    assert seen == before


def test_a_query_string_is_not_carried_to_the_engine(door, engine_paths):
    port, _ = door
    _, seen = engine_paths
    code, _ = ask(port, "POST", "/v1/chat/completions?x=/../../admin", CHAT)
    assert code == 200
    assert seen[-1] == "/v1/chat/completions"


def test_without_the_key_every_route_answers_401_health_too(door):
    port, _ = door
    for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        code, body = ask(port, method, path, CHAT if method == "POST" else None, key=None)
        assert code == 401, (path, body)
        assert json.loads(body)["error"]["type"] == "authentication_error"


def test_a_get_on_a_post_route_is_405_with_an_openai_shaped_body(door):
    port, _ = door
    code, body = ask(port, "GET", "/v1/chat/completions")
    assert code == 405
    assert json.loads(body)["error"]["message"] == "/v1/chat/completions takes POST"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"})
    assert connection.getresponse().getheader("Allow") == "POST"
    connection.close()


def test_each_refusal_is_one_journal_line_and_never_a_traceback(door):
    port, log = door
    ask(port, "POST", "/v1/%2E%2E/flush_cache", CHAT)
    text = Path(log).read_text()
    assert "refused POST /v1/%2E%2E/flush_cache from 127.0.0.1: 400 the path has a dot segment" in text
    assert "Traceback" not in text


def test_a_web_page_posting_cross_origin_is_refused_before_the_engine(door, engine_paths):
    # The attacker's page, open in the owner's browser, POSTs to the loopback door: a "simple" request
    # (text/plain, no preflight) with the page's Origin.
    port, _ = door
    _, seen = engine_paths
    before = list(seen)
    code, body = ask(port, "POST", "/v1/chat/completions", CHAT, headers={"Origin": "https://evil.example"})
    assert code == 403 and "evil.example" in json.loads(body)["error"]["message"]
    code, body = ask(port, "POST", "/v1/chat/completions", CHAT, headers={"Content-Type": "text/plain"})
    assert code == 415, body
    assert seen == before


def test_a_body_past_the_cap_gets_413_and_the_door_keeps_serving(door):
    from sparkstack_host.frontdoor import MAX_BODY_BYTES

    port, _ = door
    padding = "x" * (MAX_BODY_BYTES + 1024)
    code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "padding": padding})
    assert code == 413 and json.loads(body)["error"]["code"] == 413
    assert ask(port, "POST", "/v1/chat/completions", CHAT)[0] == 200


@pytest.mark.parametrize("messages", [
    "hi",
    [1, 2],
    [{"content": "no role"}],
    [{"role": "user", "content": 42}],
    [{"role": "user", "content": ["not a part object"]}],
    [{"role": "user", "content": [{"type": "text", "text": None}]}],
])
def test_well_formed_json_with_odd_message_shapes_gets_400_not_a_traceback(door, engine_paths, messages):
    port, log = door
    _, seen = engine_paths
    before = list(seen)
    code, body = ask(port, "POST", "/v1/chat/completions", {"model": "qwen", "messages": messages})
    assert code == 400, body
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert seen == before
    assert "Traceback" not in Path(log).read_text()


def test_a_non_utf8_authorization_header_gets_401_not_a_traceback(door):
    port, log = door
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", "/v1/models")
    connection.putheader("Authorization", b"Bearer \xff\xfe\xfd")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 401, response.read()
    connection.close()
    assert "Traceback" not in Path(log).read_text()


def events(body: str) -> list[str]:
    return [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]


def test_a_complete_stream_passes_through_and_ends_with_done(door):
    port, _ = door
    code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
    assert code == 200
    assert events(body)[-1] == "[DONE]"
    assert not any('"error"' in e for e in events(body))


@pytest.mark.parametrize("model,why", [("mistral4", "ClientPayloadError"),
                                       ("no-done", "the engine closed the stream before [DONE]")])
def test_a_stream_the_engine_cuts_ends_in_an_error_event_not_like_a_complete_one(door, model, why):
    port, log = door
    code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": model, "stream": True, "max_tokens": 20})
    assert code == 200  # sent before the first token
    last = json.loads(events(body)[-1])
    assert last["error"]["type"] == "stream_error" and "the answer is incomplete" in last["error"]["message"]
    assert "[DONE]" not in events(body)
    assert f"{model}: the stream broke off ({why}" in Path(log).read_text()
