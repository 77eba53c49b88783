"""The lock: what a group's artifact intents resolved to, like uv.lock or Terraform's lock file.

Profiles keep the intent (`image: eugr/spark-vllm:latest`, `model: org/repo`, `revision: main`);
group_data/<group>.lock.json keeps the resolution, written only by `sparkstack lock` on a host of
the group (images through its docker, repos through the hub API with its token):

  images: reference as written -> {pinned: repo@sha256:<digest>, size_bytes, platform}
  models: repo -> {revision (the intent it was locked for), commit (40 hex), allow, ignore,
                   files: {path: size}, digests: {path: sha256:<hex> | git-sha1:<hex>}, size_bytes}
  hosts:  host -> its platform baseline (the kernel, the NVIDIA driver, docker, ...: sparkstack/baseline.py)
  previous_images, previous_models: the entry each upgrade replaced, one per image and repo, for
                   `sparkstack rollback MODEL` (the host keeps their images and snapshots: a deploy never
                   deletes one, so a rollback fetches nothing)

An entry is stale when its intent changed since it was locked (another revision, other file
patterns); a deploy refuses unlocked and stale entries. Nothing here is ever invented: a value
exists only if a host reported it.
"""

from __future__ import annotations

import os

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparkstack.artifacts import Intents, Pins
from sparkstack.paths import display_path, group_data_dir

LOCK_VERSION = 1
DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
FILE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|git-sha1:[0-9a-f]{40}")


def snapshot_name_problem(name: str) -> str | None:
    """Why NAME cannot be a file of a snapshot, else None: it must be a relative path of plain segments."""
    if not name or name.startswith("/") or "\\" in name:
        return "is not a relative path"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "has a control character"
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        return "has an empty, '.' or '..' segment"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LockedImage(_Strict):
    pinned: str = Field(pattern=DIGEST_REF.pattern)
    size_bytes: int = Field(ge=0)
    platform: str
    # The NCCL the image carries, as the image itself answered when locked (sparkstack_host/fetch.py: nccl_of);
    # None in a lock written before it was asked.
    nccl: str | None = None


class LockedRepo(_Strict):
    revision: str
    commit: str = Field(pattern=COMMIT.pattern)
    allow: list[str]
    ignore: list[str]
    files: dict[str, int]
    # What each file's bytes hash to, as the hub gave it: "sha256:<hex>" (an LFS file) or "git-sha1:<hex>" (its git
    # blob id). The fetcher checks every file it fetches against it (files/sparkstack-hub).
    digests: dict[str, str] = {}

    @field_validator("digests")
    @classmethod
    def _digests_are_hashes(cls, digests: dict[str, str]) -> dict[str, str]:
        for name, digest in digests.items():
            if not FILE_DIGEST.fullmatch(digest):
                raise ValueError(f"file {name[:200]!r} has digest {digest[:80]!r}, which is neither sha256:<64 hex> "
                                 "nor git-sha1:<40 hex>")
        return digests

    @model_validator(mode="after")
    def _digests_name_locked_files(self):
        strays = sorted(set(self.digests) - set(self.files))
        if strays:
            raise ValueError(f"digests name files the lock does not hold: {', '.join(n[:200] for n in strays[:5])}")
        return self

    @field_validator("files")
    @classmethod
    def _names_stay_inside_the_snapshot(cls, files: dict[str, int]) -> dict[str, int]:
        # A hub answers with these names, and the host's fetcher writes and cleans files by them: a name that
        # leaves the snapshot directory would let a hub (or an edited lock) write or delete elsewhere.
        for name, size in files.items():
            why = snapshot_name_problem(name)
            if why:
                raise ValueError(f"file name {name[:200]!r} {why}")
            if size < 0:
                raise ValueError(f"file {name!r} has a negative size")
        return files

    @property
    def size_bytes(self) -> int:
        return sum(self.files.values())


class Lock(_Strict):
    lock_version: int = LOCK_VERSION
    group: str
    images: dict[str, LockedImage] = {}
    models: dict[str, LockedRepo] = {}
    # Each host's platform as `sparkstack lock --host` found it (sparkstack_host/baseline.py): drift reports a change.
    hosts: dict[str, dict[str, str | int | list[str] | None]] = {}
    # What the last upgrade of each entry replaced (sparkstack/rollback.py swaps them back).
    previous_images: dict[str, LockedImage] = {}
    previous_models: dict[str, LockedRepo] = {}


