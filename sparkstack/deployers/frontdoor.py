"""The front door deployer: one OpenAI-compatible endpoint on the host, whatever model is hot.

Installs python3-aiohttp from the distribution, the door's own system user, the program and its unit
(enabled and running, unlike the models), and the switch socket it asks for on-demand switches on
(listening only while the group sets sparkstack_frontdoor_on_demand). The door is restarted only when its
program, its unit or the registry it reads changed.
"""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import server, systemd
from pyinfra.operations.util import any_changed

from sparkstack.deployers.helpers import distribution_package, put_component
from sparkstack.groups import GroupSettings
from sparkstack.render import FRONTDOOR_UNIT, FRONTDOOR_USER, SWITCH_SOCKET_UNIT, Rendering

COMPONENT = "frontdoor"
PACKAGE = "python3-aiohttp"


@deploy("sparkstack front door")
def frontdoor(rendering: Rendering, settings: GroupSettings, registry_op, package_ops: list) -> None:
    distribution_package(PACKAGE, "the front door's HTTP server and client")
    server.group(name=f"Group {FRONTDOOR_USER} (may ask for switches on the switch socket)", group=FRONTDOOR_USER,
                 system=True)
    server.user(name=f"User {FRONTDOOR_USER} (runs the front door)", user=FRONTDOOR_USER, group=FRONTDOOR_USER,
                system=True, shell="/usr/sbin/nologin", home="/nonexistent", create_home=False)
    ops = put_component(rendering, COMPONENT)
    systemd.daemon_reload(name="Reload systemd (a front door unit changed)",
                          _if=any_changed(ops["frontdoor-unit"], ops["switch-socket"], ops["switch-request-unit"]))
    on_demand = settings.frontdoor_on_demand
    systemd.service(name=f"{SWITCH_SOCKET_UNIT} {'listening' if on_demand else 'off'} (on-demand switching "
                         f"{'on' if on_demand else 'off'})", service=SWITCH_SOCKET_UNIT, running=on_demand, enabled=on_demand)
    systemd.service(name=f"Run {FRONTDOOR_UNIT}, enabled at boot", service=FRONTDOOR_UNIT, running=True, enabled=True)
    systemd.service(name=f"Restart {FRONTDOOR_UNIT} (its program, the host package, its unit or the registry changed)",
                    service=FRONTDOOR_UNIT, restarted=True,
                    _if=any_changed(ops["frontdoor"], ops["frontdoor-unit"], registry_op, *package_ops))
