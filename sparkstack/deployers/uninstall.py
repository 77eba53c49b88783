"""The uninstall: take back everything the deploy put on a host (uninstall.py, `sparkstack uninstall`).

What goes: the model units and launch scripts (found on the host, as the retired-model sweep finds them), the
memory guard, the door, the switch socket and the cluster fence with their units; llm-switch, the host package,
the registry, the client digests and the door's TLS pair; the state (/var/lib/sparkstack/door, /run/sparkstack),
the compile caches, the cluster's key and its authorized_keys line; the door's user and group; the group's holds.

What stays unless asked: the engine images (--images) and the weights (--weights), which take hours to fetch again,
and the secrets file (--secrets), which holds the owner's own tokens. The distribution's packages the deploy
installed (earlyoom, nftables, python3-aiohttp, python3-prometheus-client) stay: they are Debian's and other
programs may use them. Each operation is idempotent: on a clean host the plan has no change, which is how
`sparkstack drift --uninstalled` tells a clean host.
"""

from __future__ import annotations

import json
import os
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Directory, File, FindFiles
from pyinfra.facts.server import Command, Groups, Users
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from sparkstack.cluster import CLUSTER_DIR
from sparkstack.deployers.cluster import AUTHORIZED_KEYS, key_comment
from sparkstack.deployers.models import MODEL_UNIT_MARK
from sparkstack.deployers.preflight import host_group
from sparkstack.lockfile import load_lock
from sparkstack.groups import GroupSettings
from sparkstack.render import (CLUSTER_FENCE_UNIT, EARLYOOM_DROPIN, FRONTDOOR_UNIT, FRONTDOOR_USER, MEMORY_GUARD_UNIT,
                               SWITCH_REQUEST_UNIT, SWITCH_SOCKET_UNIT)
from sparkstack_host.contract import (CLUSTER_FENCE_PATH, COMPILE_CACHE_ROOT, CONFIG_DIR, DOOR_CLIENTS_PATH,
                                      DOOR_STATE_DIR, HOST_LIB, LAUNCH_DIR, REGISTRY_PATH, SECRETS_PATH, STATE_DIR,
                                      SWITCH_PATH, TLS_DIR, UNIT_DIR)

# What `sparkstack uninstall` asks for beyond the default, comma-separated in the deploy's environment.
WHAT_ENV = "SPARKSTACK_UNINSTALL"
EXTRAS = ("images", "weights", "secrets")
SERVICE_UNITS = (FRONTDOOR_UNIT, SWITCH_SOCKET_UNIT, MEMORY_GUARD_UNIT, CLUSTER_FENCE_UNIT)
OTHER_UNITS = (SWITCH_REQUEST_UNIT,)


def asked() -> set[str]:
    wanted = {w for w in os.environ.get(WHAT_ENV, "").split(",") if w}
    unknown = wanted - set(EXTRAS)
    if unknown:
        raise ValueError(f"{WHAT_ENV}: unknown {', '.join(sorted(unknown))} (known: {', '.join(EXTRAS)})")
    return wanted


