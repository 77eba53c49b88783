"""What every deployer does the same way: put a rendered file, install a distribution package.

A rendered file goes on the host as `sparkstack render` shows it, always with its owner, group and mode;
the returned operation tells the caller whether it changed (and so whether to reload or restart).
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import DeployError
from pyinfra.facts.deb import DebPackage
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files

from sparkstack.render import Rendering, RenderedFile


def put_rendered(rendered: RenderedFile, label: str | None = None):
    return files.put(name=f"{label or rendered.kind.capitalize()} {rendered.path}", src=StringIO(rendered.content),
                     dest=rendered.path, user=rendered.user, group=rendered.group, mode=rendered.mode)


def put_component(rendering: Rendering, component: str) -> dict:
    """Every file the component's deployer owns, as {kind: operation}."""
    return {rendered.kind: put_rendered(rendered) for rendered in rendering.of(component)}


def distribution_package(package: str, purpose: str) -> None:
    """apt install of one package from the distribution; only a host without it pays for an index update,
    so a converged host changes nothing."""
    if not host.get_fact(Which, command="apt-get"):
        raise DeployError(f"{host.name}: sparkstack installs {package} ({purpose}) with apt; this host has no apt-get")
    if not host.get_fact(DebPackage, package=package):
        apt.update(name=f"Update the package index ({package} is missing)")
    apt.packages(name=f"{package}, {purpose}", packages=[package])
