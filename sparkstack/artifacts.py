"""Artifacts: the images and model repos a group's profiles need, as intent (what the profiles say).

The lock (sparkstack/lockfile.py) records what each intent resolved to on a host: an image digest,
a repo commit with its files and sizes. Rendering reads the pins through `Pins`; an intent without
a pin renders as a visible UNLOCKED marker that no deploy accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sparkstack.engines import adapter_for
from sparkstack.groups import GroupSettings
from sparkstack.profiles import Profile

UNLOCKED = "UNLOCKED"
# Drafts have no revision field of their own in a profile: they follow their repo's main branch.
DRAFT_REVISION = "main"


def unlocked(value: str) -> str:
    """How an unresolved value is written into rendered files: it fails loudly if anything runs it."""
    return f"{UNLOCKED}:{value}"


@dataclass
class RepoIntent:
    repo: str
    revision: str
    allow: tuple[str, ...]
    ignore: tuple[str, ...]
    image: str  # an image of a profile that uses the repo: its huggingface_hub resolves and fetches it
    used_by: list[str] = field(default_factory=list)


@dataclass
class Intents:
    images: dict[str, list[str]]   # image reference as written -> profiles that run it
    repos: dict[str, RepoIntent]   # repo id -> what the group needs from it

    def of_profile(self, name: str) -> tuple[list[str], list[str]]:
        """The image references and repo ids one profile uses."""
        return ([ref for ref, users in self.images.items() if name in users],
                [repo for repo, intent in self.repos.items() if name in intent.used_by])


def draft_models(profile: Profile) -> list[str]:
    drafts = []
    for variant in profile.variant_names:
        spec = profile.resolve(variant).speculative
        if spec is not None and spec.draft_model and spec.draft_model not in drafts:
            drafts.append(spec.draft_model)
    return drafts


def intents(profiles: list[Profile], settings: GroupSettings) -> Intents:
    images: dict[str, list[str]] = {}
    repos: dict[str, RepoIntent] = {}
    for p in profiles:
        image = settings.image_for(p.engine, p.image)
        images.setdefault(image, []).append(p.name)
        allow, ignore = adapter_for(p.engine).weight_patterns(p)
        for repo, revision in [(p.model, p.revision)] + [(d, DRAFT_REVISION) for d in draft_models(p)]:
            intent = repos.get(repo)
            if intent is None:
                repos[repo] = RepoIntent(repo, revision, tuple(sorted(allow)), tuple(sorted(ignore)), image, [p.name])
                continue
            # Two profiles share a repo: fetch what either loads, skip only what both skip.
            intent.allow = tuple(sorted(set(intent.allow) | set(allow)))
            intent.ignore = tuple(sorted(set(intent.ignore) & set(ignore)))
            intent.used_by.append(p.name)
    return Intents(images, repos)


def repo_cache_dir(cache_dir: str, repo: str) -> str:
    """huggingface_hub's cache layout under the host directory the containers mount."""
    return f"{cache_dir.rstrip('/')}/hub/models--{repo.replace('/', '--')}"


def snapshot_dir(cache_dir: str, repo: str, commit: str) -> str:
    return f"{repo_cache_dir(cache_dir, repo)}/snapshots/{commit}"


@dataclass(frozen=True)
class Pins:
    """What rendering writes for each artifact: the locked value, or an UNLOCKED marker."""

    images: dict[str, str]       # reference as written -> repo@sha256:digest
    revisions: dict[str, str]    # repo -> 40-hex commit
    intents: Intents
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # repo -> {path: size} at its commit

    def image(self, reference: str) -> str:
        return self.images.get(reference) or unlocked(reference)

    def of(self, repo: str) -> str:
        commit = self.revisions.get(repo)
        if commit:
            return commit
        intent = self.intents.repos.get(repo)
        return unlocked(intent.revision if intent else DRAFT_REVISION)

    def snapshots(self, profile_name: str) -> list[dict]:
        """The locked snapshots one profile needs on the host (repo, commit, files), for llm-switch's check."""
        _, repos = self.intents.of_profile(profile_name)
        return [{"repo": repo, "commit": self.of(repo), "files": sorted(self.files.get(repo, {}))} for repo in repos]

    @property
    def complete(self) -> bool:
        return all(ref in self.images for ref in self.intents.images) and all(r in self.revisions for r in self.intents.repos)


def unpinned(profiles: list[Profile], settings: GroupSettings) -> Pins:
    """Pins with nothing locked: every value renders as UNLOCKED (validation, review without a lock)."""
    return Pins({}, {}, intents(profiles, settings))
