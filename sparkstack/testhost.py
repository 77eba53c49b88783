"""The test host, whichever driver runs it: `container` (the default: native speed, the hosts tier, CI) or `vm`
(the QEMU VM under TCG: the smoke tier, a real kernel).

Both drivers give the same thing: nodes named `sparkstack-testhost[-N]`, reached by ssh as a Spark is, each with
its own address on a private link (10.77.0.N on eth1), and the same functions below. The driver is
SPARKSTACK_TESTHOST_DRIVER when set, else the one that last started a host (recorded by `up`), else `container`.
"""

from __future__ import annotations

import os
import subprocess
from types import ModuleType

from sparkstack import testhost_container, testvm

DRIVERS: dict[str, ModuleType] = {"container": testhost_container, "vm": testvm}
DEFAULT_DRIVER = "container"
HOST_ALIAS = testhost_container.HOST_ALIAS
MAIN = ""
WORKER = "2"
LINK_INTERFACE = "eth1"
assert testvm.HOST_ALIAS == HOST_ALIAS and testvm.LINK_INTERFACE == LINK_INTERFACE


class TestHostError(Exception):
    pass


def cache_root():
    return testhost_container.cache_root()


def _driver_file():
    return cache_root() / "testhost-driver"


def driver_name() -> str:
    name = os.environ.get("SPARKSTACK_TESTHOST_DRIVER")
    if not name:
        try:
            name = _driver_file().read_text().strip()
        except FileNotFoundError:
            name = DEFAULT_DRIVER
    if name not in DRIVERS:
        raise TestHostError(f"SPARKSTACK_TESTHOST_DRIVER={name!r}: the drivers are {', '.join(DRIVERS)}")
    return name


def driver() -> ModuleType:
    return DRIVERS[driver_name()]


def max_nodes() -> int:
    return testhost_container.MAX_NODES if driver() is testhost_container else 2


def instances(nodes: int) -> list[str]:
    if not 1 <= nodes <= max_nodes():
        raise TestHostError(f"the {driver_name()} driver runs 1 to {max_nodes()} nodes, not {nodes}")
    return ["" if n == 1 else str(n) for n in range(1, nodes + 1)]


def alias(instance: str = MAIN) -> str:
    return f"{HOST_ALIAS}-{instance}" if instance else HOST_ALIAS


def link_address(instance: str = MAIN) -> str:
    return f"10.77.0.{int(instance) if instance else 1}"


def up(fresh: bool = False, instance: str = MAIN) -> dict:
    name = driver_name()
    cache_root().mkdir(parents=True, exist_ok=True)
    _driver_file().write_text(name + "\n")
    try:
        return DRIVERS[name].up(fresh=fresh, instance=instance)
    except (testhost_container.TestHostError, testvm.TestVMError) as exc:
        raise TestHostError(str(exc)) from None


def down(instance: str = MAIN) -> bool:
    return driver().down(instance)


def ssh_config_file(instance: str = MAIN):
    return driver().ssh_config_file(instance)


def ssh_command(instance: str = MAIN) -> list[str]:
    return driver().ssh_command(instance)


def ssh(command: str, timeout: float = 60, instance: str = MAIN) -> subprocess.CompletedProcess:
    return driver().ssh(command, timeout=timeout, instance=instance)


def system_state(instance: str = MAIN) -> str | None:
    return driver().system_state(instance)


def status(instance: str = MAIN) -> dict:
    return driver().status(instance) | {"driver": driver_name()}


def inventory_entry(instance: str = MAIN, name: str | None = None) -> tuple[str, dict] | None:
    return driver().inventory_entry(instance, name)


def progress(message: str) -> None:
    driver().progress(message)
