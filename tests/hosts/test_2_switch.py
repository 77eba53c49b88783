"""llm-switch in the VM, driven through the stand-in engine's knobs."""

from __future__ import annotations

import json
import time

import pytest

from sparkstack import testhost
from tests.hosts.conftest import vm_ssh

KNOBS = "/var/lib/sparkstack/huggingface/standin-knobs.json"
REGISTRY = "/etc/sparkstack/models.json"


def switch(args: str, env: str = "") -> tuple[int, str]:
    result = vm_ssh(f"{env} llm-switch {args} 2>&1")
    return result.returncode, result.stdout


def status() -> dict:
    return json.loads(vm_ssh("llm-switch status --json").stdout)


def running() -> list[str]:
    out = vm_ssh("docker ps --filter label=io.sparkstack.managed=true --format '{{.Names}}'").stdout
    return sorted(filter(None, out.split()))


def set_knobs(knobs: dict) -> None:
    vm_ssh(f"echo '{json.dumps(knobs)}' > {KNOBS}")


def registry_copy(change: dict) -> str:
    """A private copy of the deployed registry with some model fields changed; returns its env assignment."""
    registry = json.loads(vm_ssh(f"cat {REGISTRY}").stdout)
    for name, fields in change.items():
        registry["models"][name].update(fields)
    vm_ssh(f"echo '{json.dumps(registry)}' > /root/registry-test.json")
    return "LLM_SWITCH_REGISTRY=/root/registry-test.json"


@pytest.fixture(autouse=True)
def clean(deployed):
    vm_ssh(f"rm -f {KNOBS}; llm-switch none")
    yield
    vm_ssh(f"rm -f {KNOBS} /root/registry-test.json; llm-switch none")


@pytest.mark.release_loop
def test_normal_switch_and_status(deployed):
    code, out = switch("qwen")
    assert code == 0, out
    assert "qwen36 (variant default) is hot on 127.0.0.1:30001" in out
    assert running() == ["sparkstack-qwen36"]
    s = status()
    assert s["hot"] == "qwen36"
    qwen = next(m for m in s["models"] if m["name"] == "qwen36")
    assert qwen["ready"] and qwen["unit_state"] == "active" and qwen["variant"] == "default"
    assert qwen["port"] == 30001 and qwen["uptime_s"] is not None
    assert s["memory"]["available_gb"] > 0 and s["memory"]["total_gb"] > s["memory"]["available_gb"]


def test_switching_again_to_the_hot_model_is_a_no_op(deployed):
    assert switch("qwen")[0] == 0
    code, out = switch("qwen36")
    assert code == 0 and "already hot" in out


def test_switch_stops_a_model_started_by_hand(deployed):
    assert vm_ssh("systemctl start sglang-mistral4.service").returncode == 0
    code, out = switch("qwen")
    assert code == 0, out
    assert running() == ["sparkstack-qwen36"]


def test_units_conflict_so_a_hand_start_cannot_run_two(deployed):
    assert switch("qwen")[0] == 0
    vm_ssh("systemctl start sglang-mistral4.service")
    time.sleep(3)
    active = vm_ssh("systemctl is-active vllm-qwen36.service sglang-mistral4.service").stdout.split()
    assert active.count("active") == 1, active


def test_rollback_variant_runs_without_eagle_and_status_shows_it(deployed):
    code, out = switch("mistral --variant rollback")
    assert code == 0, out
    inspect = json.loads(vm_ssh("docker inspect sparkstack-mistral4").stdout)[0]
    assert not any(arg.startswith("--speculative") for arg in inspect["Config"]["Cmd"])
    assert status()["models"][0]["variant"] == "rollback"
    code, out = switch("mistral")
    assert code == 0
    inspect = json.loads(vm_ssh("docker inspect sparkstack-mistral4").stdout)[0]
    assert "--speculative-algorithm" in inspect["Config"]["Cmd"]
    assert next(m for m in status()["models"] if m["name"] == "mistral4")["variant"] == "safer-eagle"


def test_unknown_variant_and_model_fail_with_one_line(deployed):
    code, out = switch("mistral --variant turbo")
    assert code == 1 and out.strip().count("\n") == 0 and "no variant 'turbo'" in out
    code, out = switch("llama")
    assert code == 1 and "unknown model 'llama'" in out


def test_only_root_may_switch_but_anyone_may_read_status(deployed):
    assert switch("qwen")[0] == 0
    denied = vm_ssh("setpriv --reuid=nobody --regid=nogroup --clear-groups llm-switch none 2>&1")
    assert denied.returncode == 1 and "needs root" in denied.stdout
    read = vm_ssh("setpriv --reuid=nobody --regid=nogroup --clear-groups llm-switch status --json")
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["hot"] == "qwen36"
    assert running() == ["sparkstack-qwen36"]


