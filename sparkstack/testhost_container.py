"""The container test host: a real Debian 12 systemd host with sshd and docker, in a docker container.

Each node is one systemd container, reached over ssh at its own address like a Spark. Native speed: this
machine has no usable KVM, and the VM under TCG costs 10-50x (see sparkstack/testvm.py, now the smoke).

  image      an mmdebstrap rootfs (the VM's packages, less the kernel) loaded with `docker import`, cached
             as a tarball keyed by the recipe below, as the VM image is
  networks   two docker networks that the driver creates: `sparkstack-hosts` (eth0, ssh from this machine,
             like the VM's user network) and `sparkstack-link` (eth1, internal, the nodes' private link with
             the VM's addresses 10.77.0.N)
  node N     its own address on each network, its own /var/lib/docker (a bind mount, so inner docker gets
             overlay2), a memory limit with lxcfs's /proc/meminfo bound over its own, and sshd with the test key
  inner docker   dockerd's cgroup parent is the node's own cgroup, so what the node's containers touch counts
             against the node's memory limit and shows in its /proc/meminfo, as on a Spark

`--privileged` fails on these machines (no CAP_SYS_RESOURCE); the flags below are what works (issue 20).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sparkstack.remote import ssh_base

HOST_ALIAS = "sparkstack-testhost"
MAIN = ""
WORKER = "2"
MAX_NODES = 4
LINK_INTERFACE = "eth1"
# The Debian releases a node can run: they bracket DGX OS 7 (Ubuntu 24.04: systemd 255, Python 3.12, aiohttp 3.9)
# from below (12: systemd 252, Python 3.11, aiohttp 3.8) and from above (13: systemd 257, Python 3.13, aiohttp 3.11).
RELEASES = ("bookworm", "trixie")
DEFAULT_RELEASE = "bookworm"
# The VM's packages (sparkstack/testvm.py) less what a container does not boot: the kernel, udev, kmod, apparmor.
PACKAGES = (
    "systemd-sysv", "dbus", "openssh-server", "python3", "docker.io", "ca-certificates", "iproute2", "procps",
    "curl", "earlyoom", "python3-aiohttp", "python3-prometheus-client", "pigz", "nftables", "sudo",
)
# What a release needs beyond that: Debian 13 split the docker command out of docker.io into docker-cli, which
# docker.io only recommends (found by the deploy loop on trixie: the fetcher's `docker pull` had no `docker`).
RELEASE_PACKAGES = {"bookworm": (), "trixie": ("docker-cli",)}
MEMORY = "2g"
# The node's /var/lib/sparkstack (the model cache) is a filesystem of its own, as the VM's disk was: a sparse ext4
# image, loop-mounted here. The disk preflight test fills it; on the shared overlay it would fill this machine.
DATA_DIR = "/var/lib/sparkstack"
DATA_SIZE = "2G"
BOOT_TIMEOUT_S = 120
LXCFS_ROOT = Path("/var/lib/lxcfs")
# Units that cannot work in a container and would leave systemd `degraded`; the host checks want `running`.
MASKED_UNITS = ("systemd-modules-load.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
                "sys-kernel-tracing.mount", "systemd-remount-fs.service", "getty@tty1.service",
                "console-getty.service", "systemd-sysctl.service")
# Bump when the recipe changes in a way the package list above does not show.
RECIPE_VERSION = "4"
# A sudoer beside root, as on DGX OS (its first user is a sudoer; root has no login): the day-2 commands
# (`sparkstack status`, `switch`, `logs`, `stop`) are tested as this user with --sudo.
SUDOER = "spark"
# What works here as root without CAP_SYS_RESOURCE (issue 20's measurements).
RUN_FLAGS = (
    "--cap-add=ALL", "--cap-drop=SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm", "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp", "-e", "container=docker",
    "--stop-signal", "SIGRTMIN+3", "--restart", "on-failure",
)

REQUIRED_TOOLS = {
    "mmdebstrap": "apt-get install mmdebstrap",
    "docker": "apt-get install docker.io",
    "ssh": "apt-get install openssh-client",
    "ssh-keygen": "apt-get install openssh-client",
}


class TestHostError(Exception):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("SPARKSTACK_CACHE", Path.home() / ".cache" / "sparkstack"))


def release() -> str:
    """SPARKSTACK_TESTHOST_RELEASE, else the default."""
    name = os.environ.get("SPARKSTACK_TESTHOST_RELEASE", DEFAULT_RELEASE)
    if name not in RELEASES:
        raise TestHostError(f"SPARKSTACK_TESTHOST_RELEASE={name!r}: the releases are {', '.join(RELEASES)}")
    return name


def packages(suite: str) -> tuple[str, ...]:
    return PACKAGES + RELEASE_PACKAGES[suite]


def recipe_key(suite: str) -> str:
    recipe = json.dumps([RECIPE_VERSION, suite, packages(suite), MASKED_UNITS])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def image_dir(suite: str) -> Path:
    return cache_root() / "testhost-images" / suite / recipe_key(suite)


def image_tag(suite: str) -> str:
    """The recipe and the build: each build has its own login key, so a docker holding an image of an earlier
    build of the same recipe (another cache) must not pass for this one."""
    public_key = key_file(suite).with_suffix(".pub")
    build = hashlib.sha256(public_key.read_bytes()).hexdigest()[:8] if public_key.is_file() else "unbuilt"
    return f"sparkstack-testhost-{suite}:{recipe_key(suite)}-{build}"


def node_number(instance: str = MAIN) -> int:
    return int(instance) if instance else 1


def instance_of(number: int) -> str:
    return "" if number == 1 else str(number)


def instances(nodes: int) -> list[str]:
    return [instance_of(n) for n in range(1, nodes + 1)]


def host_set() -> int:
    """SPARKSTACK_TESTHOST_SET: which set of nodes (0 to 9, default 0). The sets are independent (their own
    containers, networks and state), so parallel test shards each get their own hosts under the same names."""
    value = os.environ.get("SPARKSTACK_TESTHOST_SET", "0")
    if not value.isdigit() or int(value) > 9:
        raise TestHostError(f"SPARKSTACK_TESTHOST_SET={value!r}: a set is 0 to 9")
    return int(value)


def _in_set(name: str) -> str:
    return f"{name}-s{host_set()}" if host_set() else name


def hosts_network() -> tuple[str, str]:
    """The network this machine reaches the nodes' sshd on (eth0), and its /24 prefix."""
    return _in_set("sparkstack-hosts"), f"10.78.{host_set()}"


