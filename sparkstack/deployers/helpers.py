"""What every deployer does the same way: put a rendered file, install a distribution package.

A rendered file goes on the host as `sparkstack render` shows it, always with its owner, group and mode;
the returned operation tells the caller whether it changed (and so whether to reload or restart).
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import DeployError
from pyinfra.facts.deb import DebPackage
from pyinfra.facts.server import Command, Which
from pyinfra.operations import apt, files

from sparkstack.render import SECRETS_PATH, Rendering, RenderedFile
from sparkstack_host import secrets as host_secrets


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


def secrets_rule_command(*args: str, tolerate_failure: bool = False) -> str:
    """Run the secrets module's own source on the host (`python3 - ARGS`), so the file's rule has one definition
    and nothing of the host package needs to be installed yet."""
    source = Path(host_secrets.__file__).read_text()
    tail = " || true" if tolerate_failure else ""
    return f"python3 - {' '.join(args)} <<'SPARKSTACK_SECRETS_RULE'{tail}\n{source}\nSPARKSTACK_SECRETS_RULE"


def secret_is_set(name: str) -> bool:
    """Whether the host's secrets file sets NAME: its lines are counted, never read out. (pyinfra's Command fact is
    None for no output, which is what grep gives on a file this run has yet to make.)"""
    count = host.get_fact(Command, command=f"grep -c '^{name}=..*' {SECRETS_PATH} 2>/dev/null || true")
    return str(count or "").strip() not in ("", "0")
