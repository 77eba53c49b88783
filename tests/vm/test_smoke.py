"""The smoke on the QEMU VM: boot, deploy, host checks (one switch among them), no drift but a planted one.

The checks are the hosts tier's own functions and the same testinfra host checks, run here against the VM
(tests/vm/conftest.py), so the two tiers cannot drift apart. A drift run costs a minute of TCG, so the smoke
runs one: with one change planted, drift must report that change and nothing else ("1 operation(s) would
change"), which is "no drift" after the deploy for every other operation and "a planted drift is caught" in one
run. The hosts tier runs the two apart, heals the drift with a deploy, on both Debian releases.
"""

from sparkstack import testhost
from tests.hosts.conftest import drift, vm_ssh
from tests.hosts.test_1_deploy_loop import (  # noqa: F401 (collected here by pytest)
    PLANTED,
    test_fresh_deploy_changes_the_host,
    test_host_checks_pass_against_the_deployed_host,
)


def test_the_vm_booted_its_own_kernel_with_systemd_as_pid_1(main_node):
    assert testhost.driver_name() == "vm"
    assert vm_ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    assert vm_ssh("systemctl is-system-running").stdout.strip() in ("running", "degraded")
    # A container would share this machine's kernel; the VM runs Debian's.
    assert vm_ssh("uname -r").stdout.strip().endswith("-amd64")


UNIT = "/etc/systemd/system/vllm-qwen36.service"


def test_drift_after_the_deploy_is_only_the_one_planted_on_the_vm(deployed):
    command, expected = PLANTED["unit edited"]
    assert vm_ssh(command).returncode == 0
    try:
        result = drift()
        assert result.returncode == 1, result.stdout + result.stderr
        # Exactly one: every operation but the planted one is as the deploy left it.
        assert "drift: 1 operation(s) would change:" in result.stdout, result.stdout
        for line in expected:
            assert line in result.stdout, result.stdout
    finally:
        # Put back by hand, so the smoke's other checks hold in any order.
        assert vm_ssh(f"sed -i 's/^RestartSec=11$/RestartSec=10/' {UNIT}").returncode == 0