@deploy("sparkstack uninstall")
def uninstall(settings: GroupSettings) -> None:
    extras = asked()
    found = host.get_fact(Command, command=f"grep -l '{MODEL_UNIT_MARK}' {UNIT_DIR}/*.service 2>/dev/null || true")
    model_units = sorted(filter(None, (found or "").splitlines()))
    registry = host.get_fact(Command, command=f"cat {REGISTRY_PATH} 2>/dev/null || true") or ""
    try:
        images = {m["image"] for m in json.loads(registry)["models"].values() if m.get("image")}
    except (ValueError, KeyError, TypeError, AttributeError):
        images = set()
    # And what the lock pins, with the previous pins the deploy keeps for a rollback.
    lock = load_lock(host_group()) if "images" in extras else None
    if lock is not None:
        images |= {e.pinned for e in [*lock.images.values(), *lock.previous_images.values()]}
    images = sorted(images)
    # Running models first, then the services, so nothing restarts what is being taken away.
    for unit_path in model_units + [f"{UNIT_DIR}/{u}" for u in SERVICE_UNITS]:
        if host.get_fact(File, path=unit_path):
            unit = os.path.basename(unit_path)
            systemd.service(name=f"Stop and disable {unit}", service=unit, running=False, enabled=False)
    removed = [files.file(name=f"Remove {unit_path}", path=unit_path, present=False)
               for unit_path in model_units + [f"{UNIT_DIR}/{u}" for u in SERVICE_UNITS + OTHER_UNITS]]
    dropin = files.file(name=f"Remove {EARLYOOM_DROPIN}", path=EARLYOOM_DROPIN, present=False)
    dropins = os.path.dirname(EARLYOOM_DROPIN)
    if set(host.get_fact(FindFiles, path=dropins, maxdepth=1) or []) <= {EARLYOOM_DROPIN}:
        files.directory(name=f"Remove {dropins} (only sparkstack's drop-in was there)", path=dropins, present=False)
    systemd.daemon_reload(name="Reload systemd (the units are gone)", _if=any_changed(dropin, *removed))
    if host.get_fact(File, path=f"{UNIT_DIR}/earlyoom.service") or host.get_fact(File, path="/lib/systemd/system/earlyoom.service"):
        systemd.service(name="Restart earlyoom.service with its own thresholds", service="earlyoom.service",
                        restarted=True, _if=any_changed(dropin))
    for path in (SWITCH_PATH, REGISTRY_PATH, DOOR_CLIENTS_PATH, CLUSTER_FENCE_PATH):
        files.file(name=f"Remove {path}", path=path, present=False)
    # /var/lib/sparkstack also holds the weights (the model cache): only the door's state goes from it.
    for path in (LAUNCH_DIR, HOST_LIB, TLS_DIR, CLUSTER_DIR, DOOR_STATE_DIR, STATE_DIR, os.path.dirname(COMPILE_CACHE_ROOT)):
        files.directory(name=f"Remove {path}", path=path, present=False)
    if host.get_fact(File, path=AUTHORIZED_KEYS):
        files.line(name=f"Remove the cluster switch's key from {AUTHORIZED_KEYS}", path=AUTHORIZED_KEYS,
                   line=f".* {key_comment(host_group())}", present=False)
    if FRONTDOOR_USER in (host.get_fact(Users) or {}):
        server.user(name=f"Remove user {FRONTDOOR_USER}", user=FRONTDOOR_USER, present=False)
    if FRONTDOOR_USER in (host.get_fact(Groups) or []):
        server.group(name=f"Remove group {FRONTDOOR_USER}", group=FRONTDOOR_USER, present=False)
    held = set(str(host.get_fact(Command, command="apt-mark showhold") or "").split())
    unhold = [p for p in settings.baseline_holds if p in held]
    if unhold:
        server.shell(name=f"Unhold {', '.join(unhold)} (sparkstack_baseline_holds)",
                     commands=[f"apt-mark unhold {' '.join(shlex.quote(p) for p in unhold)}"])
    if "images" in extras:
        present = [i for i in images
                   if (host.get_fact(Command, command=f"docker image inspect --format ok {shlex.quote(i)} 2>/dev/null || true")
                       or "").strip() == "ok"]
        if present:
            server.shell(name=f"Remove the engine images ({len(present)})",
                         commands=[f"docker image rm {' '.join(shlex.quote(i) for i in present)}"])
    cache = settings.model_cache_dir
    if "weights" in extras and host.get_fact(Directory, path=cache):
        if host.get_fact(Command, command=f"mountpoint -q {shlex.quote(cache)} && echo mounted || true"):
            # A file system of its own (a disk for the weights): emptied, not unmounted.
            server.shell(name=f"Remove the weights in {cache} (a mount point: its contents)",
                         commands=[f"find {shlex.quote(cache)} -mindepth 1 -delete"])
        else:
            files.directory(name=f"Remove the weights in {cache}", path=cache, present=False)
    if "secrets" in extras:
        files.file(name=f"Remove {SECRETS_PATH}", path=SECRETS_PATH, present=False)
        files.directory(name=f"Remove {CONFIG_DIR}", path=CONFIG_DIR, present=False)
