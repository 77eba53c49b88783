"""The test VM's registry and Hugging Face hub: real servers on this machine's loopback, reached from the VM's.

  registry  Debian's docker-registry (distribution 2.8), with a config of its own: the packaged one
            turns on htpasswd auth, so every request would get 401
  hub       olah (PyPI) in offline mode, serving plain local git repos as a Hugging Face endpoint

Both listen on free ports on 127.0.0.1 here; one `ssh -R` puts them on the VM's 127.0.0.1:5000 and
127.0.0.1:5080 (the addresses group_data/testhost.py gives the deploy), where docker treats the
registry as insecure by default and containers started with --network host find the hub.

`python tests/artifact_servers.py up` starts them for `make demo` (state under build/artifact-servers),
makes the repos, pushes the stand-in image and locks the test VM's group; `down` stops them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sparkstack import testhost  # noqa: E402
from sparkstack.remote import free_port  # noqa: E402

VM_REGISTRY = "127.0.0.1:5000"
VM_HUB_PORT = 5080
STANDIN_LOCAL = "sparkstack-standin-engine:latest"
STANDIN_PUSHED = f"{VM_REGISTRY}/sparkstack/standin-engine:latest"
# The stand-in with Ray in it, for the cluster group (group_data/testcluster.py).
STANDIN_RAY_LOCAL = "sparkstack-standin-engine-ray:latest"
STANDIN_RAY_PUSHED = f"{VM_REGISTRY}/sparkstack/standin-engine-ray:latest"
REGISTRY_BINARY = "/usr/bin/docker-registry"
GIT = ["git", "-c", "user.email=tests@sparkstack.invalid", "-c", "user.name=sparkstack tests"]


def olah_binary() -> str:
    return str(Path(sys.executable).with_name("olah-cli"))


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path, wait_s: float = 60) -> None:
    import socket

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode}: {log.read_text()[-1500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {wait_s:g} s: {log.read_text()[-1500:]}")


@dataclass
class ArtifactServers:
    root: Path
    registry_port: int = 0
    hub_port: int = 0

    def __post_init__(self):
        self._tunnels: dict[str, subprocess.Popen] = {}
        self._pids: dict[str, int] = {}

    @property
    def mirrors(self) -> Path:
        return self.root / "mirrors"

    def pids(self) -> Path:
        return self.root / "pids.json"

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.mirrors.mkdir(exist_ok=True)
        self.registry_port, self.hub_port = free_port(), free_port()
        config = self.root / "registry.yml"
        config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.root / 'registry'}\n"
                          f"http:\n  addr: 127.0.0.1:{self.registry_port}\n")
        registry_log = self.root / "registry.log"
        registry = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=registry_log.open("w"),
                                    stderr=subprocess.STDOUT, start_new_session=True)
        olah_config = self.root / "olah.toml"
        # mirror-netloc: the address clients use (the VM's end of the tunnel), which olah writes into URLs.
        olah_config.write_text(
            f'[basic]\nhost = "127.0.0.1"\nport = {self.hub_port}\nmirror-netloc = "127.0.0.1:{VM_HUB_PORT}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{VM_HUB_PORT}"\nmirrors-path = ["{self.mirrors}"]\n'
            f'repos-path = "{self.root / "olah-cache"}"\n[accessibility]\noffline = true\n')
        hub_log = self.root / "olah.log"
        hub = subprocess.Popen([olah_binary(), "-c", str(olah_config)], stdout=hub_log.open("w"), stderr=subprocess.STDOUT,
                               cwd=self.root, start_new_session=True)
        self._save({"registry": registry.pid, "hub": hub.pid})
        wait_for_port(self.registry_port, registry, "docker-registry", registry_log)
        wait_for_port(self.hub_port, hub, "olah", hub_log)
        self._pids = {"registry": registry.pid, "hub": hub.pid}
        self.open_tunnel()
        testhost.progress(f"registry and hub reachable in the VM at {VM_REGISTRY} and 127.0.0.1:{VM_HUB_PORT}")

    def open_tunnel(self, wait_s: float = 30, instance: str = testhost.MAIN) -> None:
        """One `ssh -R` for both servers into one VM. A VM reboot ends it: `reachable()` opens a new one."""
        tunnel_log = self.root / f"tunnel{instance}.log"
        # A tunnel left by an interrupted run (a kept VM) would hold the VM's ports: end its sshd session.
        testhost.ssh("for p in 5000 5080; do ss -ltnpH \"sport = :$p\" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | "
                   "xargs -r kill; done; true", instance=instance)
        command = testhost.ssh_command(instance)
        tunnel = subprocess.Popen(
            command[:1] + ["-N", "-o", "ControlMaster=no", "-o", "ControlPath=none",
                           "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5",
                           "-o", "ServerAliveCountMax=3",
                           "-R", f"{VM_REGISTRY}:127.0.0.1:{self.registry_port}",
                           "-R", f"127.0.0.1:{VM_HUB_PORT}:127.0.0.1:{self.hub_port}"]
            + command[1:], stdout=tunnel_log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
        self._tunnels[instance] = tunnel
        self._save({**self._pids, **{f"tunnel{i}": t.pid for i, t in self._tunnels.items()}})
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if tunnel.poll() is not None:
                raise RuntimeError(f"ssh -R to the VM failed: {tunnel_log.read_text()[-800:]}")
            if self._answers(instance) and tunnel.poll() is None and (time.sleep(1) or tunnel.poll() is None):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the registry did not answer through the tunnel within {wait_s:g} s")

    def attach(self, instance: str) -> None:
        """Make the servers reachable from another VM too (the cluster tests' worker)."""
        self.open_tunnel(instance=instance)

    def detach(self, instance: str) -> None:
        tunnel = self._tunnels.pop(instance, None)
        if tunnel is not None and tunnel.poll() is None:
            tunnel.terminate()
            tunnel.wait(timeout=10)

    def _answers(self, instance: str = testhost.MAIN) -> bool:
        probe = testhost.ssh(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{VM_REGISTRY}/v2/ && "
                           f"curl -s -m 5 -o /dev/null -w ' %{{http_code}}' http://127.0.0.1:{VM_HUB_PORT}/api/models/none/none",
                           instance=instance)
        return probe.stdout.startswith("200")

    def reachable(self) -> None:
        """Make sure every attached VM reaches both servers (after a reboot the old tunnel is dead or dying)."""
        for instance, tunnel in list(self._tunnels.items()):
            if tunnel.poll() is None and self._answers(instance):
                continue
            testhost.progress(f"the tunnel to {testhost.alias(instance)} is gone (a reboot?); opening a new one")
            if tunnel.poll() is None:
                tunnel.terminate()
                tunnel.wait(timeout=10)
            self.open_tunnel(wait_s=60, instance=instance)

    def _save(self, pids: dict) -> None:
        self.pids().write_text(json.dumps(pids))

    def stop(self) -> None:
        if not self.pids().is_file():
            return
        for pid in json.loads(self.pids().read_text()).values():
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        self.pids().unlink()

    def served(self) -> dict:
        """What the two servers have answered so far, from their own logs: requests and registry bytes."""
        import re

        # The reachability probes (`_answers`: GET /v2/ and /api/models/none/none) are not artifact traffic.
        registry = [line for line in (self.root / "registry.log").read_text().splitlines()
                    if 'msg="response completed"' in line and not re.search(r'http\.request\.uri="?/v2/"?(\s|$)', line)]
        written = sum(int(m.group(1)) for line in registry for m in [re.search(r"http\.response\.written=(\d+)", line)] if m)
        hub = [line for line in (self.root / "olah.log").read_text().splitlines()
               if re.search(r'"(GET|HEAD) /', line) and "/api/models/none/none" not in line]
        return {"registry_requests": len(registry), "registry_bytes": written, "hub_requests": len(hub)}

    # --- content ----------------------------------------------------------------------
    def repo_path(self, repo: str) -> Path:
        return self.mirrors / "models" / repo

    def make_repo(self, repo: str, weights_bytes: int) -> str:
        """A small model repo as olah serves it: a git repo with configs, weights in both Mistral formats and a README."""
        path = self.repo_path(repo)
        if (path / ".git").is_dir():
            return self.head(repo)
        path.mkdir(parents=True)
        subprocess.run(GIT + ["init", "-q", "-b", "main", str(path)], check=True)
        (path / "config.json").write_text(json.dumps({"architectures": ["StandIn"], "repo": repo}) + "\n")
        (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "repo": repo}) + "\n")
        (path / "model-00001-of-00001.safetensors").write_bytes(os.urandom(weights_bytes))
        # The second weight format Mistral repos carry; the engines' patterns skip it.
        (path / "consolidated.safetensors").write_bytes(os.urandom(max(1, weights_bytes // 4)))
        (path / "README.md").write_text(f"# {repo}\nA test repo for sparkstack.\n")
        return self.commit(repo, "initial weights")

    def commit(self, repo: str, message: str, change: str | None = None) -> str:
        path = self.repo_path(repo)
        if change is not None:
            (path / "config.json").write_text(json.dumps({"architectures": ["StandIn"], "repo": repo, "change": change}) + "\n")
        subprocess.run(GIT + ["-C", str(path), "add", "-A"], check=True)
        subprocess.run(GIT + ["-C", str(path), "commit", "-q", "-m", message], check=True)
        return self.head(repo)

    def head(self, repo: str) -> str:
        return subprocess.run(["git", "-C", str(self.repo_path(repo)), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def reset(self, repo: str, commit: str) -> None:
        subprocess.run(GIT + ["-C", str(self.repo_path(repo)), "reset", "-q", "--hard", commit], check=True)

    def push_standin(self, ray: bool = False) -> str:
        """Push the stand-in engine from this machine's docker to the registry under the tag the test groups use
        (the hosts pull it from 127.0.0.1:5000, the tunnel's end; the registry is the same)."""
        from tests.standin_engine.image import push

        local, pushed = (STANDIN_RAY_LOCAL, STANDIN_RAY_PUSHED) if ray else (STANDIN_LOCAL, STANDIN_PUSHED)
        return push(local, f"127.0.0.1:{self.registry_port}", pushed.split("/", 1)[1], storage=self.root / "registry")


def test_repos(group: str = "testhost") -> list[str]:
    """Every model and draft repo a test group deploys, read from the profiles (SPARKSTACK_MODELS_DIR applies)."""
    from sparkstack.artifacts import intents
    from sparkstack.groups import load_group_settings
    from sparkstack.memory import make_plan
    from sparkstack.profiles import load_profiles

    settings = load_group_settings(group)
    plan = make_plan(group, [lp.profile for lp in load_profiles()], settings)
    return sorted(intents(plan.deployable, settings).repos)


def wipe_artifacts(images: bool = True) -> None:
    """What a wiped Spark has: no engine images and an empty model cache (the host keeps its OS)."""
    from sparkstack.groups import load_group_settings

    cache = load_group_settings("testhost").model_cache_dir
    prune = "docker image prune -af >/dev/null; " if images else ""
    result = testhost.ssh(f"docker ps -aq | xargs -r docker rm -f >/dev/null; {prune}"
                          f"rm -rf {cache}/hub; docker images -aq | wc -l", timeout=300)
    if images:
        assert result.stdout.strip() == "0", result.stdout + result.stderr


def prepare(root: Path, weights_bytes: int) -> ArtifactServers:
    """Servers up, repos made, the stand-in pushed, the group locked from the VM; the VM's copies wiped."""
    from tests.standin_engine.image import load_here

    servers = ArtifactServers(root)
    servers.stop()
    try:
        _prepare(servers, weights_bytes, load_here)
    except BaseException:
        servers.stop()
        raise
    return servers


def _prepare(servers: ArtifactServers, weights_bytes: int, load_here) -> None:
    servers.start()
    for repo in test_repos():
        servers.make_repo(repo, weights_bytes)
    load_here()
    servers.push_standin()
    # The hub's repos were made afresh: a lock from an earlier session pins (and keeps for rollback) commits it no
    # longer has.
    from sparkstack.lockfile import lock_path
    lock_path("testhost").unlink(missing_ok=True)
    lock = subprocess.run([str(Path(sys.executable).with_name("sparkstack")), "lock", "--host", testhost.HOST_ALIAS, "--upgrade"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if lock.returncode != 0:
        raise RuntimeError(f"sparkstack lock failed:\n{lock.stdout}\n{lock.stderr[-3000:]}")
    testhost.progress(lock.stdout.strip().splitlines()[-1])
    # Under TCG a pull costs the VM minutes, and the lock has just pulled the stand-in there: the VM smoke keeps
    # it (its deploy then finds the pinned image); the hosts tier deploys onto a wiped host, images and all.
    wipe_artifacts(images=testhost.driver_name() != "vm")


if __name__ == "__main__":
    state = ROOT / "build" / "artifact-servers"
    if sys.argv[1:] == ["up"]:
        ArtifactServers(state).stop()
        shutil.rmtree(state, ignore_errors=True)
        prepare(state, weights_bytes=4 * 1024 * 1024)
    elif sys.argv[1:] == ["down"]:
        ArtifactServers(state).stop()
    else:
        sys.exit("usage: python tests/artifact_servers.py up|down")
