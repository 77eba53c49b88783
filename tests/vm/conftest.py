"""The vm tier: the hosts tier's session fixtures, on the QEMU VM instead of a container.

A container shares this machine's kernel; the VM boots its own (Debian's, under TCG), with its own systemd as
PID 1, udev and a real disk. The smoke checks that the deploy holds on such a host; everything else is the
hosts tier's (tests/README.md).
"""

import os

os.environ["SPARKSTACK_TESTHOST_DRIVER"] = "vm"

from tests.hosts.conftest import (  # noqa: E402,F401 (fixtures, used by name)
    artifact_servers,
    deployed,
    main_node,
    registry_and_hub_reachable,
    ssh_config,
)
