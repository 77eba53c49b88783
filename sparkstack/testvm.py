"""The test VM: a real Debian 12 host with systemd, sshd and docker, under qemu (TCG).

The image is built once with mmdebstrap and cached outside the repo, keyed by the
recipe below; each `up` boots a fresh copy-on-write overlay of it behind a
loopback port. `down` stops exactly the qemu process `up` started (by pid).
KVM is not used: on these machines /dev/kvm exists but hangs at boot (BRIEF).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sparkstack.remote import free_port, ssh_base
from sparkstack.testhost_container import cache_root, quiet_ssh_logins

HOST_ALIAS = "sparkstack-testhost"  # the same names as the container driver (sparkstack/testhost.py)
# The VMs: the main one (every test, the demo) and a second one, the cluster tests' worker. They are joined
# by a private link that touches no host network: a qemu socket netdev on a loopback port, the main VM
# listening (it starts first), each VM with its own address on it.
MAIN = ""
WORKER = "2"
LINK_INTERFACE = "eth1"
LINK_ADDRESSES = {MAIN: "10.77.0.1", WORKER: "10.77.0.2"}
LINK_MACS = {MAIN: "52:54:00:77:00:01", WORKER: "52:54:00:77:00:02"}
SUITE = "bookworm"
PACKAGES = (
    "linux-image-amd64", "systemd-sysv", "udev", "openssh-server", "python3", "docker.io",
    "ca-certificates", "iproute2", "procps", "kmod", "apparmor", "curl", "dbus",
    # earlyoom and the front door's aiohttp and prometheus_client come from the distribution on a Spark too; preinstalled here so
    # the VM loop skips an apt update under TCG.
    "earlyoom", "python3-aiohttp", "python3-prometheus-client",
    # Docker's own packages on DGX OS recommend pigz, and dockerd unpacks pulled layers with it when present:
    # under TCG the stand-in's pull took 63 s with it, 70 to 82 s without (one VM, nothing else running).
    "pigz",
)
DISK_SIZE = "8G"
MEMORY_MB = 2048
# Two vCPUs. `make test` runs the VM beside the hosts tier on a 2-core machine, where a descheduled vCPU leaves
# the other spinning on the locks it holds: beside two busy processes the boot cost 109 CPU-s with two vCPUs and
# 85 with one. One vCPU was slower still end to end (its smoke became the run's longest path: QEMU reached only
# 0.7 of a core, mostly waiting on itself), so the VM keeps two and tools/test_tiers.sh runs its tier at a higher
# priority, where its vCPUs are seldom descheduled.
CPUS = 2
# TCG emulates every vector extension `-cpu max` advertises, and glibc and CPython then pick them: with the
# baseline x86-64 model, three `python3 -c 'import asyncio'` took 8.8 s in the VM instead of 13.9 s, and the
# boot 109 s instead of 131 s (measured on this 2-core machine, QEMU 7.2). mitigations=off: a throwaway guest.
CPU_MODEL = "qemu64"
BOOT_TIMEOUT_S = 600
NETWORK = """[Match]
Name=eth0

