"""What the platform does to a running model, on a test host: an engine that wedges while /health says 200 is found by
the door's canary and restarted, and one that wedges again within the hour is stopped; the compile caches live on the
host, per model and image, so a restart is warm. Runs in the Debian 13 shard (release_loop)."""

from __future__ import annotations

import json
import time

import pytest

from tests.hosts.conftest import deploy, vm_ssh

pytestmark = pytest.mark.release_loop

KNOBS = "/var/lib/sparkstack/huggingface/standin-knobs.json"
STARTS = "/var/lib/sparkstack/huggingface/standin-records/qwen36.starts"
# The watch scaled for a test: a canary after 2 s without a byte for a request in flight, or 4 s idle; 2 s for its
# token; one restart an hour, then a stop.
FAST_WATCH = {"wedge_stall_s": 2, "wedge_canary_every_s": 4, "wedge_canary_timeout_s": 2, "wedge_max_restarts_per_hour": 1}


def status() -> dict:
    return json.loads(vm_ssh("llm-switch status --json").stdout)


def wait_for(what, predicate, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = status()
        if predicate(now):
            return now
        time.sleep(1)
    pytest.fail(f"{what} within {seconds} s; status: {json.dumps(now)[:3000]}")


@pytest.fixture
def fast_watch(deployed):
    result = deploy(env={"SPARKSTACK_TEST_GROUP_DATA": json.dumps(FAST_WATCH)})
    assert not result.errors
    try:
        yield
    finally:
        vm_ssh(f"rm -f {KNOBS} {STARTS} /run/sparkstack/wedge.json; llm-switch none")
        assert not deploy().errors


def test_a_wedged_engine_is_restarted_and_one_that_wedges_again_within_the_hour_is_stopped(fast_watch):
    # The engine wedges once: it loads, /health answers 200, and no token ever comes.
    vm_ssh(f"rm -f {STARTS}; echo '{json.dumps({'qwen36': {'wedge_after_s': 0, 'wedge_starts': 1}})}' > {KNOBS}")
    assert vm_ssh("llm-switch qwen36").returncode == 0
    port = json.loads(vm_ssh("cat /etc/sparkstack/models.json").stdout)["models"]["qwen36"]["port"]
    assert vm_ssh(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/health").stdout == "200"
    # Idle, the door's canary gets no token: llm-switch restarts it, and the restarted engine answers.
    recovered = wait_for("qwen36 restarted after its wedge",
                         lambda s: s["wedges"].get("qwen36", {}).get("state") == "restarted")
    wedge = recovered["wedges"]["qwen36"]
    assert wedge["reason"].startswith("idle for") and "a canary got no token in 2 s" in wedge["reason"], wedge
    assert wedge["last_logs"] and all(line.startswith("standin: ") for line in wedge["last_logs"]), wedge["last_logs"]
    answer = vm_ssh("curl -s http://127.0.0.1:30080/v1/chat/completions -H 'Content-Type: application/json' "
                    "-d '{\"model\": \"qwen36\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 4}'")
    assert json.loads(answer.stdout)["choices"][0]["message"]["content"], answer.stdout

    # Now every start wedges. A streaming client waits; its model wedges again within the hour, so it is stopped.
    vm_ssh(f"echo '{json.dumps({'qwen36': {'wedge_after_s': 0}})}' > {KNOBS}; llm-switch none; llm-switch qwen36")
    stuck = vm_ssh("curl -s -N --max-time 20 http://127.0.0.1:30080/v1/chat/completions "
                   "-H 'Content-Type: application/json' -d '{\"model\": \"qwen36\", \"stream\": true, "
                   "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 4}'", timeout=60)
    assert "the stream broke off" in stuck.stdout, stuck.stdout  # told, not left hanging
    stopped = wait_for("qwen36 stopped after wedging again",
                       lambda s: s["wedges"].get("qwen36", {}).get("state") == "stopped" and s["hot"] is None)
    wedge = stopped["wedges"]["qwen36"]
    assert "in flight and no byte of an answer" in wedge["reason"] and wedge["wedges"] == 2, wedge
    assert "wedged again after 1 restart(s) within the hour: stopped it" in wedge["message"]
    # The state, the reason and the last log lines are in status, the door's metrics and page, and the journal.
    said = vm_ssh("llm-switch status").stdout
    assert "wedge: qwen36 stopped" in said, said
    metrics = vm_ssh("curl -s http://127.0.0.1:30080/metrics").stdout
    assert 'sparkstack_wedge_stopped{model="qwen36"} 1.0' in metrics
    assert 'sparkstack_wedge_canaries_total{model="qwen36",outcome="none"}' in metrics
    page = vm_ssh("curl -s http://127.0.0.1:30080/status").stdout
    assert '<table id="wedges">' in page and '<td class="err">stopped</td>' in page
    journal = vm_ssh("journalctl --no-pager -o cat -u 'sparkstack-switch-request@*' --since '-5min'").stdout
    assert "llm-switch: qwen36 is wedged:" in journal and "--- last log lines of vllm-qwen36.service ---" in journal


def test_the_compile_cache_is_mounted_per_image_and_a_restart_finds_it_warm(deployed):
    vm_ssh(f"echo '{json.dumps({'qwen36': {'compile_s': 3}})}' > {KNOBS}; llm-switch none")
    registry = json.loads(vm_ssh("cat /etc/sparkstack/models.json").stdout)
    cache = registry["models"]["qwen36"]["compile_cache"]
    try:
        vm_ssh(f"rm -rf {cache}")
        assert vm_ssh("llm-switch qwen36").returncode == 0
        cold = status()["starts"]["qwen36"]
        assert cold["compile_cache"] == "cold" and cold["ready_s"] >= 3, cold
        # What the engine compiled is on the host, under the model's and the image's own directory.
        assert vm_ssh(f"test -f {cache}/vllm/standin-compiled.json").returncode == 0
        container = registry["models"]["qwen36"]["container"]
        mounts = json.loads(vm_ssh(f"docker inspect --format '{{{{json .Mounts}}}}' {container}").stdout)
        assert {"Source": cache, "Destination": "/var/cache/sparkstack-compile"}.items() <= \
            next(m for m in mounts if m["Destination"] == "/var/cache/sparkstack-compile").items()
        # The cache survives the restart, and the start skips the compile.
        vm_ssh("llm-switch none")
        assert vm_ssh("llm-switch qwen36").returncode == 0
        warm = status()["starts"]["qwen36"]
        assert warm["compile_cache"] == "warm" and warm["ready_s"] < cold["ready_s"], (cold, warm)
        record = json.loads(vm_ssh("cat /var/lib/sparkstack/huggingface/standin-records/qwen36.json").stdout)
        assert record["compile"] == "warm"
        print(f"time to ready: cold {cold['ready_s']} s, warm {warm['ready_s']} s (a 3 s compile in the stand-in)")
    finally:
        vm_ssh(f"rm -f {KNOBS}; llm-switch none")