def link_network() -> tuple[str, str]:
    """The nodes' private link (eth1), internal: set 0's is 10.77.0.N, the addresses the cluster group uses."""
    return _in_set("sparkstack-link"), f"10.77.{host_set()}"


def alias(instance: str = MAIN) -> str:
    return f"{HOST_ALIAS}-{instance}" if instance else HOST_ALIAS


def container_name(instance: str = MAIN) -> str:
    return _in_set(HOST_ALIAS) + (f"-{instance}" if instance else "")


def address(instance: str = MAIN) -> str:
    return f"{hosts_network()[1]}.{node_number(instance)}"


def link_address(instance: str = MAIN) -> str:
    return f"{link_network()[1]}.{node_number(instance)}"


def run_dir(instance: str = MAIN) -> Path:
    return cache_root() / (_in_set("testhost-run") + (f"-{instance}" if instance else ""))


def ssh_config_file(instance: str = MAIN) -> Path:
    return run_dir(instance) / "ssh_config"


def progress(message: str) -> None:
    print(f"testhost: {message}", file=sys.stderr, flush=True)


def docker(*args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise TestHostError(f"docker {' '.join(args[:3])} ... exited {result.returncode}: {result.stderr.strip()[-800:]}")
    return result


def require_tools() -> None:
    missing = [f"{tool} (install: {how})" for tool, how in REQUIRED_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise TestHostError("missing tools for the container test host: " + "; ".join(missing)
                            + ". `make test` and `make demo` install them (Debian/Ubuntu, as root or with sudo).")
    if docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30).returncode != 0:
        raise TestHostError("no docker daemon answers; `make test` starts one (tools/host_services.sh start)")
    if not (LXCFS_ROOT / "proc" / "meminfo").is_file():
        raise TestHostError(f"lxcfs is not mounted at {LXCFS_ROOT}; `make test` starts it (tools/host_services.sh start)")


# --- the image ------------------------------------------------------------

def key_file(suite: str) -> Path:
    return image_dir(suite) / "id_ed25519"


def build_image(suite: str) -> None:
    """mmdebstrap a rootfs of `suite`, customise it, pack it as a tarball; cached by recipe."""
    root = image_dir(suite)
    for stale in root.parent.glob("*"):
        if stale.is_dir() and stale != root:  # images of older recipes: a cache, not an archive
            shutil.rmtree(stale)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sparkstack-testhost", "-f",
                    str(key_file(suite))], check=True)
    rootfs = root / "rootfs"
    progress(f"building the host image with mmdebstrap ({suite}; about a minute) into {root}")
    started = time.monotonic()
    subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(packages(suite))}", suite, str(rootfs)],
                   check=True)
    _customise(rootfs, key_file(suite).with_suffix(".pub").read_text())
    subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(root / "rootfs.tar"), "."], check=True)
    shutil.rmtree(rootfs)
    (root / "COMPLETE").write_text(json.dumps({"recipe": recipe_key(suite), "built_s": round(time.monotonic() - started)}))
    progress(f"image built in {time.monotonic() - started:.0f} s")


