"""The Spark never freezes: every start waits for room, a guard stops the model, earlyoom backs it up.

Real memory pressure in the 2 GB VM: a `hog` process allocates and touches memory and holds it,
for a while (memory an engine frees late) or for good. The group's figures are scaled by 0.01
(group_data/testhost.py): qwen36 needs 0.67 + 0.02 GB, mistral4 0.96 + 0.02 GB (each the plan's claim), the guard's floor
is 0.3 GB and the wait for room is bounded at 30 s.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from sparkstack.paths import models_dir
from tests.hosts.conftest import deploy, drift, vm_ssh
from tests.hosts.test_2_switch import KNOBS, running, set_knobs, status, switch

HOG = "sparkstack-test-hog"


def available_gb() -> float:
    out = vm_ssh("grep MemAvailable /proc/meminfo").stdout.split()
    return int(out[1]) / (1024 * 1024)


def need_gb(name: str) -> float:
    registry = json.loads(vm_ssh("cat /etc/sparkstack/models.json").stdout)
    return registry["models"][name]["required_memory_gb"] + registry["os_reserve_gb"]


def hog(leave_gb: float, hold_s: float | None = None, extra_gb: float = 0.0) -> float:
    """Allocate until MemAvailable is about `leave_gb` (+ what `extra_gb` will free on its own), hold it for
    `hold_s` seconds or until stopped; returns the GB held."""
    size = max(0.05, available_gb() + extra_gb - leave_gb)
    hold = "time.sleep(%s)" % hold_s if hold_s is not None else "time.sleep(86400)"
    code = (f"import time; b = bytearray({int(size * 1024 ** 3)}); "
            "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; " + hold)
    started = vm_ssh(f"systemd-run --unit={HOG} --collect --quiet python3 -c '{code}'")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while available_gb() > leave_gb + extra_gb + 0.1 and time.monotonic() < deadline:
        time.sleep(1)
    return size


@pytest.fixture(autouse=True)
def clean(deployed):
    vm_ssh(f"systemctl stop {HOG} 2>/dev/null; rm -f {KNOBS} /run/sparkstack/memory-guard.json; llm-switch none")
    yield
    vm_ssh(f"systemctl stop {HOG} 2>/dev/null; rm -f {KNOBS}; llm-switch none; "
           "systemctl reset-failed vllm-qwen36.service sglang-mistral4.service")


def test_a_switch_right_after_a_stop_waits_for_late_memory_and_succeeds(deployed):
    assert switch("qwen")[0] == 0
    # The freed memory "comes back" only when the hog exits, 20 s from now (an engine releasing late).
    hog(leave_gb=need_gb("mistral4") - 0.3, hold_s=20)
    started = time.monotonic()
    code, out = switch("mistral")
    took = time.monotonic() - started
    print(f"late release: switch took {took:.0f} s\n{out}")
    assert code == 0, out
    progress = re.findall(r"waiting for room for mistral4: ([\d.]+) GB available, ([\d.]+) GB needed, (\d+) s left", out)
    assert progress, out
    assert "room for mistral4:" in out and running() == ["sparkstack-mistral4"]
    assert took >= 10


@pytest.mark.release_loop
def test_memory_that_never_comes_back_is_refused_with_the_numbers_and_the_largest_users(deployed):
    hog(leave_gb=need_gb("qwen36") - 0.3)
    started = time.monotonic()
    code, out = switch("qwen")
    took = time.monotonic() - started
    print(f"refusal after {took:.0f} s:\n{out}")
    assert code == 1
    assert re.search(r"refusing to start qwen36: [\d.]+ GB available < 0\.67 GB for qwen36 \+ 0\.02 GB reserve = "
                     r"0\.69 GB, still after waiting 30 s", out), out
    assert re.search(r"largest memory users: 1\. python3 \(pid \d+\) [\d.]+ GB", out), out
    lines = re.findall(r"(\d+) s left", out)
    assert len(lines) >= 3  # progress at least every 10 s over the 30 s bound
    assert 30 <= took < 60 and running() == []
    assert not vm_ssh("test -e /run/sparkstack/qwen36.variant").returncode == 0  # kept only for a model that started


def test_a_hand_start_waits_for_room_and_never_runs_beside_another_model(deployed):
    assert switch("qwen")[0] == 0
    hog(leave_gb=need_gb("mistral4") - 0.3, hold_s=15, extra_gb=0.0)
    script = ("rm -f /root/hand-samples /root/hand-done; ( while [ ! -e /root/hand-done ]; do "
              "docker ps -q --filter label=io.sparkstack.managed=true | wc -l >> /root/hand-samples; sleep 0.3; done ) & "
              "systemctl start sglang-mistral4.service; echo rc=$?; touch /root/hand-done; wait; "
              "echo max=$(sort -n /root/hand-samples | tail -1) samples=$(wc -l < /root/hand-samples)")
    result = vm_ssh(f"bash -c '{script}'", timeout=300)
    print(result.stdout)
    assert "rc=0" in result.stdout and "max=1" in result.stdout, result.stdout
    journal = vm_ssh("journalctl -u sglang-mistral4.service --since '-3 min' --no-pager -o cat").stdout
    assert "waiting for room for mistral4" in journal and "room for mistral4:" in journal, journal
    deadline = time.monotonic() + 30
    while running() != ["sparkstack-mistral4"] and time.monotonic() < deadline:
        time.sleep(1)
    assert running() == ["sparkstack-mistral4"]


def test_a_hand_start_waits_for_a_slow_stop_of_the_model_it_conflicts_with(deployed):
    """Conflicts= alone would run the stop of qwen36 and the start of mistral4 side by side."""
    set_knobs({"qwen36": {"stop_delay_s": 8}})
    assert switch("qwen")[0] == 0
    script = ("rm -f /root/order-samples /root/order-done; ( while [ ! -e /root/order-done ]; do "
              "docker ps -q --filter label=io.sparkstack.managed=true | wc -l >> /root/order-samples; sleep 0.2; done ) & "
              "started=$(date +%s); systemctl start sglang-mistral4.service; echo rc=$?; "
              "echo took=$(( $(date +%s) - started )); "
              # docker run under TCG takes seconds to create the container: sample until it is there
              "for i in $(seq 120); do docker ps -q --filter name=sparkstack-mistral4 | grep -q . && break; sleep 0.5; done; "
              "sleep 1; touch /root/order-done; wait; "
              "echo max=$(sort -n /root/order-samples | tail -1) samples=$(wc -l < /root/order-samples)")
    result = vm_ssh(f"bash -c '{script}'", timeout=300)
    print(result.stdout)
    fields = dict(item.split("=") for item in result.stdout.split())
    assert fields["rc"] == "0" and fields["max"] == "1", result.stdout
    assert int(fields["took"]) >= 7  # the start waited for the 8 s stop
    assert running() == ["sparkstack-mistral4"]


def _restarted_through_the_gate(trigger: str) -> str:
    since = vm_ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    assert switch("qwen")[0] == 0
    hog(leave_gb=need_gb("qwen36") - 0.3, hold_s=25, extra_gb=0.05)
    assert vm_ssh(trigger).returncode == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        journal = vm_ssh(f"journalctl -u vllm-qwen36.service --since '{since}' --no-pager -o cat").stdout
        if "waiting for room for qwen36" in journal and running() == ["sparkstack-qwen36"]:
            return journal
        time.sleep(2)
    pytest.fail(f"qwen36 did not come back through the gate:\n{journal}")


def test_a_crash_restart_waits_for_room(deployed):
    journal = _restarted_through_the_gate("docker kill --signal=KILL sparkstack-qwen36")
    passed = [line for line in journal.splitlines() if line.startswith("sparkstack-memguard: room for qwen36:")]
    assert len(passed) >= 2, journal  # the first start and the restart both passed the gate


def test_a_docker_restart_restarts_the_model_through_the_gate(deployed):
    journal = _restarted_through_the_gate("systemctl restart docker")
    assert "waiting for room for qwen36" in journal


@pytest.mark.release_loop
def test_the_guard_stops_a_model_below_the_floor_and_it_stays_stopped(deployed):
    assert switch("qwen")[0] == 0
    hog(leave_gb=0.15)
    deadline = time.monotonic() + 30
    while vm_ssh("systemctl is-active vllm-qwen36.service").stdout.strip() == "active" and time.monotonic() < deadline:
        time.sleep(1)
    vm_ssh(f"systemctl stop {HOG}")
    time.sleep(15)  # longer than RestartSec: systemd must not bring it back
    assert vm_ssh("systemctl is-active vllm-qwen36.service").stdout.strip() == "inactive"
    assert running() == []
    text = vm_ssh("llm-switch status").stdout
    print(text)
    assert re.search(r"qwen36 stopped by the memory guard at \d\d:\d\d:\d\d: [\d.]+ GB available < 0\.3 GB", text), text
    guard = status()["memory_guard"]
    assert guard["service"] == "active" and guard["last_action"]["model"] == "qwen36"
    assert "stopping qwen36" in vm_ssh("journalctl -u sparkstack-memory-guard --since '-2 min' -o cat").stdout


def _profiles(tmp_path: Path, change) -> dict:
    models = tmp_path / "models"
    models.mkdir()
    for source in models_dir().glob("*.yaml"):
        (models / source.name).write_text(change(source.name, source.read_text()))
    return {"SPARKSTACK_MODELS_DIR": str(models)}


def test_a_changed_profile_is_not_already_hot(deployed, tmp_path):
    assert switch("qwen")[0] == 0
    env = _profiles(tmp_path, lambda name, text: text.replace("  fraction: 0.5 ", "  fraction: 0.6 ") if name == "qwen36.yaml" else text)
    try:
        assert deploy(env).changed
        found = drift(env)
        assert found.returncode == 1 and "Stale: qwen36 runs an older rendering" in found.stdout, found.stdout
        assert "stale: qwen36" in vm_ssh("llm-switch status").stdout
        code, out = switch("qwen")
        assert code == 0 and "older rendering" in out and "already hot" not in out, out
        inspect = json.loads(vm_ssh("docker inspect sparkstack-qwen36").stdout)[0]
        assert inspect["Config"]["Cmd"][inspect["Config"]["Cmd"].index("--gpu-memory-utilization") + 1] == "0.6"
        assert drift(env).returncode == 0
    finally:
        vm_ssh("llm-switch none")
        deploy()


def test_an_engine_change_retires_the_old_unit(deployed, tmp_path):
    def to_sglang(name, text):
        if name != "qwen36.yaml":
            return text
        text = re.sub(r"(?m)^engine: vllm.*$", "engine: sglang", text)
        text = re.sub(r'(?m)^engine_version: .*$', 'engine_version: ">0.5.9,<=0.5.10rc0"', text)
        text = re.sub(r"(?m)^speculative:\n(?:  .*\n)+", "", text)
        for field in ("language_model_only", "moe_backend"):
            text = re.sub(rf"(?m)^{field}: .*$", "", text)
        return text.replace("parser: qwen3_xml", "parser: qwen25")
    env = _profiles(tmp_path, to_sglang)
    try:
        result = deploy(env)
        assert "sparkstack retired models | Remove retired /etc/systemd/system/vllm-qwen36.service" in result.changed
        assert vm_ssh("test -e /etc/systemd/system/sglang-qwen36.service && "
                      "! test -e /etc/systemd/system/vllm-qwen36.service").returncode == 0
    finally:
        back = deploy()
        assert "sparkstack retired models | Remove retired /etc/systemd/system/sglang-qwen36.service" in back.changed
    assert vm_ssh("test -e /etc/systemd/system/vllm-qwen36.service").returncode == 0


def test_a_non_root_user_cannot_hold_the_switch_lock(deployed):
    held = vm_ssh("setpriv --reuid=nobody --regid=nogroup --clear-groups flock -n /run/sparkstack/lock/llm-switch.lock true 2>&1")
    assert held.returncode != 0 and "Permission denied" in held.stdout, held.stdout
    assert vm_ssh("stat -c %a /run/sparkstack/lock").stdout.strip() == "700"


@pytest.mark.parametrize("signal_name", ["INT", "HUP"])
def test_an_interrupted_switch_leaves_nothing_half_started(deployed, signal_name):
    set_knobs({"qwen36": {"load_delay_s": 40}})
    vm_ssh("rm -f /root/int.log /root/int.rc; "
           "(setsid llm-switch qwen > /root/int.log 2>&1; echo $? > /root/int.rc) > /dev/null 2>&1 &")
    deadline = time.monotonic() + 60
    while "starting qwen36" not in vm_ssh("cat /root/int.log").stdout and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(3)
    vm_ssh(f"pkill -{signal_name} -x llm-switch")
    deadline = time.monotonic() + 120
    while vm_ssh("cat /root/int.rc 2>/dev/null").stdout.strip() == "" and time.monotonic() < deadline:
        time.sleep(1)
    log = vm_ssh("cat /root/int.log").stdout
    print(log)
    assert vm_ssh("cat /root/int.rc").stdout.strip() == "1"
    assert f"interrupted by SIG{signal_name}: stopped the half-started qwen36; no model is hot" in log
    assert running() == []
    assert vm_ssh("systemctl is-active vllm-qwen36.service").stdout.strip() in ("inactive", "failed")
    assert vm_ssh("test -e /run/sparkstack/qwen36.variant").returncode != 0


def test_status_says_ready_for_an_exposed_model_to_a_user_without_the_key(deployed):
    # The stand-in asks for the key when VLLM_API_KEY is in its env (the secrets file), as vLLM does.
    vm_ssh("echo 'VLLM_API_KEY=sk-test-not-a-real-key-123456' >> /etc/sparkstack/secrets.env")
    try:
        assert switch("qwen")[0] == 0
        seen = vm_ssh("setpriv --reuid=nobody --regid=nogroup --clear-groups llm-switch status --json")
        qwen = next(m for m in json.loads(seen.stdout)["models"] if m["name"] == "qwen36")
        assert qwen["ready"] and "needs the API key" in qwen["readiness"], qwen
    finally:
        vm_ssh("sed -i '/^VLLM_API_KEY=sk-test-not-a-real-key-123456$/d' /etc/sparkstack/secrets.env; llm-switch none")


def test_earlyoom_runs_as_the_group_says_and_picks_the_engine_first(deployed):
    args = vm_ssh("ps -o args= -C earlyoom").stdout.strip()
    assert args.startswith("/usr/bin/earlyoom -M 5243,1024 -s 100,100"), args  # 524288 and 102400 KiB x 0.01
    assert "--prefer ^(vllm|VLLM::.*|sglang::.*)$" in args and "sshd|dockerd" in args
    assert switch("qwen")[0] == 0
    prefer = re.search(r"--prefer (\S+)", args).group(1)
    avoid = re.search(r"--avoid (\S+)", args).group(1)
    engine_pid = vm_ssh("pgrep -f /opt/standin/server.py").stdout.split()[0]
    assert vm_ssh(f"cat /proc/{engine_pid}/comm").stdout.strip() == "VLLM::EngineCor"  # named as vLLM names it
    vm_ssh("systemd-run --unit=sparkstack-test-user-python --collect --quiet python3 -c 'import time; time.sleep(60)'")
    # The same regexes, thresholds raised so that it would act now; --dryrun names its first victim.
    dry = vm_ssh(f"timeout 5 earlyoom --dryrun -m 99,99 -s 100,100 -r 0 --prefer '{prefer}' --avoid '{avoid}' 2>&1")
    vm_ssh("systemctl stop sparkstack-test-user-python")
    victim = re.search(r'sending SIG\w+ to process (\d+) uid \d+ "([^"]+)"', dry.stdout)
    assert victim and victim.group(1) == engine_pid, dry.stdout  # the engine, not a user's python3


def test_a_missing_launch_script_fails_the_start(deployed):
    script = "/usr/local/libexec/sparkstack/launch-qwen36"
    vm_ssh(f"mv {script} /root/launch-qwen36.away")
    try:
        started = vm_ssh("systemctl start vllm-qwen36.service")
        assert started.returncode != 0, started.stdout  # Type=exec: the start itself fails, not a later crash
        assert "failed" in started.stderr.lower() or "exit" in started.stderr.lower(), started.stderr
    finally:
        vm_ssh(f"systemctl stop vllm-qwen36.service; mv /root/launch-qwen36.away {script}; "
               "systemctl reset-failed vllm-qwen36.service")
