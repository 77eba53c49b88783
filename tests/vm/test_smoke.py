"""The smoke on the QEMU VM: boot, deploy, host checks, no drift, one planted drift caught and healed, a switch.

The checks are the hosts tier's own functions, run here against the VM (tests/vm/conftest.py), so the two tiers
cannot drift apart.
"""

from sparkstack import testhost
from tests.hosts.conftest import vm_ssh
from tests.hosts.test_1_deploy_loop import (  # noqa: F401 (collected here by pytest)
    test_drift_is_clean_after_a_deploy,
    test_drift_planted_on_the_host_is_reported_and_healed,
    test_fresh_deploy_changes_the_host,
    test_host_checks_pass_against_the_deployed_host,
    test_second_deploy_reports_zero_changes,
)
from tests.hosts.test_2_switch import switch, status


def test_the_vm_booted_its_own_kernel_with_systemd_as_pid_1(main_node):
    assert testhost.driver_name() == "vm"
    assert vm_ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    assert vm_ssh("systemctl is-system-running").stdout.strip() in ("running", "degraded")
    # A container would share this machine's kernel; the VM runs Debian's.
    assert vm_ssh("uname -r").stdout.strip().endswith("-amd64")


def test_one_switch_makes_qwen_hot_and_none_stops_it(deployed):
    code, out = switch("qwen")
    assert code == 0, out
    assert status()["hot"] == "qwen36"
    code, out = switch("none")
    assert code == 0, out
    assert status()["hot"] is None
