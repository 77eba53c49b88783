"""What an engine can leave behind after its stop, found and cleared by llm-switch once every model is down.

On a Spark (../shared/PLATFORM.md):
  * EngineCore and the TP workers can outlive a SIGKILLed API server and keep their memory (vllm-project/vllm#55510).
    A process named as an engine names itself (vLLM's VLLM::<role>, SGLang's sglang::<role>) that is still in a
    docker container's cgroup after every model's container is gone is killed by its cgroup (cgroup.kill, which
    takes every process in it at once), never by a PID that may have been reused. One outside any container is
    not the kit's: it is named, not killed.
  * `--ipc host` engines killed with SIGKILL leave /dev/shm/psm_* files, resident as Shmem until a reboot, and a
    relaunch into that window runs out of memory (MiaAI-Lab/Qwen3.8-Flash-Next-Single-DGX-Spark#13). Those no process
    holds open or maps are removed.
"""

import os
import re

from sparkstack_host import memguard

# The engines' process names (15 characters in /proc/PID/comm), as earlyoom's preference names them.
ENGINE_COMM = re.compile(r"^(vllm|VLLM::.*|sglang::.*)$")
# Python's multiprocessing.shared_memory names its blocks psm_<hex>; the engines run as root in their containers, and
# only root's blocks are taken (another user's program keeps its own).
SHM_LEFTOVER = re.compile(r"^psm_[0-9a-f]+$")
PROC = "/proc"
CGROUP_ROOT = "/sys/fs/cgroup"
DEV_SHM = "/dev/shm"


def engine_processes():
    """[(pid, name, cgroup path)] of the processes named as an engine, on this host."""
    proc = PROC
    found = []
    for entry in sorted((e for e in os.listdir(proc) if e.isdigit()), key=int):
        try:
            with open(f"{proc}/{entry}/comm", encoding="utf-8", errors="replace") as handle:
                name = handle.read().strip()
            if not ENGINE_COMM.match(name):
                continue
            with open(f"{proc}/{entry}/cgroup", encoding="ascii") as handle:
                cgroup = next((line[3:].strip() for line in handle if line.startswith("0::")), "")
        except OSError:
            continue
        found.append((int(entry), name, cgroup))
    return found


def kill_cgroup(cgroup):
    """Kill every process of a cgroup (v2): cgroup.kill (Linux 5.14+), else SIGKILL each member it lists."""
    base = os.path.join(CGROUP_ROOT, cgroup.lstrip("/"))
    try:
        with open(os.path.join(base, "cgroup.kill"), "w", encoding="ascii") as handle:
            handle.write("1")
        return True
    except OSError:
        pass
    try:
        with open(os.path.join(base, "cgroup.procs"), encoding="ascii") as handle:
            members = [int(line) for line in handle if line.strip()]
    except OSError:
        return False
    for pid in members:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    return True


def running_container_ids(run):
    """The ids (12 hex digits) of every container docker runs, the kit's or not (`run`: llm-switch's command runner)."""
    out = run("docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout
    return {line.split()[0][:12] for line in out.splitlines() if line.strip()}


def orphan_engines(say, running_ids):
    """Kill the cgroups of engine processes whose container is gone (every model stopped); name the others.
    Returns one line per cgroup killed or process left."""
    lines = []
    killed = set()
    for pid, name, cgroup in engine_processes():
        container = memguard.container_of(pid)
        if container is None:
            lines.append(f"{name} (pid {pid}) runs outside any container, so not the kit's: left running")
            continue
        if container in running_ids:
            continue  # a container that still runs (another program's, not a model of the kit's): not a leftover
        if cgroup in killed:
            continue
        ok = kill_cgroup(cgroup)
        killed.add(cgroup)
        lines.append(f"{name} (pid {pid}) outlived its container's stop: "
                     + (f"killed its cgroup {cgroup}" if ok else f"could not kill its cgroup {cgroup}"))
    for line in lines:
        say(line)
    return lines


def shm_in_use():
    """The /dev/shm paths some process holds open or maps."""
    proc, shm = PROC, DEV_SHM
    used = set()
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"{proc}/{entry}/fd"):
                try:
                    target = os.readlink(f"{proc}/{entry}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(shm + "/"):
                    used.add(target)
            with open(f"{proc}/{entry}/maps", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    path = line.rstrip("\n").partition(" " + shm + "/")
                    if path[1]:
                        used.add(shm + "/" + path[2].split(" (deleted)")[0])
        except OSError:
            continue
    return used


def shm_leftovers(say):
    """Remove the engines' /dev/shm files no process holds; returns (files removed, bytes freed)."""
    shm = DEV_SHM
    try:
        names = [n for n in os.listdir(shm) if SHM_LEFTOVER.match(n)]
    except OSError:
        return 0, 0
    if not names:
        return 0, 0
    used = shm_in_use()
    removed, freed = 0, 0
    for name in names:
        path = f"{shm}/{name}"
        if path in used:
            continue
        try:
            info = os.stat(path)
            if info.st_uid != 0:
                continue
            size = info.st_blocks * 512
            os.remove(path)
        except OSError:
            continue
        removed, freed = removed + 1, freed + size
    if removed:
        say(f"removed {removed} file(s) an engine left in {shm} ({freed / 1e9:.2f} GB of shared memory)")
    return removed, freed