# Both drivers' sshd: root by key only, no DNS lookups, no per-session motd or last-login work (every session
# ran run-parts over update-motd.d and lastlog: seconds under TCG), and one ed25519 host key (each node made an
# RSA key at its first boot).
SSHD_CONFIG = ("PermitRootLogin prohibit-password\nUseDNS no\nPrintMotd no\nPrintLastLog no\n"
               "HostKey /etc/ssh/ssh_host_ed25519_key\n")


def quiet_ssh_logins(rootfs: Path) -> None:
    (rootfs / "etc/ssh/sshd_config.d/sparkstack.conf").write_text(SSHD_CONFIG)
    pam = rootfs / "etc/pam.d/sshd"
    pam.write_text("".join(line for line in pam.read_text().splitlines(keepends=True) if "pam_motd" not in line))


def _customise(rootfs: Path, public_key: str) -> None:
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key)
    (ssh_dir / "authorized_keys").chmod(0o600)
    quiet_ssh_logins(rootfs)
    subprocess.run(["chroot", str(rootfs), "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo",
                    SUDOER], check=True, capture_output=True)
    home = rootfs / "home" / SUDOER / ".ssh"
    home.mkdir(mode=0o700)
    (home / "authorized_keys").write_text(public_key)
    (home / "authorized_keys").chmod(0o600)
    subprocess.run(["chroot", str(rootfs), "chown", "-R", f"{SUDOER}:{SUDOER}", f"/home/{SUDOER}/.ssh"], check=True)
    sudoers = rootfs / "etc/sudoers.d" / SUDOER
    sudoers.write_text(f"{SUDOER} ALL=(ALL) NOPASSWD: ALL\n")  # a test host: no password to type
    sudoers.chmod(0o440)
    subprocess.run(["chroot", str(rootfs), "systemctl", "enable", "ssh", "docker"], check=True, capture_output=True)
    subprocess.run(["chroot", str(rootfs), "systemctl", "mask", *MASKED_UNITS], check=True, capture_output=True)
    # Host keys are made at first boot, one set per node (the package's postinst made one set for every node).
    for host_key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        host_key.unlink()
    dropin = rootfs / "etc/systemd/system/ssh.service.d"
    dropin.mkdir(parents=True)
    (dropin / "hostkeys.conf").write_text(
        "[Service]\nExecStartPre=\nExecStartPre=/bin/sh -c 'test -f /etc/ssh/ssh_host_ed25519_key || "
        "ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key'\nExecStartPre=/usr/sbin/sshd -t\n")


