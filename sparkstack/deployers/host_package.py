"""The host package: sparkstack_host under /usr/local/lib/sparkstack, which every host program's shim runs.

It goes first: the fetcher, the switch, the guard and the door all run from it. The operations it returns let
the long-running services (the guard and the door) restart only when their code changed.
"""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from sparkstack.deployers.helpers import put_component
from sparkstack.render import Rendering
from sparkstack_host.contract import HOST_LIB

COMPONENT = "host-package"


@deploy("sparkstack host package")
def host_package(rendering: Rendering) -> list:
    for path in (HOST_LIB, f"{HOST_LIB}/sparkstack_host"):
        files.directory(name=f"Directory {path}", path=path, user="root", group="root", mode="0755")
    return list(put_component(rendering, COMPONENT).values())
