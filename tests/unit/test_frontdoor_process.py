"""The front door as a local process (the distribution's python3 and python3-aiohttp, as on a Debian 12 host)
in front of the stand-in engine, and an attacker who has the door's address and key.

Each attack is written as the attacker's steps; the engine records every path it is asked for, so "refused"
means the engine never saw it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import selectors
import socket
import ssl
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


def ready_event() -> threading.Event:
    ready = threading.Event()
    ready.set()
    return ready


def standin(served: str, **knobs) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served, True, knobs, ready_event(), "vllm"))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def unit_file_limit():
    """The door's unit sets LimitNOFILE=65536: the same here, as far as this machine's hard limit allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def start_door(root: Path, registry: dict, prelude: str = "", ready=lambda code, body: code == 200,
               context: ssl.SSLContext | None = None):
    """sparkstack-frontdoor as its unit runs it, with Debian's python3 and aiohttp. `prelude` runs first: the
    tests that wait out a bound shorten it there, in the module, as the door reads it."""
    if subprocess.run([SYSTEM_PYTHON, "-c", "import aiohttp"], capture_output=True).returncode != 0:
        pytest.fail("python3-aiohttp is missing: `make test` installs it (the door's library on the host)")
    port = free_port()
    registry["frontdoor"].update(bind="127.0.0.1", port=port, api_key_env="SPARKSTACK_DOOR_KEY",
                                 clients_file=str(root / "door-clients.json"), usage_db=str(root / "usage.sqlite3"))
    (root / "models.json").write_text(json.dumps(registry))
    log = root / "door.log"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(repo_root()), "SPARKSTACK_DOOR_KEY": KEY}
    code = f"{prelude}\nfrom sparkstack_host.frontdoor import main\nmain(['--registry', {str(root / 'models.json')!r}])\n"
    process = subprocess.Popen([SYSTEM_PYTHON, "-c", code], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               preexec_fn=unit_file_limit)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if ready(*ask(port, "GET", "/v1/models", context=context)):
                return process, port, log
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"the door did not come up: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def door(engine_paths, tmp_path_factory):
    """sparkstack-frontdoor on a free loopback port, exposed with a key, qwen36's port pointing at the stand-in;
    mistral4's at a stand-in whose streams drop after 3 tokens, and a third model's at one that never says [DONE]."""
    engine_port, _ = engine_paths
    registry = json.loads(rendered_registry())
    registry["models"]["qwen36"]["port"] = engine_port
    registry["models"]["qwen36"]["api_key_env"] = None
    cut = standin(registry["models"]["mistral4"]["served_model_name"], drop_after=3)
    registry["models"]["mistral4"].update(port=cut.server_address[1], api_key_env=None, request_fixes=[])
    no_done = standin("no-done", no_done=True)
    registry["models"]["no-done"] = {**registry["models"]["qwen36"], "served_model_name": "no-done", "aliases": [],
                                     "unit": "vllm-no-done.service", "port": no_done.server_address[1]}
    process, port, log = start_door(tmp_path_factory.mktemp("door"), registry,
                                    ready=lambda code, body: code == 200 and '"hot": true' in body)
    yield port, log
    process.terminate()
    process.wait(10)
    for server in (cut, no_done):
        server.shutdown()
        server.server_close()


def ask(port: int, method: str, raw_path: str, body: dict | None = None, key: str | None = KEY,
        headers: dict | None = None, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    """One request with the path sent exactly as written: http.client does not normalise it, as curl
    --path-as-is and an attacker's own client do not. With `context`, over TLS."""
    connection = (http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context) if context else
                  http.client.HTTPConnection("127.0.0.1", port, timeout=10))
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


