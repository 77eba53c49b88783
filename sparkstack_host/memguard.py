"""sparkstack-memguard: keep a model from loading into memory that is not free, and stop it before the host wedges.

  sparkstack-memguard wait-for-room NAME   wait, bounded, until MemAvailable covers NAME's need; exit 1 with the numbers
  sparkstack-memguard watch                sample MemAvailable about once a second; below the floor, stop the hot model

On a DGX Spark the CPU and GPU share one memory pool that cgroup limits and `docker --memory` do
not see, and engines hand memory back 30-120 s after their container is gone. So every start of a
model, by llm-switch, by hand or by systemd's own restarts, runs `wait-for-room` first (the model
units' ExecStartPre), and the `watch` service stops a hot model cleanly when the pool runs low.
Installed by sparkstack as sparkstack_host/memguard.py behind files/sparkstack-memguard; reads /etc/sparkstack/models.json.
Standard library only.
"""

import argparse
import os
import subprocess
import sys
import time

from sparkstack_host import contract

REGISTRY = os.environ.get("LLM_SWITCH_REGISTRY", contract.REGISTRY_PATH)
GUARD_STATE = contract.GUARD_STATE
PROGRESS_EVERY_S = 10
WATCH_INTERVAL_S = 1.0
# Readings in a row below the floor before the guard acts: one low reading can be a transient.
WATCH_READINGS = 2
TOP_USERS = 5
MEMINFO = "/proc/meminfo"


def say(message):
    print(f"sparkstack-memguard: {message}", flush=True)


def load_registry(path):
    return contract.read_registry(path)


def meminfo_fields():
    """/proc/meminfo in GB."""
    values = {}
    with open(MEMINFO, encoding="ascii") as handle:
        for line in handle:
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0]) / (1024 * 1024)
    return values


def room_gb(values):
    """Memory a model may load into: MemAvailable, or less where Shmem and Unevictable say so. Neither comes back by
    waiting (an engine's shared memory can stay resident after its stop, ../shared/PLATFORM.md), so the figure is
    also taken as MemTotal less every page nothing can reclaim (anonymous, shared, unevictable, the kernel's own),
    and the smaller of the two counts."""
    # Unevictable (mlocked) pages are also anonymous or shared ones, or locked file pages: counted once, as the larger.
    user = max(values.get("AnonPages", 0.0) + values.get("Shmem", 0.0), values.get("Unevictable", 0.0))
    kernel = sum(values.get(k, 0.0) for k in ("SUnreclaim", "KernelStack", "PageTables"))
    return min(values["MemAvailable"], values["MemTotal"] - user - kernel)


def meminfo_gb():
    """(MemTotal, MemAvailable), in GB (GiB, as /proc/meminfo's kB over 1024 x 1024)."""
    values = meminfo_fields()
    return values["MemTotal"], values["MemAvailable"]


def room_now():
    """(MemTotal, the room a model may load into) for the gate."""
    values = meminfo_fields()
    return values["MemTotal"], room_gb(values)


def held_back(values):
    """What waiting cannot bring back, for the gate's messages."""
    return f"Shmem {values.get('Shmem', 0.0):.2f} GB, Unevictable {values.get('Unevictable', 0.0):.2f} GB"