def test_slow_load_inside_the_timeout_succeeds(deployed):
    set_knobs({"qwen36": {"load_delay_s": 20}})
    started = time.monotonic()
    code, out = switch("qwen")
    assert code == 0, out
    assert time.monotonic() - started >= 20
    assert "waiting for qwen36" in out  # progress was shown


def test_load_that_never_becomes_ready_times_out_and_leaves_nothing(deployed):
    set_knobs({"qwen36": {"never_ready": 1}})
    env = registry_copy({"qwen36": {"readiness_timeout_s": 25}})
    code, out = switch("qwen", env)
    assert code == 1
    assert "was not ready after 25 s" in out
    assert "last log lines of vllm-qwen36.service" in out
    assert running() == []
    assert status()["hot"] is None


def test_crash_while_loading_fails_the_switch_and_leaves_nothing(deployed):
    set_knobs({"mistral4": {"crash_after_s": 1, "load_delay_s": 30}})
    code, out = switch("mistral")
    assert code == 1 and "exited while loading" in out, out
    assert running() == []


def test_memory_gate_refuses_with_the_numbers(deployed):
    env = registry_copy({"qwen36": {"required_memory_gb": 500}})
    code, out = switch("qwen", env)
    assert code == 1
    assert "refusing to start qwen36: the host has" in out and "less than 500 GB for qwen36 + 0.02 GB reserve" in out
    assert running() == []


def test_crash_loop_stops_at_the_start_limit_and_status_says_so(deployed):
    set_knobs({"qwen36": {"crash_after_s": 12}})
    code, out = switch("qwen")
    assert code == 0, out
    deadline = time.monotonic() + 240
    qwen = None
    while time.monotonic() < deadline:
        qwen = next(m for m in status()["models"] if m["name"] == "qwen36")
        if qwen["start_limit_hit"]:
            break
        time.sleep(5)
    assert qwen and qwen["start_limit_hit"], qwen
    assert qwen["unit_state"] == "failed"
    assert running() == []
    time.sleep(15)  # stays failed: no further restarts
    assert vm_ssh("systemctl is-active vllm-qwen36.service").stdout.strip() == "failed"
    assert "start-limit-hit" in vm_ssh("llm-switch status").stdout


def test_storm_of_concurrent_switches_never_runs_two_models(deployed):
    # Eight at once: every kind of target, each model and variant more than once, more than the cores.
    targets = ["qwen", "mistral", "none", "mistral --variant rollback", "qwen", "none", "mistral", "qwen"]
    script = (
        "rm -f /root/samples /root/storm-done /root/units; "
        "( while [ ! -e /root/storm-done ]; do "
        "docker ps -q --filter label=io.sparkstack.managed=true | wc -l >> /root/samples; "
        "systemctl show -p ActiveState --value vllm-qwen36.service sglang-mistral4.service | grep -cx active >> /root/units; "
        "done ) & sampler=$!; "
        + " ".join(f"( llm-switch {t} > /root/storm-{i}.log 2>&1; echo $? > /root/storm-{i}.rc ) &" for i, t in enumerate(targets))
        + " wait $(jobs -p | grep -v $sampler); touch /root/storm-done; wait $sampler; "
        "echo samples $(wc -l < /root/samples) max $(sort -n /root/samples | tail -1) "
        "units_max $(sort -n /root/units | tail -1)"
    )
    result = vm_ssh(f"bash -c '{script}'", timeout=900)
    fields = result.stdout.split()
    summary = dict(zip(fields[::2], fields[1::2]))
    print(f"storm: {len(targets)} concurrent switches, {summary}")
    assert int(summary["samples"]) >= 50, summary
    assert int(summary["max"]) <= 1, summary
    assert int(summary["units_max"]) <= 1, summary
    codes = [int(vm_ssh(f"cat /root/storm-{i}.rc").stdout or 99) for i in range(len(targets))]
    assert all(code == 0 for code in codes), codes
    final = status()
    actual = running()
    assert (final["hot"] is None and actual == []) or actual == [f"sparkstack-{final['hot']}"]


def test_after_a_reboot_no_model_runs_and_status_says_none(deployed):
    assert switch("qwen")[0] == 0
    # A boot empties /run (a tmpfs on every driver): a marker there tells the new boot from the old one. (The
    # kernel's boot_id would do on the VM, but a container host shares this machine's kernel.)
    vm_ssh("echo before-reboot > /run/sparkstack-test-boot")
    vm_ssh("systemctl reboot")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(3)
        try:
            now = vm_ssh("cat /run/sparkstack-test-boot 2>/dev/null || echo rebooted", timeout=20)
        except Exception:
            continue
        if now.returncode == 0 and now.stdout.strip() == "rebooted" and testhost.system_state() in ("running", "degraded"):
            break
    else:
        pytest.fail("the host did not come back after reboot")
    assert running() == []
    assert status()["hot"] is None
    assert "hot: none" in vm_ssh("llm-switch status").stdout