@pytest.mark.parametrize("raw_path", ["/invocations", "/tokenize", "/v1/tokenize", "/v1/pooling", "/get_server_info",
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


def test_an_attacker_trying_to_stop_the_owners_model_through_unload_is_refused_at_each_step(door):
    from sparkstack_host.frontdoor import MAX_BODY_BYTES

    port, log = door
    hot_before = json.loads(ask(port, "GET", "/running")[1])["hot"]
    assert hot_before is not None
    # Without the key, with a guessed one, and from a web page in the owner's browser (its origin, text/plain).
    assert ask(port, "POST", "/unload", {}, key=None)[0] == 401
    assert ask(port, "POST", "/unload", {}, key="sk-guess")[0] == 401
    assert ask(port, "POST", "/unload", {}, headers={"Origin": "https://evil.example"})[0] == 403
    assert ask(port, "POST", "/unload", {}, headers={"Content-Type": "text/plain"})[0] == 415
    # The wrong method, a dot segment, an oversize body: refused before any handler.
    code, body = ask(port, "GET", "/unload")
    assert code == 405 and set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
    assert ask(port, "POST", "/unload/../running", {})[0] == 400
    assert ask(port, "POST", "/unload", {"padding": "x" * (MAX_BODY_BYTES + 1024)})[0] == 413
    assert ask(port, "POST", "/unload", ["not", "an", "object"])[0] == 400
    # What runs, and the engine's version, stay behind the key too.
    assert ask(port, "GET", "/running", key=None)[0] == 401 and ask(port, "GET", "/version", key=None)[0] == 401
    # Nothing was stopped: the owner's model is still hot and served.
    code, body = ask(port, "GET", "/running")
    assert code == 200 and json.loads(body)["hot"] == hot_before, body
    assert ask(port, "POST", "/v1/chat/completions", CHAT)[0] == 200
    assert "sparkstack-frontdoor: stopping" not in log.read_text()


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


# - abuse: connections, bodies, names, load, retries ------------------------------------------------------

def closed_within(sockets: list[socket.socket], seconds: float) -> int:
    """How many of the sockets the far end closed within `seconds`."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed, deadline = 0, time.monotonic() + seconds
    while closed < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            try:
                gone = key.fileobj.recv(4096) == b""
            except OSError:
                gone = True
            if gone:
                selector.unregister(key.fileobj)
                closed += 1
    selector.close()
    return closed


def test_slowloris_at_twice_the_old_file_limit_does_not_keep_a_client_out(door):
    from sparkstack_host.connections import HEADER_TIMEOUT_S, MAX_CONNECTIONS

    port, log = door
    unit_file_limit()
    # The attacker opens 2,048 connections (twice the 1,024 files the door's unit had before LimitNOFILE, twice
    # the door's cap) and sends each a request line and one header, never the blank line that ends them.
    held = []
    for _ in range(2 * MAX_CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        held.append(sock)
    try:
        # The owner's laptop asks meanwhile, and is answered.
        code, body = ask(port, "POST", "/v1/chat/completions", CHAT)
        assert code == 200, body
        # Every half-open connection is cut: crowded out at the cap, or at the header timeout.
        assert closed_within(held, HEADER_TIMEOUT_S + 5) == len(held)
    finally:
        for sock in held:
            sock.close()
    text = log.read_text()
    assert re.search(r"cut \d+ connections so far \(headers not sent within 10 s: \d+, idle: \d+, not reading: \d+, "
                     r"crowded out: [1-9]\d*\)", text), text[-2000:]
    assert "Traceback" not in text


def test_a_page_on_a_rebound_dns_name_is_refused_and_the_doors_own_names_are_not(door, engine_paths):
    # The attacker's page at http://rebind.evil.example:30080 has its name re-resolved to this host: the
    # browser then sends the page's own Host with a same-origin request (no Origin header on a GET).
    port, _ = door
    code, body = ask(port, "GET", "/v1/models", headers={"Host": f"rebind.evil.example:{port}"})
    assert code == 421 and "rebind.evil.example" in json.loads(body)["error"]["message"]
    for name in ("127.0.0.1", "localhost", "[::1]", socket.gethostname()):
        assert ask(port, "GET", "/v1/models", headers={"Host": f"{name}:{port}"})[0] == 200, name


@pytest.fixture(scope="module")
def bounded_door(tmp_path_factory):
    """A door whose bounds are short enough to wait out (headers 1 s, idle 2 s, body 2 s), with two slow models
    (slow-a, slow-b: 4 tokens a second) under caps of 3 requests per model and 4 in all."""
    slow = standin("slow", token_rate=4)
    registry = json.loads(rendered_registry())
    template = {**registry["models"]["qwen36"], "served_model_name": "slow", "aliases": [], "api_key_env": None,
                "port": slow.server_address[1], "request_fixes": []}
    registry["models"] = {"slow-a": {**template, "unit": "vllm-slow-a.service"},
                          "slow-b": {**template, "unit": "vllm-slow-b.service"}}
    registry["frontdoor"].update(max_requests=4, max_requests_per_model=3)
    prelude = ("import sparkstack_host.connections as c\n"
               "c.HEADER_TIMEOUT_S, c.IDLE_TIMEOUT_S, c.BODY_TIMEOUT_S, c.SWEEP_S = 1.0, 2.0, 2.0, 0.2")
    process, port, log = start_door(tmp_path_factory.mktemp("bounded-door"), registry, prelude,
                                    ready=lambda code, body: code == 200 and body.count('"hot": true') == 2)
    yield port, log
    process.terminate()
    process.wait(10)
    slow.shutdown()
    slow.server_close()


def test_a_body_sent_a_trickle_at_a_time_gets_408_when_the_body_timeout_runs_out(bounded_door):
    port, _ = bounded_door
    # The attacker announces 1,000 bytes and sends 10, keeping the door's read open.
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ".encode())
    started = time.monotonic()
    answer = sock.recv(4096).decode()
    sock.close()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert 1.5 < time.monotonic() - started < 8


def test_a_kept_alive_connection_left_idle_is_closed_after_the_idle_timeout(bounded_door):
    port, _ = bounded_door
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert connection.getresponse().read()
    assert closed_within([connection.sock], 6) == 1
    connection.close()


def ask_in_background(port: int, model: str, answers: list) -> threading.Thread:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "stream": True}
    thread = threading.Thread(target=lambda: answers.append(ask(port, "POST", "/v1/chat/completions", body)[0]))
    thread.start()
    return thread


def test_past_the_per_model_and_overall_caps_clients_get_429_and_the_admitted_are_served(bounded_door):
    port, _ = bounded_door
    answers: list[int] = []
    # Three slow answers from slow-a fill its cap (each takes about 3 s at 4 tokens a second).
    threads = [ask_in_background(port, "slow-a", answers) for _ in range(3)]
    time.sleep(0.7)
    code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": "slow-a"})
    assert code == 429 and "sparkstack_frontdoor_max_requests_per_model" in json.loads(body)["error"]["message"]
    # slow-b has its own cap: one request is admitted (4 in all, the door's cap) ...
    threads.append(ask_in_background(port, "slow-b", answers))
    time.sleep(0.7)
    # ... and the next gets 429 for the door's overall cap.
    code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": "slow-b"})
    assert code == 429 and "sparkstack_frontdoor_max_requests)" in json.loads(body)["error"]["message"]
    for thread in threads:
        thread.join(30)
    assert answers == [200] * 4
    assert ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": "slow-b", "max_tokens": 1})[0] == 200


class SwitchSocket:
    """root's switch socket, as the door sees it: one word in, `answer(word)` out; every word asked is kept."""

    def __init__(self, path: Path):
        self.path, self.words = path, []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        threading.Thread(target=self.serve, daemon=True).start()

    def answer(self, word: str) -> bytes:
        raise NotImplementedError

    def serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            word = client.recv(4096).decode().strip()
            answer = self.answer(word)
            self.words.append(word)  # once done, as llm-switch answers only when the switch is over
            try:
                client.sendall(answer)
            except OSError:  # the door went away meanwhile (the test ends)
                pass
            client.close()


class FailingSwitch(SwitchSocket):
    """For a model that never becomes hot: each try takes `delay_s`, then the engine exits."""

    def __init__(self, path: Path, delay_s: float = 0.0):
        self.delay_s = delay_s
        super().__init__(path)

    @property
    def tries(self) -> int:
        return len(self.words)

    def answer(self, word: str) -> bytes:
        time.sleep(self.delay_s)
        return b'{"ok": false, "message": "vllm-qwen36.service failed: the engine exited (code 1)"}\n'


def test_a_model_that_fails_to_start_is_tried_three_times_in_a_storm_then_refused_until_hot(tmp_path):
    root = tmp_path
    registry = json.loads(rendered_registry())
    qwen_port = free_port()
    registry["models"] = {"qwen36": {**registry["models"]["qwen36"], "port": qwen_port, "api_key_env": None}}
    switch = FailingSwitch(root / "switch.sock")
    registry["frontdoor"].update(on_demand=True, min_hot_s=0, hold_s=5, switch_socket=str(root / "switch.sock"))
    # The real backoff waits 15 s, then 60 s; here 1 s each, so the storm sees every try.
    process, port, log = start_door(root, registry, "import sparkstack_host.frontdoor as d\nd.ON_DEMAND_BACKOFF_S = (1, 1)")
    try:
        # A client's retry loop (or several clients) asks for the broken model as fast as it can for 5 s.
        answers, ends = [], time.monotonic() + 5
        while time.monotonic() < ends:
            answers.append(ask(port, "POST", "/v1/chat/completions", CHAT))
        assert switch.tries == 3, (switch.tries, len(answers))
        assert {code for code, _ in answers} == {503}
        last = json.loads(answers[-1][1])["error"]["message"]
        assert "tried 3 times" in last and "the engine exited" in last and "llm-switch qwen36" in last
        # The owner starts it by hand (`llm-switch qwen36`): it is hot, and the door serves it again.
        engine = ThreadingHTTPServer(("127.0.0.1", qwen_port),
                                     make_handler(registry["models"]["qwen36"]["served_model_name"], True, {},
                                                  ready_event(), "vllm"))
        threading.Thread(target=engine.serve_forever, daemon=True).start()
        try:
            assert ask(port, "POST", "/v1/chat/completions", CHAT)[0] == 200
        finally:
            engine.shutdown()
            engine.server_close()
        print(f"storm: {len(answers)} requests in 5 s, {switch.tries} switch tries")
    finally:
        process.terminate()
        process.wait(10)
        switch.server.close()
    assert "Traceback" not in log.read_text()


def test_with_tls_the_door_speaks_only_https_with_the_certificate_the_deploy_made(engine_paths, tmp_path):
    from sparkstack.deployers.frontdoor import self_signed_command

    engine_port, _ = engine_paths
    # The deploy's own command makes the pair, into this test's directory instead of /etc/sparkstack/tls.
    command = (self_signed_command(["spark.example.lan"]).replace("/etc/sparkstack/tls", str(tmp_path))
               .replace("chgrp sparkstack-door", "chgrp root"))
    assert subprocess.run(["sh", "-c", command], capture_output=True).returncode == 0
    assert (tmp_path / "door.key").stat().st_mode & 0o777 == 0o640
    registry = json.loads(rendered_registry())
    registry["models"] = {"qwen36": {**registry["models"]["qwen36"], "port": engine_port, "api_key_env": None}}
    registry["frontdoor"]["tls"] = {"cert": str(tmp_path / "door.crt"), "key": str(tmp_path / "door.key")}
    trusting = ssl.create_default_context(cafile=str(tmp_path / "door.crt"))
    process, port, log = start_door(tmp_path, registry, context=trusting)
    try:
        # A client given the certificate is served, and checks the name: 127.0.0.1 is in it.
        assert ask(port, "POST", "/v1/chat/completions", CHAT, context=trusting)[0] == 200
        # A client that trusts only the usual authorities refuses the self-signed certificate.
        with pytest.raises(ssl.SSLCertVerificationError):
            ask(port, "GET", "/v1/models", context=ssl.create_default_context())
        # Plain HTTP to the TLS port gets no answer: the key never crosses the network in the clear.
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            ask(port, "GET", "/v1/models")
    finally:
        process.terminate()
        process.wait(10)
    assert "(TLS)" in log.read_text()


@contextlib.contextmanager
def door_in_front(switch: "ModelsSwitch", root: Path, registry: dict, prelude: str = "", ready=lambda code, body: code == 200):
    """The door in front of `switch`'s stand-ins; on the way out both stop, and the door's log has no traceback."""
    process, port, log = start_door(root, registry, prelude, ready)
    try:
        yield port, log
    finally:
        process.terminate()
        process.wait(10)
        switch.stop_all()
        switch.server.close()
    assert "Traceback" not in log.read_text()


class ModelsSwitch(SwitchSocket):
    """llm-switch over stand-ins on the models' ports: a word (a model or a set) stops what runs and starts its
    models; `none` stops all. Each switch is kept with the time it began."""

    def __init__(self, path: Path, registry: dict, knobs: dict | None = None, load_s: float = 0.0):
        self.registry, self.knobs, self.load_s = registry, knobs or {}, load_s
        self.engines: dict[str, ThreadingHTTPServer] = {}
        self.began: list[tuple[str, float]] = []
        self.took: list[float] = []
        super().__init__(path)

    def start(self, name: str) -> None:
        model = self.registry["models"][name]

        class OneRequestAConnection(make_handler(model["served_model_name"], True, self.knobs.get(name, {}),
                                                 ready_event(), "vllm")):
            def handle(self):  # a stopped engine's connections die with it: none is kept alive
                try:
                    self.handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Listening(ThreadingHTTPServer):
            request_queue_size = 128  # a real engine's backlog (uvicorn: 2048), not socketserver's 5

        server = Listening(("127.0.0.1", model["port"]), OneRequestAConnection)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.engines[name] = server

    def stop_all(self) -> None:
        for server in self.engines.values():
            server.shutdown()
            server.server_close()
        self.engines = {}

    def answer(self, word: str) -> bytes:
        self.began.append((word, time.monotonic()))
        try:
            self.stop_all()
            if word == "none":
                return b'{"ok": true, "model": null, "message": "no model is hot"}\n'
            time.sleep(self.load_s)
            for name in self.registry.get("sets", {}).get(word, {}).get("members", [word]):
                self.start(name)
            return json.dumps({"ok": True, "model": word, "message": f"{word} is hot"}).encode() + b"\n"
        finally:
            self.took.append(time.monotonic() - self.began[-1][1])  # the switch's own time, stops and load


def test_the_owner_sees_what_runs_unloads_it_and_an_idle_model_is_stopped_after_its_ttl(tmp_path):
    registry = json.loads(rendered_registry())
    qwen = {**registry["models"]["qwen36"], "port": free_port(), "api_key_env": None, "idle_ttl_s": 3}
    registry["models"] = {"qwen36": qwen}
    switch = ModelsSwitch(tmp_path / "switch.sock", registry)
    switch.start("qwen36")  # hot when the door starts
    registry["frontdoor"].update(on_demand=True, min_hot_s=0, hold_s=10, switch_socket=str(tmp_path / "switch.sock"))
    with door_in_front(switch, tmp_path, registry, ready=lambda code, body: code == 200 and '"hot": true' in body) as (port, log):
        code, body = ask(port, "GET", "/running")
        running = json.loads(body)
        assert code == 200 and running["hot"] == "qwen36" and running["idle_ttl_s"] == 3, running
        assert 0 <= running["ttl_left_s"] <= 3 and running["waiting"] == 0
        assert ask(port, "GET", "/running", key=None)[0] == 401
        # The owner unloads it: the door asks the switch for `none`, and nothing is hot.
        code, body = ask(port, "POST", "/unload", {})
        assert (code, json.loads(body)["unloaded"]) == (200, "qwen36"), body
        assert switch.words == ["none"] and json.loads(ask(port, "GET", "/running")[1])["hot"] is None
        assert ask(port, "POST", "/unload", {})[0] == 409  # nothing left to unload
        # A request brings it back on demand, and is served.
        assert ask(port, "POST", "/v1/chat/completions", CHAT)[0] == 200
        assert switch.words == ["none", "qwen36"]
        # Left idle past its TTL (3 s), the door stops it by itself.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and switch.words[-1] != "none":
            time.sleep(0.5)
        assert switch.words == ["none", "qwen36", "none"], switch.words
        assert "stopping qwen36 (idle for" in log.read_text()


def test_a_streaming_client_hears_that_its_model_is_loading_then_gets_its_stream(tmp_path):
    registry = json.loads(rendered_registry())
    qwen = {**registry["models"]["qwen36"], "port": free_port(), "api_key_env": None}
    registry["models"] = {"qwen36": qwen}
    switch = ModelsSwitch(tmp_path / "switch.sock", registry, load_s=3)
    registry["frontdoor"].update(on_demand=True, min_hot_s=0, hold_s=30, switch_socket=str(tmp_path / "switch.sock"))
    with door_in_front(switch, tmp_path, registry, "import sparkstack_host.frontdoor as d\nd.LOADING_COMMENT_S = 0.5",
                       ready=lambda code, body: code == 200) as (port, log):
        # A streaming client asks for the cold model: SSE comments while it loads, then the engine's own stream.
        code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
        assert code == 200, body
        comments = [line for line in body.splitlines() if line.startswith(": loading qwen36")]
        assert len(comments) >= 3, body  # 3 s of loading, a comment every 0.5 s after the first second
        events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant", body
        assert body.index(": loading") < body.index("data: ")
        # The openai client reads such a stream as any other: the comments are not events.
        import openai
        stream = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY).chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        # A model that is hot already streams at once: no comment.
        code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
        assert code == 200 and ": loading" not in body


def test_a_streaming_client_whose_model_fails_to_load_gets_an_error_event_not_a_clean_end(tmp_path):
    registry = json.loads(rendered_registry())
    registry["models"] = {"qwen36": {**registry["models"]["qwen36"], "port": free_port(), "api_key_env": None}}

    switch = FailingSwitch(tmp_path / "switch.sock", delay_s=2.5)  # the load takes a while, then the engine exits
    registry["frontdoor"].update(on_demand=True, min_hot_s=0, hold_s=30, switch_socket=str(tmp_path / "switch.sock"))
    process, port, log = start_door(tmp_path, registry, "import sparkstack_host.frontdoor as d\nd.LOADING_COMMENT_S = 0.5",
                                    ready=lambda code, body: code == 200)
    try:
        code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
        assert code == 200 and ": loading qwen36" in body, body
        events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
        # No [DONE]: the stream ends in the error, so no client takes it for a complete (empty) answer.
        assert len(events) == 1 and "[DONE]" not in body, body
        error = json.loads(events[0])["error"]
        assert error["code"] == 503 and "the engine exited" in error["message"], error
    finally:
        process.terminate()
        process.wait(10)
        switch.server.close()
    assert "Traceback" not in log.read_text()


def two_models(tmp_path: Path, **frontdoor) -> dict:
    registry = json.loads(rendered_registry())
    registry["models"] = {name: {**registry["models"][name], "port": free_port(), "api_key_env": None, "request_fixes": []}
                          for name in ("qwen36", "mistral4")}
    registry["frontdoor"].update(on_demand=True, min_hot_s=0, hold_s=30, switch_socket=str(tmp_path / "switch.sock"),
                                 **frontdoor)
    return registry


def test_a_swap_waits_for_the_answer_in_flight_and_the_queue_past_its_bound_gets_503(tmp_path):
    registry = two_models(tmp_path, max_waiting=1)
    # qwen36 answers slowly (10 tokens a second), mistral4 takes 2 s to load.
    switch = ModelsSwitch(tmp_path / "switch.sock", registry, knobs={"qwen36": {"token_rate": 10}}, load_s=2)
    switch.start("qwen36")
    with door_in_front(switch, tmp_path, registry, ready=lambda code, body: code == 200 and '"hot": true' in body) as (port, log):
        # A long answer from qwen36 is under way when another client asks for mistral4.
        long_answer: list = []
        streaming = threading.Thread(target=lambda: long_answer.append((*ask(port, "POST", "/v1/chat/completions", {
            "model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 25, "stream": True}),
            time.monotonic())))
        streaming.start()
        time.sleep(0.5)
        other: list = []
        asking = threading.Thread(target=lambda: other.append(ask(port, "POST", "/v1/chat/completions", {
            "model": "mistral4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})))
        asking.start()
        time.sleep(0.5)
        # While qwen36 drains, it takes no new request, and a second request waiting for a load is past the queue's bound.
        code, body = ask(port, "POST", "/v1/chat/completions", CHAT)
        assert code == 503 and "swapping it out" in body, body
        code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": "mistral4"})
        assert code == 503 and "sparkstack_frontdoor_max_waiting" in body, body
        running = json.loads(ask(port, "GET", "/running")[1])
        assert running["draining"] == ["qwen36"] and running["waiting"] == 1 and running["max_waiting"] == 1, running
        streaming.join(30)
        # The switch itself (mistral4 loads for 2 s): qwen36, on its way out, still takes no request.
        time.sleep(0.5)
        code, body = ask(port, "POST", "/v1/chat/completions", CHAT)
        assert code == 503 and "swapping it out" in body, body
        asking.join(30)
        # The answer in flight was not cut: it ended with [DONE], and only then did the switch begin.
        code, body, finished = long_answer[0]
        assert code == 200 and body.rstrip().endswith("data: [DONE]"), body
        assert [word for word, _ in switch.began] == ["mistral4"] and switch.began[0][1] >= finished - 0.05
        assert other[0][0] == 200, other
        assert "draining qwen36 before the switch to mistral4" in log.read_text()


def test_a_request_for_a_member_of_a_set_brings_the_whole_set_and_unload_stops_it(tmp_path):
    registry = two_models(tmp_path)
    registry["sets"] = {"pair": {"members": ["qwen36", "mistral4"], "required_memory_gb": 1.0}}
    switch = ModelsSwitch(tmp_path / "switch.sock", registry)
    with door_in_front(switch, tmp_path, registry, ready=lambda code, body: code == 200) as (port, log):
        assert ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": "mistral4"})[0] == 200
        assert [word for word, _ in switch.began] == ["pair"] and set(switch.engines) == {"qwen36", "mistral4"}
        running = json.loads(ask(port, "GET", "/running")[1])
        assert running["hot"] == running["set"] == "pair" and sorted(running["models"]) == ["mistral4", "qwen36"], running
        # Its other member answers at once: no second switch.
        assert ask(port, "POST", "/v1/chat/completions", CHAT)[0] == 200 and len(switch.began) == 1
        # The status page says so, with the switch the door saw and why, and the two requests.
        code, page = ask(port, "GET", "/status")
        assert code == 200 and '<span class="hot" id="hot">set pair (mistral4, qwen36)</span>' in page, page
        assert "<td>none</td><td>pair</td><td>on demand</td>" in page and page.count("<td>/v1/chat/completions</td>") == 2
        assert ask(port, "GET", "/status", key=None)[0] == 401
        code, body = ask(port, "POST", "/unload", {})
        assert (code, json.loads(body)["unloaded"]) == (200, "pair") and switch.engines == {}


def test_two_client_keys_are_counted_apart_and_their_usage_survives_a_door_restart(engine_paths, tmp_path):
    from sparkstack_host.contract import key_digest

    engine_port, _ = engine_paths
    laptop, ci = "sk-spark-laptop-" + "a" * 40, "sk-spark-ci-" + "b" * 40
    (tmp_path / "door-clients.json").write_text(json.dumps(
        {"format": 1, "clients": {"laptop": key_digest(laptop), "ci": key_digest(ci)}}))
    registry = json.loads(rendered_registry())
    registry["models"] = {"qwen36": {**registry["models"]["qwen36"], "port": engine_port, "api_key_env": None}}
    # The host keeps digests only: neither key is in what the door reads.
    assert laptop not in (tmp_path / "door-clients.json").read_text()
    for round_ in (1, 2):  # the door restarts between the rounds (SIGTERM, as systemd stops it)
        process, port, log = start_door(tmp_path, registry, ready=lambda code, body: code == 200 and '"hot": true' in body)
        try:
            for _ in range(2):
                assert ask(port, "POST", "/v1/chat/completions", CHAT, key=laptop)[0] == 200
            code, body = ask(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True,
                                                                     "stream_options": {"include_usage": True}}, key=ci)
            assert code == 200 and '"usage"' in body
            assert ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": "gpt-4"}, key=ci)[0] == 404
            # A key not listed, or a listed key's digest presented as a key, is refused.
            assert ask(port, "POST", "/v1/chat/completions", CHAT, key="sk-spark-phone-" + "c" * 40)[0] == 401
            assert ask(port, "POST", "/v1/chat/completions", CHAT, key=key_digest(laptop))[0] == 401
        finally:
            process.terminate()
            process.wait(10)
    usage = json.loads(subprocess.run(
        [SYSTEM_PYTHON, "-c", f"from sparkstack_host.frontdoor import main; main(['usage', '--json', '--registry', "
                              f"{str(tmp_path / 'models.json')!r}])"],
        env={"PYTHONPATH": str(repo_root())}, capture_output=True, text=True, check=True).stdout)
    assert set(usage) == {"laptop", "ci"}
    assert (usage["laptop"]["requests"], usage["laptop"]["errors"]) == (4, 0)
    assert (usage["ci"]["requests"], usage["ci"]["errors"]) == (4, 2)  # its 404s are its errors
    # Tokens as the engine reported them: in the JSON answer, and in the stream's usage event.
    assert usage["laptop"]["prompt_tokens"] > 0 and usage["laptop"]["completion_tokens"] == 4 * 4
    assert usage["ci"]["completion_tokens"] == 2 * 4 and usage["ci"]["models"]["qwen36"]["requests"] == 2
    assert "Traceback" not in log.read_text()


def test_one_scrape_of_metrics_has_the_doors_series_and_the_engines_own_labelled_with_its_model(door):
    from prometheus_client.parser import text_string_to_metric_families

    port, _ = door
    assert ask(port, "GET", "/metrics", key=None)[0] == 401  # the door's key guards it like every route
    assert ask(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True})[0] == 200
    assert ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": "gpt-4"})[0] == 404
    code, body = ask(port, "GET", "/metrics")
    assert code == 200, body
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))
    assert value("sparkstack_door_requests_total", model="qwen36", client="owner", route="/v1/chat/completions",
                 status="200") >= 1
    assert value("sparkstack_door_requests_total", model="-", client="owner", route="/v1/chat/completions",
                 status="404") >= 1
    assert value("sparkstack_door_model_hot", model="qwen36") == 1.0
    assert value("sparkstack_door_model_state", model="qwen36", state="hot") == 1.0
    assert value("sparkstack_door_time_to_first_byte_seconds_count", model="qwen36", route="/v1/chat/completions") >= 1
    assert value("sparkstack_host_memory_available_bytes") is None  # no memory guard reports here
    # The engine's own counters, as vLLM names them, each sample labelled with the model it came from.
    engine = [key for key in samples if key[0].startswith("vllm:") and ("sparkstack_model", "qwen36") in key[1]]
    assert engine, sorted({k[0] for k in samples})[:40]


def test_a_streaming_client_that_gives_up_while_its_model_loads_leaves_the_load_going_and_no_error(tmp_path):
    registry = two_models(tmp_path)
    switch = ModelsSwitch(tmp_path / "switch.sock", registry, load_s=3)
    prelude = "import sparkstack_host.frontdoor as d\nd.LOADING_COMMENT_S = 0.3"
    with door_in_front(switch, tmp_path, registry, prelude) as (port, log):
        body = json.dumps({**CHAT, "stream": True})
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
            heard = b""
            while b": loading qwen36" not in heard:
                heard += raw.recv(4096)
        # Gone after the first comment; the load goes on, and the next client finds the model hot.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "qwen36" not in switch.engines:
            time.sleep(0.2)
        assert ask(port, "POST", "/v1/chat/completions", CHAT)[0] == 200 and [w for w, _ in switch.began] == ["qwen36"]


def test_a_model_stopped_behind_the_doors_back_is_loaded_again_on_demand_not_refused(tmp_path):
    registry = two_models(tmp_path)
    switch = ModelsSwitch(tmp_path / "switch.sock", registry)
    switch.start("qwen36")
    registry["frontdoor"]["min_hot_s"] = 0
    with door_in_front(switch, tmp_path, registry, ready=lambda code, body: '"hot": true' in body) as (port, log):
        assert ask(port, "POST", "/v1/chat/completions", CHAT)[0] == 200
        switch.stop_all()  # `llm-switch none` on the host: the door's last look still says qwen36 is hot
        code, body = ask(port, "POST", "/v1/chat/completions", CHAT)
        assert code == 200, body
        assert [word for word, _ in switch.began] == ["qwen36"]  # loaded again, on demand


class RecoveringSwitch(ModelsSwitch):
    """llm-switch as the wedge watch meets it: `wedged MODEL` with the reason on a second line restarts the model's
    stand-in. Each start takes the next knobs of `starts` (a wedged engine, then a sound one)."""

    def __init__(self, path: Path, registry: dict, starts: list[dict]):
        self.starts = list(starts)
        super().__init__(path, registry)

    def start(self, name: str) -> None:
        self.knobs = {name: self.starts.pop(0) if self.starts else {}}
        super().start(name)

    def answer(self, word: str) -> bytes:
        if not word.startswith("wedged "):
            return super().answer(word)
        name = word.split("\n")[0].split(" ")[1]
        self.stop_all()
        self.start(name)
        return json.dumps({"ok": True, "model": name, "message": f"{name} restarted after a wedge"}).encode() + b"\n"


def test_a_model_that_stops_generating_while_health_says_200_is_found_by_a_canary_and_restarted(tmp_path):
    registry = json.loads(rendered_registry())
    registry["models"] = {"qwen36": {**registry["models"]["qwen36"], "port": free_port(), "api_key_env": None}}
    registry["wedge"] = {"stall_s": 1, "canary_every_s": 4, "canary_max_tokens": 2, "canary_timeout_s": 1,
                         "max_restarts_per_hour": 3}
    registry["frontdoor"].update(switch_socket=str(tmp_path / "switch.sock"))
    # qwen36's engine is wedged from its start: /health 200, /v1/models lists it, no token ever comes.
    switch = RecoveringSwitch(tmp_path / "switch.sock", registry, starts=[{"wedge_after_s": 0}, {}])
    switch.start("qwen36")
    with door_in_front(switch, tmp_path, registry) as (port, log):
        health = http.client.HTTPConnection("127.0.0.1", registry["models"]["qwen36"]["port"], timeout=5)
        health.request("GET", "/health")
        assert health.getresponse().status == 200  # what a /health check would believe
        # A client's stream gets its headers and then nothing.
        stuck: list = []
        client = threading.Thread(target=lambda: stuck.append(_stream_or_timeout(port)), daemon=True)
        client.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(w.startswith("wedged ") for w in switch.words):
            time.sleep(0.2)
        report = next((w for w in switch.words if w.startswith("wedged ")), None)
        assert report is not None, log.read_text()
        name, reason = report.split("\n", 1)
        assert name.startswith("wedged qwen36 ")  # and the unit start it was seen in (0: no systemd here)
        assert "1 request(s) in flight and no byte of an answer" in reason and "a canary got no token in 1 s" in reason
        # Restarted, it answers again through the door.
        code, body = ask(port, "POST", "/v1/chat/completions", CHAT)
        assert code == 200 and json.loads(body)["choices"][0]["message"]["content"], body
        # Idle, a canary checks it every 4 s, and it gets its token; the metrics count both outcomes.
        deadline = time.monotonic() + 15
        scrape = ""
        while time.monotonic() < deadline and 'sparkstack_wedge_canaries_total{model="qwen36",outcome="token"}' not in scrape:
            time.sleep(0.5)
            scrape = ask(port, "GET", "/metrics")[1]
        assert 'sparkstack_wedge_canaries_total{model="qwen36",outcome="none"} 1.0' in scrape, scrape
        assert 'sparkstack_wedge_canaries_total{model="qwen36",outcome="token"}' in scrape, scrape
        assert [w.split("\n")[0].rsplit(" ", 1)[0] for w in switch.words] == ["wedged qwen36"]
        assert "qwen36 is wedged: 1 request(s) in flight" in log.read_text()


def _stream_or_timeout(port: int):
    try:
        return ask(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True})
    except (OSError, http.client.HTTPException) as exc:  # the engine's restart cuts it
        return exc
