"""Rollback: put a model's previous pins back in the lock (`sparkstack rollback MODEL`).

`sparkstack lock --upgrade` keeps the entry each upgrade replaced (previous_images, previous_models in the lock), and
a deploy never deletes an image or a snapshot, so the host still has them: the deploy after a rollback rewrites the
launch script and fetches nothing. Rolling back twice rolls forward again: current and previous swap.
"""

from __future__ import annotations

from sparkstack.artifacts import Intents
from sparkstack.lockfile import Lock, repo_is_current


class RollbackError(Exception):
    pass


def roll_back(lock: Lock, needed: Intents, name: str) -> tuple[Lock, list[str]]:
    """The lock with `name`'s previous pins current (and its current ones kept as previous), and one line per swap."""
    refs, repos = needed.of_profile(name)
    images, previous_images = dict(lock.images), dict(lock.previous_images)
    models, previous_models = dict(lock.models), dict(lock.previous_models)
    lines = []
    for ref in refs:
        if ref in previous_images and ref in images:
            images[ref], previous_images[ref] = previous_images[ref], images[ref]
            others = [p for p in needed.images[ref] if p != name]
            lines.append(f"image {ref} -> {images[ref].pinned} (was {previous_images[ref].pinned})"
                         + (f"; {', '.join(others)} run(s) it too and roll back with it" if others else ""))
    for repo in repos:
        if repo in previous_models and repo in models:
            if not repo_is_current(previous_models[repo], needed.repos[repo]):
                raise RollbackError(f"{name}: the previous pin of {repo} was locked for revision "
                                    f"{previous_models[repo].revision!r}, the profile now asks for "
                                    f"{needed.repos[repo].revision!r}: change the profile back first")
            models[repo], previous_models[repo] = previous_models[repo], models[repo]
            lines.append(f"repo {repo} -> {models[repo].commit} (was {previous_models[repo].commit})")
    if not lines:
        raise RollbackError(f"{name}: the lock keeps no previous pins for it; `sparkstack lock --host HOST --upgrade "
                            f"{name}` keeps the ones it replaces")
    return lock.model_copy(update={"images": images, "models": models, "previous_images": previous_images,
                                   "previous_models": previous_models}), lines
