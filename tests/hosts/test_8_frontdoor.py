"""The front door in the VM: one endpoint for whatever model is hot, driven by raw HTTP and by the `openai` package.

The door listens on the VM's 127.0.0.1:30080; an `ssh -L` puts it on this machine's loopback, where the real
`openai` client talks to it. The stand-in engine behaves like the real chat templates (strict alternation for
Mistral, system first for Qwen, 400 for an image to a language-only start) and logs a client that goes away.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time

import openai
import pytest
import requests

from sparkstack import testhost
from sparkstack.paths import repo_root
from sparkstack.remote import free_port
from tests.hosts.conftest import deploy, vm_ssh

DOOR_PORT = 30080
KNOBS = "/var/lib/sparkstack/huggingface/standin-knobs.json"
RECORDS = "/var/lib/sparkstack/huggingface/standin-records"
SECRETS = "/etc/sparkstack/secrets.env"
DOOR_KEY = "sk-door-test-not-a-real-key-0123456789"
# opencode's title request: two user turns in a row, which Mistral's template refuses.
TITLE_REQUEST = [{"role": "system", "content": "You are a title generator."},
                 {"role": "user", "content": "Generate a title for this conversation:"},
                 {"role": "user", "content": "fix the flaky test"}]
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]


def switch(word: str) -> None:
    result = vm_ssh(f"llm-switch {word}")
    assert result.returncode == 0, result.stdout + result.stderr


def door_models(base: str, key: str | None = None, verify: str | bool = True) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return {m["name"]: m for m in requests.get(f"{base}/v1/models", headers=headers, timeout=10,
                                               verify=verify).json()["data"]}


def wait_until_hot(base: str, name: str, key: str | None = None, wait_s: float = 20, verify: str | bool = True) -> None:
    """The door looks again when asked (at most once a second); wait until it has seen the switch."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if door_models(base, key, verify)[name]["hot"]:
                return
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"the door did not see {name} hot within {wait_s} s")


def door_listens_on(address: str, wait_s: float = 30) -> bool:
    """The door is a Type=exec service: it listens a moment after systemd has started it."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if f"{address}:{DOOR_PORT}" in vm_ssh(f"ss -ltnH 'sport = :{DOOR_PORT}'").stdout:
            return True
        time.sleep(0.5)
    return False


def engine_log(unit: str, since: str) -> str:
    return vm_ssh(f"journalctl -u {unit} -o cat --no-pager --since '{since}'").stdout


@pytest.fixture(scope="module")
def door(main_node):
    """The test VM deployed as the testhost group (earlier modules may leave it otherwise), and the door
    on this machine's loopback through ssh -L."""
    result = deploy()
    assert not result.errors
    local = free_port()
    command = testhost.ssh_command()
    tunnel = subprocess.Popen(command[:1] + ["-N", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ExitOnForwardFailure=yes", "-L",
                                             f"127.0.0.1:{local}:127.0.0.1:{DOOR_PORT}"] + command[1:],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{local}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{base}/health", timeout=2)
            break
        except requests.RequestException:
            time.sleep(0.5)
    vm_ssh(f"rm -f {KNOBS}")
    yield base
    tunnel.terminate()
    tunnel.wait(10)
    vm_ssh(f"rm -f {KNOBS}; llm-switch none")


def client(base: str, key: str = "unused", verify: str | bool = True) -> openai.OpenAI:
    """The openai client; `verify` names the CA file to trust (the door's own certificate) when not True."""
    trust = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60,
                         http_client=openai.DefaultHttpxClient(verify=trust))


@pytest.mark.release_loop
def test_the_door_is_enabled_unprivileged_and_lists_every_model_with_its_state(door):
    assert vm_ssh("systemctl is-enabled sparkstack-frontdoor.service").stdout.strip() == "enabled"
    pid = vm_ssh("systemctl show -p MainPID --value sparkstack-frontdoor.service").stdout.strip()
    assert vm_ssh(f"ps -o user= -p {pid}").stdout.strip() == "sparkstack-door"
    assert door_listens_on("127.0.0.1")
    switch("qwen")
    wait_until_hot(door, "qwen36")
    models = door_models(door)
    assert set(models) == {"qwen36", "mistral4"}
    assert models["qwen36"]["hot"] and not models["mistral4"]["hot"] and models["mistral4"]["state"] == "stopped"
    assert models["mistral4"]["aliases"] == ["mistral"] and models["mistral4"]["capabilities"]["vision"] is True
    assert models["qwen36"]["capabilities"] == {"vision": False, "tools": True, "context_length": 262144}
    # The real client library sees the same list.
    assert {m.id for m in client(door).models.list()} == {"qwen36", "mistral4"}