def ensure_image(suite: str) -> None:
    if not (image_dir(suite) / "COMPLETE").is_file():
        build_image(suite)
    if docker("image", "inspect", image_tag(suite), check=False).returncode != 0:
        progress(f"loading {image_tag(suite)} into docker")
        docker("import", "-c", 'CMD ["/sbin/init"]', str(image_dir(suite) / "rootfs.tar"), image_tag(suite), timeout=600)


def ensure_networks() -> None:
    for (name, prefix), internal in ((hosts_network(), False), (link_network(), True)):
        if docker("network", "inspect", name, check=False).returncode != 0:
            docker("network", "create", "--subnet", f"{prefix}.0/24", "--gateway", f"{prefix}.254",
                   *(["--internal"] if internal else []), name)


# --- nodes ----------------------------------------------------------------

def ssh_config_text(instance: str, suite: str) -> str:
    return (f"Host {alias(instance)}\n"
            f"  HostName {address(instance)}\n  Port 22\n  User root\n  IdentityFile {key_file(suite)}\n"
            f"  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
            f"  LogLevel ERROR\n  ConnectTimeout 10\n"
            # One connection per node, reused by every ssh the tests and the tools make (a handshake and a PAM
            # session cost a third of a second each; the suites make thousands).
            f"  ControlMaster auto\n  ControlPath {run_dir(instance) / 'ssh-%C'}\n  ControlPersist 120\n")


def ssh_command(instance: str = MAIN) -> list[str]:
    return ssh_base(alias(instance), ssh_config_file(instance))


def ssh(command: str, timeout: float = 60, instance: str = MAIN) -> subprocess.CompletedProcess:
    return subprocess.run(ssh_command(instance) + [command], capture_output=True, text=True, timeout=timeout)


def running(instance: str = MAIN) -> bool:
    result = docker("inspect", "-f", "{{.State.Running}}", container_name(instance), check=False)
    return result.returncode == 0 and result.stdout.strip() == "true"


def system_state(instance: str = MAIN) -> str | None:
    try:
        result = ssh("systemctl is-system-running", timeout=20, instance=instance)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode == 255:
        return None
    return result.stdout.strip() or None


def _cgroup_parent(instance: str) -> str:
    """The node's own memory cgroup (cgroupfs driver), as the node's dockerd must name it."""
    full_id = docker("inspect", "-f", "{{.Id}}", container_name(instance)).stdout.strip()
    return f"/docker/{full_id}/inner-docker"


