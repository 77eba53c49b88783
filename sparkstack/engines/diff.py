"""What changed between two snapshots of an engine release, for what the profiles use.

`sparkstack engines diff vllm 0.33.0 0.34.0` reads both snapshots (sparkstack/engines/releases/) and
reports, for every flag the rendered launch scripts pass and every env var they set: removed, a changed
number of values, choices taken away, and a changed default (where both snapshots record defaults).
The release-wide counts (options and env vars added and removed) follow, for the flags no profile uses yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkstack.engines.release import Action, EngineRelease
from sparkstack.profiles import Profile, rendered_launches


@dataclass(frozen=True)
class Use:
    """A flag or env var the rendered launches carry, and the profiles (or profile/variant) that carry it."""

    name: str
    kind: str  # "flag" or "env"
    by: tuple[str, ...]


def uses(profiles: list[Profile], engine: str) -> list[Use]:
    seen: dict[tuple[str, str], list[str]] = {}
    for profile in profiles:
        if profile.engine != engine:
            continue
        for subject, argv, env in rendered_launches(profile):
            for token in argv:
                if token.startswith("--"):
                    seen.setdefault((token.split("=", 1)[0], "flag"), []).append(subject)
            for name in env:
                seen.setdefault((name, "env"), []).append(subject)
    return [Use(name, kind, tuple(dict.fromkeys(by))) for (name, kind), by in sorted(seen.items())]


def _action(release: EngineRelease, flag: str) -> Action | None:
    return next((a for a in release.actions if flag in a.options), None)


def diff(old: EngineRelease, new: EngineRelease, profiles: list[Profile]) -> list[str]:
    """One line per change that touches what the profiles use, then the release-wide counts."""
    lines: list[str] = []
    unrecorded = set()
    for use in uses(profiles, old.engine):
        by = ", ".join(use.by)
        if use.kind == "flag":
            before, after = _action(old, use.name), _action(new, use.name)
            if before is None and after is None:
                continue  # neither release knows it: the release checks already refuse it
            if after is None:
                lines.append(f"removed   {use.name} (used by {by})")
                continue
            if before is None:
                lines.append(f"new       {use.name} in {new.version} (used by {by}; {old.version} refuses it)")
                continue
            if before.nargs != after.nargs:
                lines.append(f"changed   {use.name}: values {before.nargs!r} -> {after.nargs!r} (used by {by})")
            gone = sorted(set(before.choices or ()) - set(after.choices or ())) if after.choices is not None else []
            if gone:
                lines.append(f"changed   {use.name}: choices no longer taken: {', '.join(gone)} (used by {by})")
            if before.default is None or after.default is None:
                unrecorded.add(old.version if before.default is None else new.version)
            elif before.default != after.default:
                lines.append(f"default   {use.name}: {before.default} -> {after.default} (used by {by})")
        else:
            if use.name not in old.env_vars and use.name not in new.env_vars:
                continue
            if use.name in old.env_vars and use.name not in new.env_vars:
                lines.append(f"removed   env {use.name} (set by {by}; {new.version} no longer reads it)")
                continue
            before, after = old.env_defaults.get(use.name), new.env_defaults.get(use.name)
            if before is not None and after is not None and before != after:
                lines.append(f"default   env {use.name}: {before} -> {after} (set by {by})")
    if not lines:
        lines.append(f"nothing the profiles use changed between {old.label} and {new.version}")
    for version in sorted(unrecorded):
        lines.append(f"note: the {old.engine} {version} snapshot records no defaults (taken before defaults were "
                     f"recorded); snapshot it again with tools/snapshot_engine.py to compare them")
    added = new.options() - old.options()
    removed = old.options() - new.options()
    lines.append(f"release-wide: {len(added)} option(s) added, {len(removed)} removed; "
                 f"{len(new.env_vars - old.env_vars)} env var(s) added, {len(old.env_vars - new.env_vars)} removed")
    if removed:
        lines.append(f"  removed options: {', '.join(sorted(removed))}")
    return lines