def test_a_model_that_is_not_hot_gets_409_naming_the_hot_one_and_the_command(door):
    with pytest.raises(openai.ConflictError) as caught:
        client(door).chat.completions.create(model="mistral", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    message = str(caught.value)
    assert "model mistral4 is not hot: the hot model is qwen36" in message and "`llm-switch mistral4`" in message


def test_an_image_to_the_language_only_model_gets_the_doors_400_naming_the_vision_models(door):
    before = vm_ssh(f"stat -c %Y {RECORDS}/qwen36-request.json 2>/dev/null || echo none").stdout.strip()
    with pytest.raises(openai.BadRequestError) as caught:
        client(door).chat.completions.create(model="qwen", messages=IMAGE, max_tokens=4)
    assert "model qwen36 takes no image input; models with vision here: mistral4" in str(caught.value)
    after = vm_ssh(f"stat -c %Y {RECORDS}/qwen36-request.json 2>/dev/null || echo none").stdout.strip()
    assert before == after  # the engine never saw it


def test_a_double_user_turn_reaches_mistral_merged_and_succeeds(door):
    switch("mistral")
    wait_until_hot(door, "mistral4")
    # Straight to the engine, the template refuses it: the strictness is real.
    direct = vm_ssh(f"curl -s http://127.0.0.1:30000/v1/chat/completions -H 'Content-Type: application/json' "
                    f"-d '{json.dumps({'model': 'mistral4', 'messages': TITLE_REQUEST, 'max_tokens': 4})}'")
    assert "conversation roles must alternate" in direct.stdout
    answer = client(door).chat.completions.create(model="mistral", messages=TITLE_REQUEST, max_tokens=4)
    assert answer.choices[0].message.content
    seen = json.loads(vm_ssh(f"cat {RECORDS}/mistral4-request.json").stdout)
    assert seen["model"] == "mistral4"  # the alias, rewritten to the served name
    assert seen["messages"] == [TITLE_REQUEST[0], {"role": "user", "content":
                                "Generate a title for this conversation:\n\nfix the flaky test"}]


@pytest.mark.release_loop
def test_a_stream_arrives_chunk_by_chunk(door):
    vm_ssh(f"echo '{json.dumps({'qwen36': {'token_rate': 10}})}' > {KNOBS}")
    switch("none")  # the stand-in reads its knobs at start: a fresh start, whatever ran before
    switch("qwen")
    wait_until_hot(door, "qwen36")
    arrivals = []
    stream = client(door).chat.completions.create(model="qwen36", messages=[{"role": "user", "content": "count"}],
                                                  max_tokens=12, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == 12
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # Paced at 10 tokens/s by the engine: a door that buffered would deliver them together at the end.
    assert arrivals[-1] - arrivals[0] > 0.8 and sorted(gaps)[len(gaps) // 2] > 0.05, gaps


@pytest.mark.release_loop
def test_a_client_that_goes_away_cancels_the_upstream_request(door):
    since = vm_ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    host, port = door.removeprefix("http://").split(":")
    body = json.dumps({"model": "qwen36", "stream": True, "max_tokens": 200, "messages": [{"role": "user", "content": "x"}]})
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        received = b""
        while received.count(b"data: ") < 3:
            received += raw.recv(4096)
    # 200 tokens at 10/s would take 20 s; the engine must stop long before.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "went away mid-stream" not in engine_log("vllm-qwen36.service", since):
        time.sleep(1)
    assert "the client went away mid-stream; generation of qwen36 stopped" in engine_log("vllm-qwen36.service", since)


def test_the_door_survives_a_switch_and_a_restart(door):
    vm_ssh(f"rm -f {KNOBS}")
    switch("mistral")
    wait_until_hot(door, "mistral4")
    assert client(door).chat.completions.create(model="mistral4", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=3).choices[0].message.content
    vm_ssh("systemctl restart sparkstack-frontdoor.service")
    wait_until_hot(door, "mistral4")
    switch("qwen")
    wait_until_hot(door, "qwen36")
    answer = client(door).chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"},
                                                                         {"role": "system", "content": "be brief"}],
                                                  max_tokens=3)
    assert answer.choices[0].message.content  # and Qwen's system-first template got its system message first
    seen = json.loads(vm_ssh(f"cat {RECORDS}/qwen36-request.json").stdout)
    assert [m["role"] for m in seen["messages"]] == ["system", "user"]


def test_an_attacker_at_the_deployed_door_is_refused_at_each_step_and_the_door_keeps_serving(door):
    """The unit tier's attack corpus (tests/unit/test_frontdoor_process.py, a door process on this machine), step by
    step against the door the deploy installed, under its unit and the host's aiohttp."""
    from tests.unit.test_frontdoor_process import CHAT, TRAVERSALS, ask

    port = int(door.rsplit(":", 1)[1])
    switch("qwen")
    wait_until_hot(door, "qwen36")
    since = vm_ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    # 1. Walk out of /v1 with dot segments, raw and percent-encoded, towards the engine's own routes.
    assert {raw: ask(port, "POST", raw, CHAT, key=None)[0] for raw in TRAVERSALS} == {raw: 400 for raw in TRAVERSALS}
    # 2. Ask for the engine's routes by name.
    named = ("/invocations", "/tokenize", "/update_weights_from_disk", "/get_server_info")
    assert {raw: ask(port, "POST", raw, CHAT, key=None)[0] for raw in named} == {raw: 404 for raw in named}
    # 3. A web page in the owner's browser posts cross-origin, then as a "simple" text/plain request.
    assert ask(port, "POST", "/v1/chat/completions", CHAT, key=None, headers={"Origin": "https://evil.example"})[0] == 403
    assert ask(port, "POST", "/v1/chat/completions", CHAT, key=None, headers={"Content-Type": "text/plain"})[0] == 415
    # 4. The page's DNS name is rebound to the Spark.
    assert ask(port, "GET", "/v1/models", key=None, headers={"Host": f"rebind.evil.example:{port}"})[0] == 421
    # 5. A body past the cap.
    from sparkstack_host.frontdoor import MAX_BODY_BYTES
    assert ask(port, "POST", "/v1/chat/completions", {**CHAT, "padding": "x" * (MAX_BODY_BYTES + 1024)}, key=None)[0] == 413
    # The owner's own request still goes through, and the engine heard nothing of the attacker's.
    code, body = ask(port, "POST", "/v1/chat/completions", CHAT, key=None)
    assert code == 200 and json.loads(body)["choices"][0]["message"]["content"], body
    # The engine's access log: only the routes the door serves were asked for (its start-up lines name files such
    # as tokenizer.json, so the requests are read, not the words).
    asked = set(re.findall(r'"(?:GET|POST|PUT|DELETE) (\S+) HTTP', engine_log("vllm-qwen36.service", since)))
    assert asked <= {"/health", "/v1/models", "/v1/chat/completions"}, asked
    # One journal line per refusal, never a traceback.
    journal = vm_ssh(f"journalctl -u sparkstack-frontdoor -o cat --no-pager --since '{since}'").stdout
    assert journal.count("refused ") >= len(TRAVERSALS) + len(named) + 4 and "Traceback" not in journal, journal[-3000:]


def test_client_configs_make_the_hot_model_the_small_one(door, tmp_path):
    from tests.hosts.conftest import BIN, run

    switch("qwen")
    wait_until_hot(door, "qwen36")
    host = door.removeprefix("http://")
    result = run([str(BIN / "sparkstack"), "clients", "--group", "testhost", "--host", host, "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert "small/weak model: qwen36 (the hot model, as the door reported it)" in result.stdout
    opencode = json.loads((tmp_path / "opencode.json").read_text())
    assert opencode["small_model"] == "sparkstack/qwen36"
    assert opencode["provider"]["sparkstack"]["options"]["baseURL"] == f"{door}/v1"
    # The config's base URL and model names work with the real client as written.
    answer = client(door).chat.completions.create(model=opencode["small_model"].split("/", 1)[1], max_tokens=3,
                                                  messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content


def test_exposed_the_door_needs_its_key_speaks_tls_and_on_demand_it_switches(door, tmp_path):
    vm_ssh(f"echo 'SPARKSTACK_FRONTDOOR_API_KEY={DOOR_KEY}' >> {SECRETS}")
    env = {"SPARKSTACK_TEST_FRONTDOOR_EXPOSE": "1", "SPARKSTACK_TEST_FRONTDOOR_ON_DEMAND": "1",
           "SPARKSTACK_TEST_FRONTDOOR_TLS": "1"}
    tls_door = door.replace("http://", "https://")
    try:
        result = deploy(env=env)
        assert not result.errors
        assert any("Restart sparkstack-frontdoor.service" in name for name in result.changed)
        assert any("self-signed certificate" in name for name in result.changed)
        assert door_listens_on("0.0.0.0")
        assert vm_ssh("systemctl is-active sparkstack-switch-request.socket").stdout.strip() == "active"
        # The certificate the deploy made, as the owner hands it to the clients; the key stays the door's.
        cert = tmp_path / "door.crt"
        cert.write_text(vm_ssh("cat /etc/sparkstack/tls/door.crt").stdout)
        assert vm_ssh("stat -c '%U:%G %a' /etc/sparkstack/tls/door.key").stdout.split() == ["root:sparkstack-door", "640"]
        wait_until_hot(tls_door, "qwen36", key=DOOR_KEY, verify=str(cert))
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{door}/v1/models", timeout=10)  # plain HTTP: nothing answers it
        assert requests.get(f"{tls_door}/v1/models", timeout=10, verify=str(cert)).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            client(tls_door, "sk-wrong", str(cert)).models.list()
        # The door's key is not in its unit or its command line (systemd reads it from the secrets file).
        assert DOOR_KEY not in vm_ssh("cat /etc/systemd/system/sparkstack-frontdoor.service; "
                                      "ps -o args= -u sparkstack-door").stdout
        # A second deploy keeps the certificate the clients now trust, and changes nothing.
        again = deploy(env=env)
        assert again.changed == [] and vm_ssh("cat /etc/sparkstack/tls/door.crt").stdout == cert.read_text()
        # On demand: qwen36 has been hot less than the minimum (20 s here), so the door refuses to flip yet.
        switch("none")
        switch("qwen")
        wait_until_hot(tls_door, "qwen36", key=DOOR_KEY, verify=str(cert))
        with pytest.raises(openai.InternalServerError) as refused:
            client(tls_door, DOOR_KEY, str(cert)).chat.completions.create(
                model="mistral4", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert refused.value.status_code == 503 and "the door keeps a model hot at least 20 s" in str(refused.value)
        assert int(refused.value.response.headers["Retry-After"]) >= 1
        time.sleep(21)
        started = time.monotonic()
        answer = client(tls_door, DOOR_KEY, str(cert)).chat.completions.create(
            model="mistral4", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content and time.monotonic() - started < 120
        assert json.loads(vm_ssh("llm-switch status --json").stdout)["hot"] == "mistral4"
        assert "switching to mistral4 on demand" in vm_ssh("journalctl -u sparkstack-frontdoor -o cat --no-pager").stdout
        # What runs, then unloading it through the door: the real root socket takes `none`.
        headers = {"Authorization": f"Bearer {DOOR_KEY}"}
        running = requests.get(f"{tls_door}/running", headers=headers, timeout=10, verify=str(cert)).json()
        assert running["hot"] == "mistral4" and running["state"] == "hot" and running["in_flight"] == 0, running
        assert requests.post(f"{tls_door}/unload", json={}, timeout=10, verify=str(cert)).status_code == 401
        unloaded = requests.post(f"{tls_door}/unload", json={}, headers=headers, timeout=120, verify=str(cert))
        assert unloaded.status_code == 200 and unloaded.json()["unloaded"] == "mistral4", unloaded.text
        assert json.loads(vm_ssh("llm-switch status --json").stdout)["hot"] is None
    finally:
        vm_ssh(f"sed -i '/^SPARKSTACK_FRONTDOOR_API_KEY=/d' {SECRETS}")
        back = deploy()
        assert not back.errors
    assert door_listens_on("127.0.0.1")
    # Without on-demand switching the socket still serves the wedge watch's recoveries (on by default).
    assert vm_ssh("systemctl is-active sparkstack-switch-request.socket").stdout.strip() == "active"


def set_profiles(root) -> str:
    """The shipped profiles, with mistral4 made small enough to run beside qwen36 (a small model beside a coder)
    and both stopped by the door after 10 s idle."""
    import shutil

    import yaml
    from sparkstack.paths import repo_root
    models = root / "models"
    shutil.copytree(repo_root() / "group_data" / "models", models)
    for name, change in (("qwen36", {}), ("mistral4", {"memory": {"fraction": 0.2, "resident_gb": 20, "weights_gb": 15}})):
        profile = yaml.safe_load((models / f"{name}.yaml").read_text())
        profile["idle_ttl_s"] = 10
        for key, value in change.items():
            profile[key].update(value)
        (models / f"{name}.yaml").write_text(yaml.safe_dump(profile))
    return str(models)


class Prometheus:
    """Debian's prometheus on this machine, with the scrape configuration `sparkstack monitoring` renders for the
    group; the one change is the target: the test host's door through the ssh tunnel (127.0.0.1:PORT)."""

    def __init__(self, door: str, root, env: dict):
        from tests.hosts.conftest import BIN, run
        rendered = run([str(BIN / "sparkstack"), "monitoring", "--group", "testhost", "--out", str(root)], env=env)
        assert rendered.returncode == 0, rendered.stderr
        import yaml
        config = yaml.safe_load((root / "prometheus.yml").read_text())
        [job] = config["scrape_configs"]
        job["static_configs"][0]["targets"] = [door.removeprefix("http://")]
        config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s"}
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(root / "prometheus.log").open("w"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                targets = requests.get(f"{self.url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"prometheus never scraped the door: {(root / 'prometheus.log').read_text()[-2000:]}")

    def value(self, query: str) -> float | None:
        result = requests.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def until(self, query: str, holds, wait_s: float = 30) -> float | None:
        """The query's value once `holds(value)`, polling as Prometheus scrapes (once a second here)."""
        deadline = time.monotonic() + wait_s
        while True:
            value = self.value(query)
            if (value is not None and holds(value)) or time.monotonic() > deadline:
                return value
            time.sleep(1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


def chromium(url: str, screenshot=None) -> str:
    """The page as headless Chromium (Debian's) renders it: its DOM after load, and a screenshot when asked."""
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,900"]
    if screenshot is not None:
        shot = subprocess.run(base + [f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def test_a_set_loads_on_demand_for_a_waiting_stream_each_key_counts_apart_and_the_set_goes_after_its_ttl(door, tmp_path):
    from tests.hosts.conftest import BIN, run

    # The door's /metrics and /status answer loopback without a key (Prometheus and Chromium come through the tunnel).
    group = {"model_sets": {"pair": ["qwen36", "mistral4"]}, "frontdoor_on_demand": True, "frontdoor_min_hot_s": 0,
             "frontdoor_clients": ["laptop", "ci"], "frontdoor_max_requests_per_model": 1,
             "frontdoor_monitoring": "loopback"}
    keys = tmp_path / "keys"
    env = {"SPARKSTACK_KEYS_DIR": str(keys), "SPARKSTACK_TEST_GROUP_DATA": json.dumps(group)}
    # With the shipped profiles the two do not fit together: the plan refuses the set before the host is touched.
    refused = run([str(BIN / "pyinfra"), "-y", "inventory.py", "deploy.py", "--limit", "testhost"], env=env)
    assert refused.returncode != 0 and "REFUSED  set pair: qwen36 67 GB + mistral4 96 GB" in refused.stdout + refused.stderr
    env["SPARKSTACK_MODELS_DIR"] = set_profiles(tmp_path)
    switch("none")
    try:
        result = deploy(env=env)
        assert not result.errors
        laptop, ci = ((keys / "sparkstack-testhost" / f"{name}.key").read_text().strip() for name in ("laptop", "ci"))
        prometheus = Prometheus(door, tmp_path / "prometheus", env)
        assert laptop not in vm_ssh("cat /etc/sparkstack/door-clients.json").stdout
        # The switch starts the set as one, and says so.
        switch("pair")
        assert json.loads(vm_ssh("llm-switch status --json").stdout)["hot"] == "pair"
        switch("none")
        # qwen36 loads slowly (3 s) and streams at 10 tokens/s: a streaming client asking for mistral4 waits for the
        # whole set, hearing that it loads, and then gets its stream.
        vm_ssh(f"echo '{json.dumps({'qwen36': {'load_delay_s': 3, 'token_rate': 10}})}' > {KNOBS}")
        started = time.monotonic()
        with client(door, laptop).chat.completions.with_streaming_response.create(
                model="mistral4", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True) as raw:
            lines = [line for line in raw.iter_lines() if line]
        loaded_s = time.monotonic() - started
        assert lines[0].startswith(": loading set pair") and lines[-1] == "data: [DONE]", lines
        running = requests.get(f"{door}/running", headers={"Authorization": f"Bearer {laptop}"}, timeout=10).json()
        assert running["set"] == "pair" and sorted(running["models"]) == ["mistral4", "qwen36"], running
        # One request at a time per model here: a second while ci's long answer runs gets 429.
        long_answer = client(door, ci).chat.completions.create(
            model="qwen36", messages=[{"role": "user", "content": "count"}], max_tokens=30, stream=True,
            stream_options={"include_usage": True})
        with pytest.raises(openai.RateLimitError):
            client(door, laptop).chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}],
                                                         max_tokens=3)
        usage_seen = [chunk.usage for chunk in long_answer if chunk.usage]
        assert usage_seen and usage_seen[-1].completion_tokens == 30
        # Prometheus saw it all: the requests and tokens per client, the on-demand switch to the set.
        assert prometheus.until('sum(sparkstack_door_requests_total{client="laptop"})', lambda v: v >= 2) == 2
        assert prometheus.until('sum(sparkstack_door_completion_tokens_total{client="ci"})', lambda v: v >= 30) == 30
        assert prometheus.until('sum(sparkstack_door_switches_total{target="pair",outcome="ok"})', lambda v: v >= 1) == 1
        assert prometheus.value('sparkstack_door_model_hot{model="mistral4"}') == 1
        assert prometheus.value('sum(vllm:generation_tokens_total{sparkstack_model="qwen36"})') >= 30
        # The guard's view follows a memory hog on the host: 500 MB held for 15 s.
        before = prometheus.value("sparkstack_host_memory_available_bytes")
        vm_ssh("nohup python3 -c 'import time; hog = bytearray(500 * 2**20); time.sleep(15)' >/dev/null 2>&1 &")
        low = prometheus.until("min_over_time(sparkstack_host_memory_available_bytes[30s])",
                               lambda v: v < before - 300 * 2**20)
        assert low < before - 300 * 2**20, (before, low)
        assert prometheus.value("sparkstack_memory_guard_floor_bytes") > 0
        # The status page, in a real browser: it names the set, and a screenshot is kept.
        shot = repo_root() / "build" / "test-artifacts" / "status-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page = chromium(f"{door}/status", shot)
        assert 'id="hot">set pair (mistral4, qwen36)</span>' in page and "<td>ci</td>" in page, page[-3000:]
        # The counts survive the door's restart, and the laptop's status shows them per key.
        vm_ssh("systemctl restart sparkstack-frontdoor.service")
        status = run([str(BIN / "sparkstack"), "status", "--json", "--limit", "testhost"], env=env)
        usage = json.loads(status.stdout)["usage"]
        assert (usage["laptop"]["requests"], usage["laptop"]["errors"]) == (2, 1), usage
        assert (usage["ci"]["requests"], usage["ci"]["completion_tokens"]) == (1, 30), usage
        # Left idle past its TTL (10 s), the door stops the whole set.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and json.loads(vm_ssh("llm-switch status --json").stdout)["hot"] is not None:
            time.sleep(1)
        assert json.loads(vm_ssh("llm-switch status --json").stdout)["hot"] is None
        assert "stopping pair (idle for" in vm_ssh("journalctl -u sparkstack-frontdoor -o cat --no-pager").stdout
        # The page changed with it: nothing hot, and the switch from the set to none, by the idle TTL.
        page = chromium(f"{door}/status")
        assert 'id="hot">no model is hot</span>' in page and "<td>pair</td><td>none</td><td>idle for" in page, page[-3000:]
        prometheus.stop()
        # ci taken out of the group's list: the next deploy revokes its key, the laptop's still opens the door.
        group["frontdoor_clients"] = ["laptop"]
        env["SPARKSTACK_TEST_GROUP_DATA"] = json.dumps(group)
        assert not deploy(env=env).errors
        assert door_listens_on("127.0.0.1")
        with pytest.raises(openai.AuthenticationError):
            client(door, ci).models.list()
        assert client(door, laptop).models.list().data
        print(f"queue wait for the set (two stand-ins, qwen36 with a 3 s load): {loaded_s:.1f} s")
    finally:
        if "prometheus" in locals():
            prometheus.stop()
        vm_ssh(f"rm -f {KNOBS}")
        assert not deploy().errors