[Network]
DHCP=yes
"""
FSTAB = "/dev/vda / ext4 defaults,noatime 0 1\n"
# The initramfs holds only what finds the root disk. Debian's default (MODULES=most) made a 36 MB gzip of
# 131 MB that the kernel unpacked under TCG at every boot, and the package installs built it twice.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "ext4")
# Built once, after every package is in: during the install update-initramfs is diverted to a no-op.
NO_INITRAMFS_DURING_INSTALL = (
    'chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.real '
    '--add /usr/sbin/update-initramfs && printf "#!/bin/sh\\nexit 0\\n" > "$1/usr/sbin/update-initramfs" && '
    'chmod 0755 "$1/usr/sbin/update-initramfs"')
# Kernel modules a Spark loads at boot and the VM has no use for (no GPU, no EFI, no FUSE, no device mapper): each
# modprobe@ unit cost about 3 s of TCG.
MASKED_UNITS = ("modprobe@drm.service", "modprobe@efi_pstore.service", "modprobe@fuse.service",
                "modprobe@dm_mod.service")
# Bump when the recipe changes in a way the package list and files above do not show.
RECIPE_VERSION = "4"

REQUIRED_TOOLS = {
    "mmdebstrap": "apt-get install mmdebstrap",
    "qemu-system-x86_64": "apt-get install qemu-system-x86",
    "qemu-img": "apt-get install qemu-utils",
    "mkfs.ext4": "apt-get install e2fsprogs",
    "ssh": "apt-get install openssh-client",
    "ssh-keygen": "apt-get install openssh-client",
}


class TestVMError(Exception):
    pass


def recipe_key() -> str:
    recipe = json.dumps([RECIPE_VERSION, SUITE, PACKAGES, DISK_SIZE, NETWORK, FSTAB, INITRAMFS_MODULES, MASKED_UNITS])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    root: Path

    @property
    def disk(self) -> Path:
        return self.root / "disk.raw"

    @property
    def kernel(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.root / "initrd.img"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def complete(self) -> bool:
        return (self.root / "COMPLETE").is_file()


@dataclass(frozen=True)
class Run:
    root: Path

    @property
    def overlay(self) -> Path:
        return self.root / "overlay.qcow2"

    @property
    def pidfile(self) -> Path:
        return self.root / "qemu.pid"

    @property
    def console(self) -> Path:
        return self.root / "console.log"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def ssh_config_file(self) -> Path:
        return self.root / "ssh_config"


def image() -> Image:
    return Image(cache_root() / "testvm-images" / recipe_key())


def alias(instance: str = MAIN) -> str:
    return f"{HOST_ALIAS}-{instance}" if instance else HOST_ALIAS


def run_dir(instance: str = MAIN) -> Run:
    return Run(cache_root() / (f"testvm-run-{instance}" if instance else "testvm-run"))


def progress(message: str) -> None:
    print(f"testvm: {message}", file=sys.stderr, flush=True)


def missing_tools() -> list[str]:
    return [f"{tool} (install: {how})" for tool, how in REQUIRED_TOOLS.items() if shutil.which(tool) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise TestVMError("missing tools for the test VM: " + "; ".join(missing)
                          + ". `make test` and `make demo` install them (Debian/Ubuntu, as root or with sudo).")


# --- building -----------------------------------------------------------

def build_image(img: Image) -> None:
    """Build the cached VM image: mmdebstrap a rootfs, customise it, pack it into an ext4 disk."""
    require_tools()
    for stale in img.root.parent.glob("*"):
        if stale.is_dir():  # images of older recipes: a cache, not an archive
            shutil.rmtree(stale)
    img.root.mkdir(parents=True)
    rootfs = img.root / "rootfs"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sparkstack-testvm", "-f", str(img.key)], check=True)
    include = ",".join(PACKAGES)
    progress(f"building the VM image with mmdebstrap ({SUITE}; about 1-2 minutes) into {img.root}")
    started = time.monotonic()
    subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", f"--include={include}",
                    f"--essential-hook={NO_INITRAMFS_DURING_INSTALL}", SUITE, str(rootfs)], check=True)
    progress(f"rootfs ready after {time.monotonic() - started:.0f} s; customising")
    _customise(rootfs, img.key.with_suffix(".pub").read_text())
    boot = rootfs / "boot"
    shutil.copy(sorted(boot.glob("vmlinuz-*"))[-1], img.kernel)
    shutil.copy(sorted(boot.glob("initrd.img-*"))[-1], img.initrd)
    progress("packing the ext4 disk image")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(img.disk), DISK_SIZE], check=True)
    shutil.rmtree(rootfs)
    (img.root / "COMPLETE").write_text(json.dumps({"recipe": recipe_key(), "built_s": round(time.monotonic() - started)}))
    progress(f"image built in {time.monotonic() - started:.0f} s")


def _customise(rootfs: Path, public_key: str) -> None:
    (rootfs / "etc/hostname").write_text(f"{HOST_ALIAS}\n")
    (rootfs / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOST_ALIAS}\n")
    (rootfs / "etc/fstab").write_text(FSTAB)
    (rootfs / "etc/systemd/network/10-eth0.network").write_text(NETWORK)
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key)
    (ssh_dir / "authorized_keys").chmod(0o600)
    quiet_ssh_logins(rootfs)  # root logs in with the key only; nothing else listens beyond sshd
    subprocess.run(["chroot", str(rootfs), "systemctl", "enable", "systemd-networkd", "ssh", "docker"], check=True,
                   capture_output=True)
    subprocess.run(["chroot", str(rootfs), "systemctl", "mask", *MASKED_UNITS], check=True, capture_output=True)
    initramfs = rootfs / "etc/initramfs-tools"
    (initramfs / "conf.d/sparkstack").write_text("MODULES=list\n")
    with (initramfs / "modules").open("a") as modules:
        modules.write("".join(f"{name}\n" for name in INITRAMFS_MODULES))
    (rootfs / "usr/sbin/update-initramfs").unlink()
    for command in (["dpkg-divert", "--quiet", "--local", "--rename", "--remove", "/usr/sbin/update-initramfs"],
                    ["update-initramfs", "-c", "-k", "all"]):
        subprocess.run(["chroot", str(rootfs), *command], check=True, capture_output=True)


# --- running ------------------------------------------------------------

def _pid(run: Run) -> int | None:
    try:
        pid = int(run.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return None
    # Only our own qemu: the pid must still be a qemu running our overlay.
    return pid if "qemu-system" in cmdline and str(run.overlay) in cmdline else None


def _state(run: Run) -> dict:
    try:
        return json.loads(run.state_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def ssh_config_text(port: int, key: Path, instance: str = MAIN) -> str:
    return (f"Host {alias(instance)}\n"
            f"  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {key}\n"
            f"  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
            f"  LogLevel ERROR\n  ConnectTimeout 10\n"
            # One connection, reused by every ssh the tests make: a handshake and a PAM session under TCG cost
            # about a second of the VM's CPU each.
            f"  ControlMaster auto\n  ControlPath {run_dir(instance).root / 'ssh-%C'}\n  ControlPersist 120\n")


def ssh_config_file(instance: str = MAIN) -> Path:
    return run_dir(instance).ssh_config_file


def ssh_command(instance: str = MAIN) -> list[str]:
    """The ssh invocation for the running VM; append a remote command."""
    return ssh_base(alias(instance), run_dir(instance).ssh_config_file)


def ssh(command: str, timeout: float = 60, instance: str = MAIN) -> subprocess.CompletedProcess:
    return subprocess.run(ssh_command(instance) + [command], capture_output=True, text=True, timeout=timeout)


def system_state(instance: str = MAIN) -> str | None:
    try:
        result = ssh("systemctl is-system-running", timeout=20, instance=instance)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode == 255:  # ssh itself failed: not up yet
        return None
    return result.stdout.strip() or None


def _link_netdev(instance: str) -> tuple[list[str], int]:
    """The private link's qemu arguments: the main VM listens on a loopback port, the worker connects to it."""
    if instance == MAIN:
        port = free_port()
        end = f"listen=127.0.0.1:{port}"
    else:
        main = run_dir(MAIN)
        if _pid(main) is None or "link_port" not in _state(main):
            raise TestVMError("the worker VM joins the main VM's private link: start the main VM first")
        port = _state(main)["link_port"]
        end = f"connect=127.0.0.1:{port}"
    return ["-netdev", f"socket,id=n1,{end}", "-device", f"virtio-net-pci,netdev=n1,mac={LINK_MACS[instance]}"], port