def up(fresh: bool = False, instance: str = MAIN, memory: str = MEMORY) -> dict:
    """Start node `instance` (building the image first if needed) and wait until systemd is `running`."""
    suite = release()
    if running(instance) and not fresh and recorded(instance).get("release") == suite:
        state = system_state(instance)
        progress(f"reusing the running node {alias(instance)} (system {state})")
        return recorded(instance) | {"system_state": state}
    require_tools()
    down(instance)
    ensure_image(suite)
    ensure_networks()
    run = run_dir(instance)
    if run.exists():
        shutil.rmtree(run)
    (run / "docker").mkdir(parents=True)
    _mount_data(run)
    ssh_config_file(instance).write_text(ssh_config_text(instance, suite))
    started = time.monotonic()
    docker("create", "--name", container_name(instance), "--hostname", alias(instance),
           "--network", hosts_network()[0], "--ip", address(instance), "--memory", memory, "--memory-swap", memory,
           *RUN_FLAGS, "-v", f"{run / 'docker'}:/var/lib/docker",
           "-v", f"{run / 'data'}:{DATA_DIR}", "-v", f"{LXCFS_ROOT}/proc/meminfo:/proc/meminfo:ro", "-v", f"{LXCFS_ROOT}/proc/uptime:/proc/uptime:ro",
           "--label", "sparkstack.testhost=1", image_tag(suite))
    docker("network", "connect", "--ip", link_address(instance), link_network()[0], container_name(instance))
    # The node's dockerd puts its containers under the node's cgroup (see the module's docstring).
    (run / "daemon.json").write_text(json.dumps({"cgroup-parent": _cgroup_parent(instance)}))
    docker("cp", str(run / "daemon.json"), f"{container_name(instance)}:/etc/docker/daemon.json")
    docker("start", container_name(instance))
    state = None
    while time.monotonic() - started < BOOT_TIMEOUT_S:
        state = system_state(instance)
        if state in ("running", "degraded"):
            break
        if not running(instance):
            logs = docker("logs", "--tail", "40", container_name(instance), check=False)
            raise TestHostError(f"{alias(instance)} exited during boot: {(logs.stdout + logs.stderr)[-1500:]}")
        time.sleep(0.5)
    else:
        raise TestHostError(f"{alias(instance)} did not finish booting within {BOOT_TIMEOUT_S} s (last state: {state})")
    boot_s = round(time.monotonic() - started, 1)
    if state == "degraded":
        failed = ssh("systemctl --failed --no-legend --plain | cut -d' ' -f1", instance=instance).stdout.split()
        progress(f"{alias(instance)} is degraded; failed units: {', '.join(failed) or 'unknown'}")
    info = state_of(instance, suite) | {"boot_s": boot_s}
    (run / "state.json").write_text(json.dumps(info))
    progress(f"{alias(instance)} ({suite}) up after {boot_s} s at {address(instance)} (link {link_address(instance)}): "
             f"system {state}; ssh -F {ssh_config_file(instance)} {alias(instance)}")
    return info | {"system_state": state}


def state_of(instance: str, suite: str) -> dict:
    return {"host": alias(instance), "address": address(instance), "port": 22, "key": str(key_file(suite)),
            "ssh_config": str(ssh_config_file(instance)), "link_address": link_address(instance),
            "container": container_name(instance), "driver": "container", "release": suite}


def recorded(instance: str = MAIN) -> dict:
    """What `up` recorded of a node (its release and key among it), or {}."""
    try:
        return json.loads((run_dir(instance) / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def _mount_data(run: Path) -> None:
    image, mount = run / "data.img", run / "data"
    mount.mkdir()
    subprocess.run(["truncate", "-s", DATA_SIZE, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)


def down(instance: str = MAIN) -> bool:
    """Remove the node's container and its docker state; True when one existed."""
    existed = docker("rm", "-f", "-v", container_name(instance), check=False).returncode == 0
    run = run_dir(instance)
    if (run / "data").is_mount():
        subprocess.run(["umount", "-l", str(run / "data")], check=False)
    if run.exists():
        shutil.rmtree(run, ignore_errors=True)
    return existed


def status(instance: str = MAIN) -> dict:
    if not running(instance):
        cached = (image_dir(release()) / "COMPLETE").is_file()
        return {"running": False, "image_cached": cached, "image": str(image_dir(release())), "driver": "container"}
    return recorded(instance) | {"running": True, "system_state": system_state(instance), "image_cached": True}


def inventory_entry(instance: str = MAIN, name: str | None = None) -> tuple[str, dict] | None:
    """The pyinfra inventory entry for a running node, or None."""
    state = recorded(instance)
    if not state or shutil.which("docker") is None or not running(instance):
        return None
    return name or alias(instance), {
        "ssh_hostname": address(instance),
        "ssh_port": 22,
        "ssh_user": "root",
        "ssh_key": state["key"],
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
    }
