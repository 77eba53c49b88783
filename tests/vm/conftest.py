"""The vm tier: the hosts tier's session fixtures, on the QEMU VM instead of a container.

A container shares this machine's kernel; the VM boots its own (Debian's, under TCG), with its own systemd as
PID 1, udev and a real disk. Under TCG every process the VM starts costs 10 to 50 times its native time, so the
smoke deploys one model (tests/vm/models: the shipped qwen36 profile, linked, not copied): one image, one
snapshot, one switch. Everything else is the hosts tier's (tests/README.md).
"""

import os
from pathlib import Path

os.environ["SPARKSTACK_TESTHOST_DRIVER"] = "vm"
os.environ["SPARKSTACK_MODELS_DIR"] = str(Path(__file__).resolve().parent / "models")

from tests.hosts.conftest import (  # noqa: E402,F401 (fixtures, used by name)
    artifact_servers,
    deployed,
    main_node,
    registry_and_hub_reachable,
    ssh_config,
)
