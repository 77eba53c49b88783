"""The host's platform facts, the baseline the models run on: the OS and DGX OS release, the kernel and its command
line, CmaTotal, the NVIDIA driver and its module flavour, the CUDA driver, docker, the NVIDIA container toolkit, and
the cluster interfaces' MTU and link state.

Standard library only. The kit runs it on the host as `python3 - [INTERFACE ...]` with this file on stdin (the lock,
the deploy's preflight and drift), and it prints one JSON object of flat facts ("kernel.release": "6.17.0-1031-nvidia").
A fact the host does not have is null, with a "<area>.why" fact saying why (a host without an NVIDIA driver says so);
nothing is guessed.
"""

import json
import os
import re
import shutil
import subprocess
import sys

# Kernel command-line entries that matter on a Spark (../shared/PLATFORM.md): kho=off mends CmaTotal 0 on HWE 7.0.
KERNEL_ARGS = ("kho",)
NVIDIA_VERSION = "/proc/driver/nvidia/version"


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def key_values(text):
    """KEY=VALUE lines (os-release, dgx-release), quotes stripped."""
    values = {}
    for line in (text or "").splitlines():
        key, equals, value = line.partition("=")
        if equals:
            values[key.strip()] = value.strip().strip('"')
    return values


def kernel_flavour(release):
    """The flavour a kernel release ends in ("6.17.0-1031-nvidia" -> "nvidia"), or None."""
    last = release.rsplit("-", 1)[-1]
    return last if "-" in release and not last.isdigit() else None


def cmdline_entries(cmdline, names=KERNEL_ARGS):
    found = {}
    for word in (cmdline or "").split():
        name, _, value = word.partition("=")
        if name in names:
            found[name] = value
    return found


def nvidia_driver(text):
    """(version, flavour) from /proc/driver/nvidia/version: "open" for the open kernel modules."""
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text or "")
    if not match:
        return None, None
    return match.group(1), "open" if "Open Kernel Module" in text else "proprietary"


def command(*args):
    if not shutil.which(args[0]):
        return None
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def collect(interfaces=()):
    facts = {}
    os_release = key_values(read("/etc/os-release"))
    facts["os.id"] = os_release.get("ID")
    facts["os.version_id"] = os_release.get("VERSION_ID")
    dgx = key_values(read("/etc/dgx-release"))
    facts["dgx_os.release"] = dgx.get("DGX_SWBUILD_VERSION") or dgx.get("DGX_OTA_VERSION")
    if not dgx:
        facts["dgx_os.why"] = "no /etc/dgx-release: not DGX OS"
    release = os.uname().release
    facts["kernel.release"] = release
    facts["kernel.flavour"] = kernel_flavour(release)
    entries = cmdline_entries(read("/proc/cmdline"))
    for name in KERNEL_ARGS:
        facts[f"kernel.cmdline.{name}"] = entries.get(name)
    cma = re.search(r"^CmaTotal:\s+(\d+) kB", read("/proc/meminfo") or "", re.M)
    facts["memory.cma_total_kb"] = int(cma.group(1)) if cma else None
    version, flavour = nvidia_driver(read(NVIDIA_VERSION))
    facts["nvidia.driver"], facts["nvidia.flavour"] = version, flavour
    if version is None:
        facts["nvidia.why"] = f"no NVIDIA driver loaded ({NVIDIA_VERSION} absent): no GPU here"
    smi = command("nvidia-smi")
    cuda = re.search(r"CUDA Version:\s*(\d+\.\d+)", smi or "")
    facts["cuda.driver"] = cuda.group(1) if cuda else None
    facts["docker.version"] = command("docker", "version", "--format", "{{.Server.Version}}")
    facts["nvidia_container_toolkit.version"] = command("dpkg-query", "-W", "-f=${Version}", "nvidia-container-toolkit")
    for interface in interfaces:
        link = command("ip", "-j", "link", "show", interface)
        try:
            entry = json.loads(link)[0] if link else {}
        except (ValueError, IndexError):
            entry = {}
        facts[f"net.{interface}.mtu"] = entry.get("mtu")
        facts[f"net.{interface}.state"] = entry.get("operstate")
    return facts


def main(argv=None):
    print(json.dumps(collect(sys.argv[1:] if argv is None else argv), sort_keys=True))


if __name__ == "__main__":
    main()
