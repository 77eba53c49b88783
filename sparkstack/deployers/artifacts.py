"""The artifacts deployer: the locked images and model snapshots, on the host before any model needs them.

  lock      every image and repo the host's profiles use must have a current lock entry
            (group_data/<group>.lock.json); refused otherwise, before anything changes
  preflight which images and snapshot files are missing (facts), and whether the docker root and
            the model cache have room for them plus a margin; refused with the numbers otherwise
  fetch     sparkstack-fetch pulls each missing image by digest, then fetches each incomplete snapshot
            at its locked commit inside the engine image; both report progress at least every 10 s
            (shown by `pyinfra -vvv`, and appended to /var/log/sparkstack-fetch.log on the host)

A converged host has every image and every file: no operation is emitted and nothing is fetched. That includes
the previous pins an upgrade kept in the lock (sparkstack_rollback_keep_gb bounds them), so a rollback fetches
nothing, even after a clean install.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from pyinfra import host, logger
from pyinfra.api import DeployError, deploy
from pyinfra.facts.server import Command
from pyinfra.operations import files, server

from sparkstack.deployers.helpers import put_rendered
from sparkstack.artifacts import Intents, Pins, intents, snapshot_dir
from sparkstack.groups import GroupSettings
from sparkstack.lockfile import Lock, LockError, load_lock, lock_problems, pins, repo_is_current
from sparkstack.render import FETCH_PATH, LAUNCH_DIR, Rendering

COMPONENT = "artifacts"
GB = 1e9


def size(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1e6:.1f} MB"


@dataclass
class Missing:
    images: dict[str, int]                    # pinned reference -> bytes (the lock's size)
    snapshots: dict[str, dict[str, int]]      # repo -> {file: size} still to fetch
    previous_snapshots: dict[str, dict[str, int]] = field(default_factory=dict)  # the previous pins kept for a rollback

    @property
    def nothing(self) -> bool:
        return not (self.images or self.snapshots or self.previous_snapshots)

    @property
    def image_bytes(self) -> int:
        return sum(self.images.values())

    @property
    def snapshot_bytes(self) -> int:
        return sum(sum(f.values()) for f in [*self.snapshots.values(), *self.previous_snapshots.values()])


def locked_pins(group: str, profiles, settings: GroupSettings) -> tuple[Lock, Intents, Pins]:
    """The lock for the host's profiles, or a refusal naming each unlocked or stale profile."""
    needed = intents(profiles, settings)
    try:
        lock = load_lock(group)
    except LockError as exc:
        raise DeployError(f"{exc}; nothing was changed") from None
    problems = lock_problems(lock, needed, group)
    if problems:
        raise DeployError(f"{host.name}: the lock does not pin what group {group!r} deploys; nothing was changed:\n"
                          + "\n".join(f"  {line}" for line in problems))
    return lock, needed, pins(lock, needed)


def previous_pins_kept(lock: Lock, needed: Intents, settings: GroupSettings) -> tuple[dict, dict]:
    """The previous pins the host keeps beside the current ones ({ref: image}, {repo: model}): those an upgrade
    replaced that still fit the profiles' intent, while they fit sparkstack_rollback_keep_gb (none at 0)."""
    images = {ref: entry for ref, entry in lock.previous_images.items()
              if ref in needed.images and entry != lock.images.get(ref)}
    models = {repo: entry for repo, entry in lock.previous_models.items()
              if repo in needed.repos and entry != lock.models.get(repo) and repo_is_current(entry, needed.repos[repo])}
    total = sum(e.size_bytes for e in images.values()) + sum(e.size_bytes for e in models.values())
    if total > settings.rollback_keep_gb * GB:
        if settings.rollback_keep_gb:  # 0 keeps none on purpose: nothing to warn about
            logger.warning(f"{host.name}: the previous pins kept for a rollback take {size(total)}, over "
                           f"sparkstack_rollback_keep_gb ({settings.rollback_keep_gb:g} GB): not kept on the host, so a "
                           "rollback fetches them")
        return {}, {}
    return images, models


def missing_files(repo: str, entry, settings: GroupSettings) -> dict[str, int]:
    """The files of a locked snapshot not on the host at their locked size."""
    where = snapshot_dir(settings.model_cache_dir, repo, entry.commit)
    names = " ".join(shlex.quote(name) for name in sorted(entry.files))
    listing = host.get_fact(Command, command=f"cd {shlex.quote(where)} 2>/dev/null && stat -L -c '%s %n' -- {names} 2>/dev/null; true")
    have = {}
    for line in (listing or "").splitlines():
        size, _, name = line.partition(" ")
        if size.isdigit():
            have[name] = int(size)
    return {name: size for name, size in entry.files.items() if have.get(name) != size}