def _configure_link(instance: str) -> None:
    """The VM's address on the private link (kept across reboots) and its own hostname."""
    network = (f"[Match]\nMACAddress={LINK_MACS[instance]}\n\n[Network]\nAddress={LINK_ADDRESSES[instance]}/24\n"
               "LinkLocalAddressing=no\n")
    result = ssh(f"printf '%s' '{network}' > /etc/systemd/network/20-link.network && networkctl reload && "
                 f"hostnamectl set-hostname {alias(instance)} && "
                 f"for i in $(seq 1 30); do ip -o -4 addr show dev {LINK_INTERFACE} | grep -q ' {LINK_ADDRESSES[instance]}/' "
                 "&& exit 0; sleep 1; done; exit 1", timeout=60, instance=instance)
    if result.returncode != 0:
        raise TestVMError(f"the private link did not come up in {alias(instance)}: {result.stderr.strip()}")


def up(fresh: bool = False, instance: str = MAIN) -> dict:
    """Boot the VM (building the image first if needed) and wait until systemd has finished booting."""
    run = run_dir(instance)
    if _pid(run) is not None:
        if not fresh:
            state = system_state(instance)
            progress(f"reusing the running VM {alias(instance)} (pid {_pid(run)}, system {state})")
            return _state(run) | {"system_state": state}
        down(instance)
    require_tools()
    img = image()
    if not img.complete:
        build_image(img)
    if run.root.exists():
        shutil.rmtree(run.root)
    run.root.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(img.disk), str(run.overlay)], check=True)
    port = free_port()
    run.ssh_config_file.write_text(ssh_config_text(port, img.key, instance))
    link_args, link_port = _link_netdev(instance)
    command = [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", CPU_MODEL, "-m", str(MEMORY_MB), "-smp", str(CPUS),
        "-kernel", str(img.kernel), "-initrd", str(img.initrd),
        "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet mitigations=off",
        "-drive", f"file={run.overlay},format=qcow2,if=virtio",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0",
        *link_args,
        "-display", "none", "-serial", f"file:{run.console}", "-daemonize", "-pidfile", str(run.pidfile),
    ]
    started = time.monotonic()
    subprocess.run(command, check=True)
    progress(f"booting {alias(instance)} (qemu pid {_pid(run)}, ssh on 127.0.0.1:{port}); waiting for systemd")
    state = None
    next_report = started + 15
    while time.monotonic() - started < BOOT_TIMEOUT_S:
        state = system_state(instance)
        if state in ("running", "degraded"):
            break
        if _pid(run) is None:
            raise TestVMError(f"qemu exited during boot; see {run.console}")
        if time.monotonic() >= next_report:
            progress(f"  {time.monotonic() - started:.0f} s: system {state or 'not reachable yet'}")
            next_report += 15
        time.sleep(2)
    else:
        raise TestVMError(f"the VM did not finish booting within {BOOT_TIMEOUT_S} s (last state: {state}); see {run.console}")
    boot_s = round(time.monotonic() - started, 1)
    if state == "degraded":
        failed = ssh("systemctl --failed --no-legend --plain | cut -d' ' -f1", instance=instance).stdout.split()
        progress(f"system is degraded; failed units: {', '.join(failed) or 'unknown'}")
    _configure_link(instance)
    info = {"host": alias(instance), "port": port, "key": str(img.key), "ssh_config": str(run.ssh_config_file),
            "pid": _pid(run), "boot_s": boot_s, "link_port": link_port, "link_address": LINK_ADDRESSES[instance]}
    run.state_file.write_text(json.dumps(info))
    progress(f"up after {boot_s} s: system {state}; ssh -F {run.ssh_config_file} {alias(instance)}")
    return info | {"system_state": state}


def down(instance: str = MAIN) -> bool:
    """Stop the VM this kit started; True when one was running."""
    run = run_dir(instance)
    pid = _pid(run)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if _pid(run) is None:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    run.pidfile.unlink(missing_ok=True)
    return True


def status(instance: str = MAIN) -> dict:
    run = run_dir(instance)
    pid = _pid(run)
    if pid is None:
        return {"running": False, "image_cached": image().complete, "image": str(image().root)}
    return _state(run) | {"running": True, "system_state": system_state(instance), "image_cached": True}


def inventory_entry(instance: str = MAIN, name: str | None = None) -> tuple[str, dict] | None:
    """The pyinfra inventory entry for a running VM (under `name`, default its alias), or None when it is not up."""
    run = run_dir(instance)
    state = _state(run)
    if not state or _pid(run) is None:
        return None
    return name or alias(instance), {
        "ssh_hostname": "127.0.0.1",
        "ssh_port": state["port"],
        "ssh_user": "root",
        "ssh_key": state["key"],
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
    }
