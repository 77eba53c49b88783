"""The hosts tier: one fresh test host per session (the container driver unless SPARKSTACK_TESTHOST_DRIVER
says otherwise), the stand-in engine loaded, helpers to deploy and check.

Set SPARKSTACK_KEEP_VM=1 to leave the hosts running afterwards (and reuse running ones).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sparkstack import testhost
from sparkstack.lockfile import lock_path
from sparkstack.paths import repo_root
from tests.artifact_servers import ArtifactServers, prepare

BIN = Path(sys.executable).parent


@dataclass
class DeployResult:
    changed: list[str]
    unchanged: int
    errors: list[str]
    seconds: float


def run(command: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    full_env = os.environ | (env or {})
    return subprocess.run(command, capture_output=True, text=True, cwd=repo_root(), env=full_env, timeout=timeout)


# The session's registry and hub (set by the `vm` fixture): every deploy may need them.
SERVERS: list[ArtifactServers] = []


def servers_reachable() -> None:
    for servers in SERVERS:
        servers.reachable()


def deploy(env: dict | None = None, limit: str = "testhost") -> DeployResult:
    """`pyinfra -y inventory.py deploy.py --limit testhost`, with pyinfra's own count of changes."""
    import time

    servers_reachable()
    started = time.monotonic()
    result = run([str(BIN / "pyinfra"), "-y", "--json", "inventory.py", "deploy.py", "--limit", limit], env=env)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout)["results"]
    changed = [op["name"] for op in results["operations"] if op["success"]]
    errors = [op["name"] for op in results["operations"] if op["error"]]
    return DeployResult(changed, results["totals"]["no_change"], errors, seconds)


def drift(env: dict | None = None, limit: str | None = "testhost") -> subprocess.CompletedProcess:
    return run([str(BIN / "sparkstack"), "drift", *(["--limit", limit] if limit else [])], env=env)


def vm_ssh(command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return testhost.ssh(command, timeout=timeout)


# Each test repo's weight file; small, so the loop stays quick (the benchmark uses larger ones).
WEIGHTS_BYTES = 4 * 1024 * 1024


@pytest.fixture(scope="session")
def main_node(tmp_path_factory):
    """A fresh VM with the registry and hub reachable from it, the group locked there, and no artifacts on it
    (a wiped Spark): the first deploy pulls and fetches everything."""
    keep = os.environ.get("SPARKSTACK_KEEP_VM") == "1"
    os.environ.setdefault("SPARKSTACK_TESTHOST_DRIVER", "container")
    info = testhost.up(fresh=not keep)
    servers = prepare(tmp_path_factory.mktemp("artifact-servers"), WEIGHTS_BYTES)
    info["servers"] = servers
    SERVERS.append(servers)
    yield info
    SERVERS.clear()
    servers.stop()
    if not keep:
        testhost.down()


@pytest.fixture(scope="session")
def artifact_servers(main_node) -> ArtifactServers:
    return main_node["servers"]


@pytest.fixture(autouse=True)
def registry_and_hub_reachable(request):
    """Tests that reboot the VM end the tunnel; every VM test starts with the servers reachable."""
    if SERVERS:
        servers_reachable()


def locked() -> dict:
    """The test VM's lock as `sparkstack lock` wrote it."""
    return json.loads(lock_path("testhost").read_text())


def pinned_image() -> str:
    return next(iter(locked()["images"].values()))["pinned"]


@pytest.fixture(scope="session")
def deployed(main_node):
    """The VM after a first deploy; records how that deploy went."""
    return deploy()


@pytest.fixture(scope="session")
def ssh_config(main_node, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "testhost.ssh"
    path.write_text(testhost.ssh_config_file().read_text())
    return path