class LockError(Exception):
    pass


def lock_path(group: str) -> Path:
    """group_data/<group>.lock.json, or under SPARKSTACK_LOCK_DIR when set (the tests' parallel shards each
    lock the test groups against their own registry and hub)."""
    override = os.environ.get("SPARKSTACK_LOCK_DIR")
    return (Path(override) if override else group_data_dir()) / f"{group}.lock.json"


def locked_model_sizes(lock: Lock | None, profiles) -> dict[str, tuple[str, float]]:
    """Profile name -> (its model repo, the GB of the files the lock records for it), for the locked ones."""
    if lock is None:
        return {}
    return {p.name: (p.model, lock.models[p.model].size_bytes / 1e9) for p in profiles if p.model in lock.models}


def load_lock(group: str) -> Lock | None:
    path = lock_path(group)
    if not path.is_file():
        return None
    try:
        lock = Lock.model_validate(_without_derived(json.loads(path.read_text(encoding="utf-8"))))
    except (ValueError, ValidationError) as exc:
        raise LockError(f"{display_path(path)}: not a valid sparkstack lock ({str(exc).splitlines()[0]}); "
                        f"rewrite it with `sparkstack lock --host HOST --upgrade`") from None
    if lock.group != group:
        raise LockError(f"{display_path(path)}: locks group {lock.group!r}, not {group!r}")
    return lock


def save_lock(lock: Lock) -> Path:
    path = lock_path(lock.group)
    document = lock.model_dump(mode="json")
    for key, entries in (("models", lock.models), ("previous_models", lock.previous_models)):
        document[key] = {repo: {**entry, "size_bytes": entries[repo].size_bytes} for repo, entry in document[key].items()}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _without_derived(data: dict) -> dict:
    """The stored form carries size_bytes per model for readers; the model recomputes it."""
    for key in ("models", "previous_models"):
        for entry in data.get(key, {}).values() if isinstance(data, dict) else ():
            if isinstance(entry, dict):
                entry.pop("size_bytes", None)
    return data


def repo_is_current(entry: LockedRepo | None, intent) -> bool:
    # Patterns compare as sets: two profiles sharing a repo must not make it look stale.
    return (entry is not None and entry.revision == intent.revision
            and set(entry.allow) == set(intent.allow) and set(entry.ignore) == set(intent.ignore))


def lock_problems(lock: Lock | None, needed: Intents, group: str) -> list[str]:
    """One line per profile whose artifacts are unlocked or stale, naming the command that fixes it."""
    command = f"sparkstack lock --host HOST{' --group ' + group if group not in ('spark', 'testhost') else ''}"
    problems = []
    users: dict[str, list[str]] = {}
    for ref, profiles in needed.images.items():
        if lock is None or ref not in lock.images:
            for name in profiles:
                users.setdefault(name, []).append(f"image {ref} is not locked")
    for repo, intent in needed.repos.items():
        entry = lock.models.get(repo) if lock else None
        if entry is None:
            what = f"repo {repo} is not locked"
        elif not repo_is_current(entry, intent):
            what = (f"repo {repo} is locked for revision {entry.revision!r} and files {entry.allow}, "
                    f"the profiles now ask for {intent.revision!r} and {list(intent.allow)} (stale)")
        else:
            continue
        for name in intent.used_by:
            users.setdefault(name, []).append(what)
    for name in sorted(users):
        problems.append(f"{name}: {'; '.join(users[name])}: run `{command}` (the lock is "
                        f"{display_path(lock_path(group))})")
    return problems


def pins(lock: Lock | None, needed: Intents) -> Pins:
    """The pins rendering uses: only entries that are current; the rest render as UNLOCKED."""
    if lock is None:
        return Pins({}, {}, needed)
    images = {ref: lock.images[ref].pinned for ref in needed.images if ref in lock.images}
    revisions = {repo: lock.models[repo].commit for repo, intent in needed.repos.items()
                 if repo_is_current(lock.models.get(repo), intent)}
    files = {repo: dict(lock.models[repo].files) for repo in revisions}
    return Pins(images, revisions, needed, files)


def group_pins(group: str, profiles, settings) -> Pins:
    """The pins of the group's lock for these profiles (what `sparkstack render` and the deploy render with)."""
    from sparkstack.artifacts import intents

    return pins(load_lock(group), intents(list(profiles), settings))