def container_of(pid):
    """The docker container a process runs in (by its cgroup), or None.

    The container is the last segment of the cgroup path when that segment is a container's: `/docker/<id>`
    (cgroupfs) or `/system.slice/docker-<id>.scope` (systemd). A process of the host itself is in no container,
    even when the host is itself a container (a test host: `/docker/<host>/system.slice/ssh.service`)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii") as handle:
            text = handle.read()
    except OSError:
        return None
    # The hierarchy that places services and containers: cgroup v2's, or v1's name=systemd (v1's controller
    # hierarchies may keep a host's processes at the host container's own cgroup).
    placing = [line for line in text.splitlines() if line.startswith("0::") or ":name=systemd:" in line]
    for line in placing[-1:]:
        last = line.rpartition(":")[2].rstrip("/").rpartition("/")[2]
        if last.startswith("docker-") and last.endswith(".scope"):
            return last[len("docker-"):][:12]
        if len(last) == 64 and all(c in "0123456789abcdef" for c in last):
            return last[:12]
    return None


def container_names():
    result = subprocess.run(["docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"],
                            capture_output=True, text=True, timeout=30)
    names = {}
    for line in result.stdout.splitlines():
        cid, _, name = line.partition(" ")
        names[cid[:12]] = name
    return names


def largest_users(count=TOP_USERS):
    """The processes holding the most memory (RSS), with the container each runs in."""
    rows = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        rss_kb = int((fields.get("VmRSS") or "0 kB").split()[0])
        if rss_kb:
            rows.append((rss_kb, int(entry), fields.get("Name", "?").strip()))
    rows.sort(reverse=True)
    try:
        names = container_names()
    except (OSError, subprocess.SubprocessError):
        names = {}
    described = []
    for rss_kb, pid, name in rows[:count]:
        cid = container_of(pid)
        where = f", container {names.get(cid, cid)}" if cid else ""
        described.append(f"{name} (pid {pid}{where}) {rss_kb / (1024 * 1024):.2f} GB")
    return described


def need_of(registry, name):
    model = registry["models"][name]
    return model["required_memory_gb"], registry["os_reserve_gb"]


def wait_for_room(registry, name, bound_s):
    """Exit 0 once MemAvailable covers the model plus the reserve; progress at least every 10 s; exit 1 with the
    numbers and the largest memory users when the bound runs out (or at once when the host can never fit it)."""
    model_gb, reserve_gb = need_of(registry, name)
    need = model_gb + reserve_gb
    total, available = room_now()
    what = f"{model_gb:g} GB for {name} + {reserve_gb:g} GB reserve = {need:g} GB"
    if total < need:
        say(f"refusing to start {name}: the host has {total:.1f} GB in all, less than {what}")
        return 1
    started = time.monotonic()
    deadline = started + bound_s
    next_report = started
    while available < need:
        now = time.monotonic()
        if now >= deadline:
            users = "; ".join(f"{i}. {u}" for i, u in enumerate(largest_users(), 1))
            say(f"refusing to start {name}: {available:.2f} GB available < {what}, still after waiting "
                f"{bound_s} s for memory to come back ({held_back(meminfo_fields())}: an engine's shared memory "
                f"left in /dev/shm stays until removed); largest memory users: {users}")
            return 1
        if now >= next_report:
            say(f"waiting for room for {name}: {available:.2f} GB available, {need:g} GB needed, "
                f"{deadline - now:.0f} s left")
            next_report = now + PROGRESS_EVERY_S
        time.sleep(1)
        available = room_now()[1]
    waited = time.monotonic() - started
    say(f"room for {name}: {available:.2f} GB available >= {need:g} GB needed"
        + (f" (after {waited:.0f} s)" if waited >= 1 else ""))
    return 0


def unit_active(unit):
    out = subprocess.run(["systemctl", "show", unit, "--property=ActiveState", "--value"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    return out in ("active", "activating", "reloading")


def record(state):
    contract.write_state(GUARD_STATE, state)


def watch(registry_path):
    """Stop the hot sparkstack model (and only a sparkstack model) when MemAvailable stays below the floor."""
    registry = load_registry(registry_path)
    floor = registry["memory_guard_floor_gb"]
    say(f"watching MemAvailable every {WATCH_INTERVAL_S:g} s; a hot model is stopped below {floor:g} GB")
    state = {"floor_gb": floor, "watching_since": time.time(), "last_action": None}
    record(state)
    low = 0
    read_at = time.monotonic()
    unreadable = None
    while True:
        if time.monotonic() - read_at > 10:  # a deploy may change the floor or the models
            read_at = time.monotonic()
            try:
                candidate = load_registry(registry_path)
                float(candidate["memory_guard_floor_gb"]), dict(candidate["models"])  # what the loop reads
                registry, unreadable = candidate, None
            except (contract.RegistryError, OSError, KeyError, TypeError, ValueError) as exc:
                # Keep guarding with the last registry it could read: a half-written or broken file must not
                # take the guard down while a model is hot.
                if str(exc) != unreadable:
                    say(f"keeping the last registry it read: {exc}")
                unreadable = str(exc)
            if registry["memory_guard_floor_gb"] != floor:
                floor = state["floor_gb"] = registry["memory_guard_floor_gb"]
                record(state)
        total, available = meminfo_gb()
        # Its reading, for the door's /metrics and /status (tmpfs; a second old at most): the door's own sandbox may
        # see another /proc/meminfo (under lxcfs, on a test host), and what the guard acts on is what counts.
        state["memory"] = {"total_gb": round(total, 3), "available_gb": round(available, 3), "at": time.time()}
        record(state)
        low = low + 1 if available < floor else 0
        if low >= WATCH_READINGS:
            for name, model in registry["models"].items():
                if not unit_active(model["unit"]):
                    continue
                at = time.strftime("%H:%M:%S")
                reason = f"{available:.2f} GB available < {floor:g} GB"
                say(f"stopping {name} ({model['unit']}): {reason}")
                # An explicit stop: systemd's Restart=on-failure does not restart it.
                subprocess.run(["systemctl", "stop", model["unit"]], capture_output=True, text=True,
                               timeout=model.get("stop_timeout_s", 60) + 60)
                state["last_action"] = {"model": name, "unit": model["unit"], "at": at, "time": time.time(),
                                        "available_gb": round(available, 2), "floor_gb": floor,
                                        "message": f"stopped by the memory guard at {at}: {reason}"}
                record(state)
            low = 0
        time.sleep(WATCH_INTERVAL_S)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="sparkstack-memguard", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=REGISTRY)
    sub = parser.add_subparsers(dest="command", required=True)
    gate = sub.add_parser("wait-for-room", help="wait, bounded, until a model fits")
    gate.add_argument("name")
    gate.add_argument("--bound", type=int, help="seconds to wait (default: the registry's memory_wait_s)")
    sub.add_parser("watch", help="the watchdog loop")
    args = parser.parse_args(argv)
    registry = load_registry(args.registry)
    if args.command == "watch":
        return watch(args.registry)
    if args.name not in registry["models"]:
        say(f"unknown model {args.name!r} (known: {', '.join(registry['models'])})")
        return 2
    bound = args.bound if args.bound is not None else registry["memory_wait_s"]
    return wait_for_room(registry, args.name, bound)


if __name__ == "__main__":
    sys.exit(main())
