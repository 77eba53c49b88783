"""The memory guards deployer: the gate every model start passes, the watchdog, and earlyoom.

On a Spark the kernel's own limits do not see CUDA allocations and the host wedges instead of
OOM-killing. Three layers, each installed here:
  * sparkstack-memguard wait-for-room: every model unit's ExecStartPre (and llm-switch) waits,
    bounded, until MemAvailable covers the model and the reserve;
  * sparkstack-memory-guard.service: stops the hot model below an absolute floor;
  * earlyoom (Debian/Ubuntu package) with absolute KiB thresholds, engines first.
"""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import systemd
from pyinfra.operations.util import any_changed

from sparkstack.deployers.helpers import distribution_package, put_component
from sparkstack.render import MEMORY_GUARD_UNIT, Rendering

COMPONENT = "memory-guards"


@deploy("sparkstack memory guards")
def memory_guards(rendering: Rendering, package_ops: list) -> None:
    distribution_package("earlyoom", "the kernel-level backstop")
    ops = put_component(rendering, COMPONENT)
    systemd.daemon_reload(name="Reload systemd (a memory-guard unit changed)",
                          _if=any_changed(ops["guard-unit"], ops["earlyoom-config"]))
    systemd.service(name=f"Run {MEMORY_GUARD_UNIT}, enabled at boot", service=MEMORY_GUARD_UNIT, running=True, enabled=True)
    systemd.service(name=f"Restart {MEMORY_GUARD_UNIT} (its program, the host package or its unit changed)",
                    service=MEMORY_GUARD_UNIT, restarted=True,
                    _if=any_changed(ops["memguard"], ops["guard-unit"], *package_ops))
    systemd.service(name="Run earlyoom.service, enabled at boot", service="earlyoom.service", running=True, enabled=True)
    systemd.service(name="Restart earlyoom.service (its thresholds changed)", service="earlyoom.service",
                    restarted=True, _if=any_changed(ops["earlyoom-config"]))