def missing_artifacts(lock: Lock, needed: Intents, settings: GroupSettings) -> Missing:
    previous_images, previous_models = previous_pins_kept(lock, needed, settings)
    images = {}
    for entry in [lock.images[ref] for ref in needed.images] + list(previous_images.values()):
        present = host.get_fact(Command, command=f"docker image inspect --format ok {shlex.quote(entry.pinned)} 2>/dev/null || true")
        if (present or "").strip() != "ok":
            images[entry.pinned] = entry.size_bytes
    snapshots = {repo: todo for repo in needed.repos if (todo := missing_files(repo, lock.models[repo], settings))}
    previous = {repo: todo for repo, entry in previous_models.items() if (todo := missing_files(repo, entry, settings))}
    return Missing(images, snapshots, previous)


def check_disk(missing: Missing, settings: GroupSettings) -> None:
    """Refuse, before any byte is fetched, when the docker root or the model cache cannot take what is missing."""
    if missing.nothing:
        return
    cache = shlex.quote(settings.model_cache_dir)
    answer = host.get_fact(Command, command=(
        "root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null); "
        f"d={cache}; while [ ! -d \"$d\" ]; do d=$(dirname \"$d\"); done; "
        "df -B1 --output=avail,target \"$root\" | tail -n 1; df -B1 --output=avail,target \"$d\" | tail -n 1"))
    rows = [line.split(None, 1) for line in (answer or "").splitlines() if line.strip()]
    if len(rows) != 2:
        raise DeployError(f"{host.name}: could not read the free space of the docker root and {settings.model_cache_dir}")
    (root_free, root_fs), (cache_free, cache_fs) = ((int(a), t) for a, t in rows)
    needs = {root_fs: [int(root_free), 0, []], cache_fs: [int(cache_free), 0, []]}
    needs[root_fs][1] += missing.image_bytes
    if missing.image_bytes:
        needs[root_fs][2].append(f"images {size(missing.image_bytes)}")
    needs[cache_fs][1] += missing.snapshot_bytes
    if missing.snapshot_bytes:
        needs[cache_fs][2].append(f"snapshots {size(missing.snapshot_bytes)}")
    margin = int(settings.disk_margin_gb * GB)
    short = []
    for filesystem, (free, need, parts) in needs.items():
        if need and need + margin > free:
            short.append(f"  filesystem {filesystem}: needs {size(need)} ({', '.join(parts)}) + {size(margin)} "
                         f"margin = {size(need + margin)}, has {size(free)} free")
    if short:
        raise DeployError(f"{host.name}: not enough disk for the artifacts still to fetch; nothing was fetched or "
                          "changed:\n" + "\n".join(short) + "\n  free space there (or lower sparkstack_disk_margin_gb), "
                          "then deploy again")


@deploy("sparkstack artifacts")
def provision_artifacts(rendering: Rendering, lock: Lock, needed: Intents, settings: GroupSettings) -> Missing:
    """Fetch the missing images and snapshot files; returns what was missing when the deploy was planned."""
    missing = missing_artifacts(lock, needed, settings)
    check_disk(missing, settings)
    files.directory(name=f"Directory {LAUNCH_DIR}", path=LAUNCH_DIR, user="root", group="root", mode="0755")
    for rendered in rendering.of(COMPONENT):
        put_rendered(rendered, f"{rendered.kind.capitalize()} program")
    for pinned, nbytes in missing.images.items():
        server.shell(name=f"Pull image {pinned} ({size(nbytes)} unpacked)",
                     commands=[f"{FETCH_PATH} image {shlex.quote(pinned)}"])
    if missing.nothing:
        logger.info(f"{host.name}: every locked image and snapshot is present; nothing to fetch")
    return missing


@deploy("sparkstack model snapshots")
def fetch_snapshots(lock: Lock, needed: Intents, settings: GroupSettings, missing: Missing) -> None:
    """Fetch each incomplete snapshot at its locked commit (runs after the engine images are checked)."""
    wanted = [(repo, todo, lock.models[repo]) for repo, todo in missing.snapshots.items()]
    wanted += [(repo, todo, lock.previous_models[repo]) for repo, todo in missing.previous_snapshots.items()]
    for repo, todo, entry in wanted:
        image = lock.images[needed.repos[repo].image].pinned
        spec = {"repo": repo, "commit": entry.commit, "allow": entry.allow, "ignore": entry.ignore,
                "files": entry.files, "digests": entry.digests, "endpoint": settings.hf_endpoint,
                "cache_dir": settings.model_cache_dir}
        server.shell(name=f"Fetch {repo}@{entry.commit[:12]}: {len(todo)} file(s), {size(sum(todo.values()))}",
                     commands=[f"{FETCH_PATH} snapshot {shlex.quote(image)} {shlex.quote(json.dumps(spec, sort_keys=True))}"])
