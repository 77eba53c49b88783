"""`sparkstack lock --host H [--upgrade [NAME]]`: resolve a group's artifact intents on one of its hosts.

The host is where the network, the registry credentials, the HF token and the target architecture
are: images are pulled there with its docker (the digest docker records for the tag, which for a
multi-arch image is the index digest), repos are resolved there by sparkstack-hub inside the engine
image, with the token read from the host's secrets file inside the container. Nothing secret
comes back; the lock records digests, commits, file names and sizes.

Without --upgrade only unlocked and stale entries are resolved; `--upgrade` re-resolves every entry,
`--upgrade NAME` those of one profile.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from sparkstack import baseline
from sparkstack.artifacts import Intents, intents
from sparkstack.lockfile import Lock, LockedImage, LockedRepo, LockError, load_lock, lock_path, repo_is_current, save_lock
from sparkstack.paths import display_path, files_dir, repo_root
from sparkstack.remote import RemoteError, ssh_base

MARK = "SPARKSTACK-HUB "


def upload_tools(host: str, ssh_config: Path | None) -> str:
    """Copy sparkstack-fetch, sparkstack-hub and the host package they run from into a fresh temporary
    directory on the host (the fetch shim finds the package beside itself)."""
    directory = _ssh(host, ssh_config, "mktemp -d /tmp/sparkstack-lock.XXXXXX").stdout.strip()
    for name in ("sparkstack-fetch", "sparkstack-hub"):
        content = (files_dir() / name).read_text(encoding="utf-8")
        _ssh(host, ssh_config, f"cat > {directory}/{name}", stdin=content)
    _ssh(host, ssh_config, f"mkdir {directory}/sparkstack_host")
    for module in sorted((repo_root() / "sparkstack_host").glob("*.py")):
        _ssh(host, ssh_config, f"cat > {directory}/sparkstack_host/{module.name}", stdin=module.read_text(encoding="utf-8"))
    return directory


def _ssh(host: str, ssh_config: Path | None, command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(ssh_base(host, ssh_config) + [command], input=stdin, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RemoteError(f"ssh {host} {command!r} exited {result.returncode}: {result.stderr.strip()[:300]}")
    return result


def _streamed(host: str, ssh_config: Path | None, command: str) -> dict:
    """Run a tool on the host, show its progress lines here, return its one marked answer."""
    process = subprocess.Popen(ssh_base(host, ssh_config) + [command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    answer = None
    for line in process.stdout:
        if line.startswith(MARK):
            answer = json.loads(line[len(MARK):])
        else:
            click.echo(f"  {host}: {line.rstrip()}", err=True)
    if process.wait() != 0 or answer is None:
        raise RemoteError(f"{host}: `{command.split(' ', 2)[1]}` failed (exit {process.returncode}); see the lines above")
    return answer


def repository_of(reference: str) -> str:
    """`repo[:tag]` without its tag (a registry port's colon stays)."""
    name, _, tag = reference.rpartition(":")
    return name if name and "/" not in tag else reference


def pick_digest(reference: str, repo_digests: list[str]) -> str:
    repo = repository_of(reference.split("@", 1)[0])
    for candidate in repo_digests:
        if candidate.split("@", 1)[0] in (repo, f"docker.io/{repo}", f"docker.io/library/{repo}"):
            return candidate
    if len(repo_digests) == 1:
        return repo_digests[0]
    raise LockError(f"{reference}: docker reports no digest for this repository (RepoDigests: {repo_digests}); "
                    "an image built or loaded locally has none: push it to a registry and lock the pushed name")


def to_resolve(lock: Lock, needed: Intents, upgrade: str | None, profile_of) -> tuple[set[str], set[str]]:
    """The image references and repos to resolve now."""
    images = {ref for ref in needed.images if ref not in lock.images}
    repos = {repo for repo, intent in needed.repos.items() if not repo_is_current(lock.models.get(repo), intent)}
    if upgrade == "*":
        images |= set(needed.images)
        repos |= set(needed.repos)
    elif upgrade:
        name = profile_of(upgrade)
        refs, profile_repos = needed.of_profile(name)
        images |= set(refs)
        repos |= set(profile_repos)
    return images, repos


def run_lock(host: str, group: str, ssh_config: Path | None, upgrade: str | None, profiles, settings, profile_of) -> int:
    needed = intents(profiles, settings)
    try:
        lock = load_lock(group) or Lock(group=group)
    except LockError as exc:
        if upgrade != "*":
            raise
        click.echo(f"lock: {exc}; rewriting it", err=True)
        lock = Lock(group=group)
    images, repos = to_resolve(lock, needed, upgrade, profile_of)
    new_images = {ref: lock.images[ref] for ref in needed.images if ref in lock.images}
    new_models = {repo: lock.models[repo] for repo in needed.repos if repo in lock.models}
    if images or repos:
        tools = upload_tools(host, ssh_config)
        try:
            for ref in sorted(images):
                click.echo(f"lock: resolving image {ref} on {host} (docker pull; this can take a while)", err=True)
                answer = _streamed(host, ssh_config, f"python3 {tools}/sparkstack-fetch resolve-image {shlex.quote(ref)}")
                new_images[ref] = LockedImage(pinned=pick_digest(ref, answer["repo_digests"]),
                                              size_bytes=answer["size_bytes"], platform=answer["platform"],
                                              nccl=answer.get("nccl"))
            for repo in sorted(repos):
                intent = needed.repos[repo]
                image = new_images[intent.image].pinned
                spec = {"repo": repo, "revision": intent.revision, "allow": list(intent.allow), "ignore": list(intent.ignore),
                        "endpoint": settings.hf_endpoint, "cache_dir": settings.model_cache_dir}
                click.echo(f"lock: resolving {repo}@{intent.revision} on {host}", err=True)
                answer = _streamed(host, ssh_config, f"SPARKSTACK_HUB={tools}/sparkstack-hub python3 {tools}/sparkstack-fetch "
                                                     f"resolve-repo {shlex.quote(image)} {shlex.quote(json.dumps(spec))}")
                unchecked = sorted(set(answer["files"]) - set(answer.get("digests", {})))
                if unchecked:
                    raise click.ClickException(f"lock: the hub gave no digest for {len(unchecked)} file(s) of {repo} "
                                               f"({', '.join(unchecked[:3])}): their bytes could not be checked when "
                                               "fetched; nothing was written")
                try:
                    new_models[repo] = LockedRepo(revision=intent.revision, commit=answer["commit"],
                                                  allow=list(intent.allow), ignore=list(intent.ignore),
                                                  files=answer["files"], digests=answer["digests"])
                except ValidationError as exc:
                    problems = "; ".join(e["msg"] for e in exc.errors())
                    raise click.ClickException(f"lock: refused the hub's answer for {repo}: {problems}; "
                                               "nothing was written") from None
        finally:
            _ssh(host, ssh_config, f"rm -rf {tools}")
    interfaces = [settings.cluster_interface] if settings.cluster_interface and settings.cluster_addresses else []
    facts = baseline.with_fixture(baseline.parse(_ssh(host, ssh_config, baseline.collect_command(interfaces)).stdout),
                                  dict(settings.baseline_fixture))
    new_lock = Lock(group=group, images=new_images, models=new_models, hosts={**lock.hosts, host: facts},
                    previous_images=kept_for_rollback(lock.images, lock.previous_images, new_images),
                    previous_models=kept_for_rollback(lock.models, lock.previous_models, new_models))
    for line in describe_changes(lock, new_lock):
        click.echo(line)
    if new_lock != lock or not lock_path(group).is_file():
        path = save_lock(new_lock)
        click.echo(f"lock: wrote {display_path(path)}")
    else:
        click.echo(f"lock: {display_path(lock_path(group))} is up to date")
    return 0


def kept_for_rollback(old: dict, previous: dict, new: dict) -> dict:
    """One previous entry per image and repo still in use: the one this run replaced, else the one kept before."""
    kept = {key: entry for key, entry in previous.items() if key in new}
    kept |= {key: old[key] for key, entry in new.items() if key in old and old[key] != entry}
    return kept


def describe_changes(old: Lock, new: Lock) -> list[str]:
    lines = []
    for ref, entry in sorted(new.images.items()):
        before = old.images.get(ref)
        state = "unchanged" if before == entry else (f"was {before.pinned}, kept for rollback" if before else "new")
        lines.append(f"  image {ref} -> {entry.pinned} ({entry.size_bytes / 1e9:.2f} GB, {entry.platform}, "
                     f"NCCL: {entry.nccl or 'not asked'}; {state})")
    for repo, entry in sorted(new.models.items()):
        before = old.models.get(repo)
        state = "unchanged" if before == entry else (f"was {before.commit}, kept for rollback" if before else "new")
        lines.append(f"  repo {repo}@{entry.revision} -> {entry.commit} ({len(entry.files)} files, "
                     f"{entry.size_bytes / 1e9:.2f} GB; {state})")
    for ref in sorted(set(old.images) - set(new.images)):
        lines.append(f"  image {ref}: no longer used; dropped")
    for repo in sorted(set(old.models) - set(new.models)):
        lines.append(f"  repo {repo}: no longer used; dropped")
    for host, facts in sorted(new.hosts.items()):
        before = old.hosts.get(host)
        if before is None:
            gpu = facts.get("nvidia.driver") or facts.get("nvidia.why")
            lines.append(f"  host {host}: baseline recorded (kernel {facts.get('kernel.release')}, NVIDIA {gpu}"
                         + (f"; from the group's fixture: {', '.join(facts['fixture'])}" if facts.get("fixture") else "") + ")")
        else:
            lines += [f"  host {host}: baseline {change}" for change in baseline.changes(before, facts)]
    return lines


def fail(message: str) -> None:
    click.echo(f"lock: {message}", err=True)
    sys.exit(2)