def test_a_switch_waits_a_bounded_time_for_the_lock_then_fails_clearly(deployed):
    env = registry_copy({})
    registry = json.loads(vm_ssh("cat /root/registry-test.json").stdout)
    registry["lock_wait_s"] = 3
    vm_ssh(f"echo '{json.dumps(registry)}' > /root/registry-test.json")
    vm_ssh("mkdir -p -m 0700 /run/sparkstack/lock; nohup flock /run/sparkstack/lock/llm-switch.lock sleep 20 > /dev/null 2>&1 &")
    time.sleep(1)
    started = time.monotonic()
    code, out = switch("qwen", env)
    assert code == 1
    assert "still holds /run/sparkstack/lock/llm-switch.lock after 3 s" in out
    assert time.monotonic() - started < 15
    assert running() == []


def test_the_owner_runs_the_box_from_the_laptop_as_a_sudoer(deployed):
    from sparkstack.testhost_container import SUDOER
    from tests.hosts.conftest import BIN, run

    def laptop(*args: str):
        return run([str(BIN / "sparkstack"), *args, "--limit", "testhost", "--user", SUDOER])

    # As DGX OS's sudoer, without --sudo: the switch says what it needs, and nothing starts.
    refused = laptop("switch", "qwen")
    assert refused.returncode == 1 and "switching models needs root; run it with sudo" in refused.stdout + refused.stderr
    assert running() == []
    switched = laptop("switch", "qwen", "--sudo")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    said = switched.stdout + switched.stderr  # the switch's own progress, as it came, then the summary
    assert "qwen36 (variant default) is hot" in said and "sparkstack-testhost: switched to qwen" in said, said
    state = laptop("status", "--sudo")
    assert state.returncode == 0, state.stderr
    assert "hot: qwen36 (variant default), ready, up " in state.stdout
    assert "the guard stops the hot model below" in state.stdout and "door: active on 127.0.0.1:" in state.stdout
    logs = laptop("logs", "qwen", "-n", "20", "--sudo")
    assert logs.returncode == 0, logs.stdout + logs.stderr
    # The journal of qwen36's unit, found by profile name: the engine's own start line.
    assert "standin: serving qwen36" in logs.stdout, logs.stdout
    stopped = laptop("stop", "--sudo")
    assert stopped.returncode == 0 and running() == []
    assert "hot: none" in laptop("status", "--sudo").stdout


def test_a_new_owner_installs_the_kit_without_test_extras_and_runs_the_first_hour_as_a_sudoer(deployed, tmp_path):
    """README's "The first hour with a real Spark", as a new owner runs it: a fresh venv, `pip install -e .` with no
    test extras, then every command of that path against the test host as DGX OS's sudoer, never as root."""
    import subprocess

    from sparkstack.paths import repo_root
    from sparkstack.testhost_container import SUDOER
    from tests.hosts.conftest import run

    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", str(repo_root())],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    packages = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True).stdout
    assert "pytest" not in packages and "openai" not in packages and "olah" not in packages  # no test extras came

    def owner(*args: str) -> subprocess.CompletedProcess:
        return run([str(venv / "bin" / args[0]), *args[1:]])

    as_sudoer = ("--limit", "testhost", "--user", SUDOER, "--sudo")
    for command in (("sparkstack", "-h"), ("sparkstack", "validate"), ("sparkstack", "plan", "--group", "spark")):
        answer = owner(*command)
        assert answer.returncode == 0, (command, answer.stdout + answer.stderr)
    # The deploy as the sudoer (pyinfra's --sudo) finds the host as the root deploy left it: nothing to change.
    again = owner("pyinfra", "-y", "--json", "inventory.py", "deploy.py", *as_sudoer)
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads(again.stdout)["results"]
    assert [op["name"] for op in results["operations"] if op["success"] or op["error"]] == []
    switched = owner("sparkstack", "switch", "qwen", *as_sudoer)
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert "hot: qwen36 (variant default), ready" in owner("sparkstack", "status", *as_sudoer).stdout
    assert "standin: serving qwen36" in owner("sparkstack", "logs", "qwen", "-n", "20", *as_sudoer).stdout
    assert owner("sparkstack", "stop", *as_sudoer).returncode == 0 and running() == []
