"""The smoke on the QEMU VM: boot, deploy, host checks (one switch among them), no drift.

The checks are the hosts tier's own functions and the same testinfra host checks, run here against the VM
(tests/vm/conftest.py), so the two tiers cannot drift apart. A planted drift is caught and healed by the hosts
tier on both Debian releases; on the VM that check adds nothing a kernel changes (it is pyinfra's facts over
ssh) and cost a minute of TCG, so the smoke leaves it out.
"""

from sparkstack import testhost
from tests.hosts.conftest import vm_ssh
from tests.hosts.test_1_deploy_loop import (  # noqa: F401 (collected here by pytest)
    test_drift_is_clean_after_a_deploy,
    test_fresh_deploy_changes_the_host,
    test_host_checks_pass_against_the_deployed_host,
)


def test_the_vm_booted_its_own_kernel_with_systemd_as_pid_1(main_node):
    assert testhost.driver_name() == "vm"
    assert vm_ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    assert vm_ssh("systemctl is-system-running").stdout.strip() in ("running", "degraded")
    # A container would share this machine's kernel; the VM runs Debian's.
    assert vm_ssh("uname -r").stdout.strip().endswith("-amd64")

