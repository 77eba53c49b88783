"""What one engine build accepts, as its own parser reported it, and the check of a command line against it.

A release description comes from a probe (sparkstack/engines/probes/): committed for the
PyPI releases profiles declare (sparkstack/engines/releases/*.json, written by
tools/snapshot_engine.py), or asked of the pinned image on a host by the deploy's preflight.
Both are checked by the same code below.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

RELEASES_DIR = Path(__file__).resolve().parent / "releases"


class ReleaseError(Exception):
    pass


@dataclass(frozen=True)
class Action:
    options: tuple[str, ...]
    nargs: int | str | None
    choices: tuple[str, ...] | None
    # The parser's default as JSON text; None where the snapshot predates recording defaults.
    default: str | None = None


@dataclass(frozen=True)
class EngineRelease:
    """One engine build: its version, parser options, value choices and the env vars it reads."""

    engine: str
    version: str
    source: str
    actions: tuple[Action, ...]
    # Values the engine checks after parsing (tool and reasoning parser registries, ...): flag -> allowed.
    value_choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    env_vars: frozenset[str] = frozenset()
    # What each env var reads as when unset, as JSON text (vLLM snapshots since defaults were recorded).
    env_defaults: dict[str, str] = field(default_factory=dict)
    # Keys of vLLM's --speculative-config JSON and the methods it takes (empty for engines without one).
    speculative_config_keys: frozenset[str] = frozenset()
    speculative_methods: tuple[str, ...] = ()
    # The Ray the image's python imports, for vLLM's Ray backend: a version, "" when the image has none,
    # None when nobody asked (a release snapshot from PyPI says nothing about an image).
    ray_version: str | None = None

    @property
    def label(self) -> str:
        return f"{self.engine} {self.version}"

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)

    def options(self) -> set[str]:
        return {o for a in self.actions for o in a.options}

    def choices_of(self, flag: str) -> tuple[str, ...] | None:
        for action in self.actions:
            if flag in action.options:
                return action.choices or self.value_choices.get(action.options[0]) or self.value_choices.get(flag)
        return None

    def parser(self) -> argparse.ArgumentParser:
        """An argparse parser with the release's options, nargs and choices (values kept as strings)."""
        parser = _StrictParser(prog=self.label, add_help=False, allow_abbrev=False, exit_on_error=False)
        for action in self.actions:
            kwargs: dict = {"dest": action.options[0].lstrip("-").replace("-", "_")}
            if action.nargs == 0:
                kwargs.update(action="store_const", const=True)
            else:
                if action.nargs is not None:
                    kwargs["nargs"] = action.nargs
                if action.choices is not None:
                    kwargs["choices"] = list(action.choices)
            parser.add_argument(*action.options, **kwargs)
        return parser

    @classmethod
    def from_document(cls, document: dict, source: str) -> "EngineRelease":
        try:
            actions = tuple(Action(tuple(a["options"]), a["nargs"], tuple(a["choices"]) if a["choices"] is not None else None,
                                   json.dumps(a["default"], sort_keys=True) if "default" in a else None)
                            for a in document["actions"])
            Version(document["version"])
            return cls(
                engine=document["engine"],
                version=document["version"],
                source=source,
                actions=actions,
                value_choices={k: tuple(v) for k, v in (document.get("value_choices") or {}).items()},
                env_vars=frozenset(document.get("env_vars") or ()),
                env_defaults={k: json.dumps(v, sort_keys=True) for k, v in (document.get("env_defaults") or {}).items()},
                speculative_config_keys=frozenset(document.get("speculative_config_keys") or ()),
                speculative_methods=tuple(document.get("speculative_methods") or ()),
                ray_version=(document["ray"] or "") if "ray" in document else None,
            )
        except InvalidVersion:
            raise ReleaseError(f"{source}: reports version {document.get('version')!r}, which is not a PEP 440 "
                               "version; sparkstack cannot place it in a declared range") from None
        except (KeyError, TypeError) as exc:
            raise ReleaseError(f"{source}: not an engine release description ({exc})") from None


class _StrictParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit
        raise argparse.ArgumentError(None, message)


PROBE_MARKER = "SPARKSTACK-PROBE-ANSWER "


def probe_answer(output: str) -> dict:
    """The JSON document a probe printed after its marker (anything else on stdout is ignored)."""
    for line in output.splitlines():
        if line.startswith(PROBE_MARKER):
            return json.loads(line[len(PROBE_MARKER):])
    raise ValueError("no probe answer in the output")


def parse_specifier(text: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        try:
            return SpecifierSet(f"=={Version(text)}")
        except InvalidVersion:
            raise ReleaseError(f"{text!r} is neither a version (0.33.0) nor a range (>=0.33.0,<0.34)") from None


def admits(specifier: str, version: str) -> bool:
    """Whether a declared engine_version admits a build; dev and nightly builds count (prereleases=True)."""
    return parse_specifier(specifier).contains(Version(version), prereleases=True)


def committed_releases(engine: str | None = None, directory: Path = RELEASES_DIR) -> list[EngineRelease]:
    releases = []
    for path in sorted(directory.glob("*.json")):
        release = EngineRelease.from_document(json.loads(path.read_text(encoding="utf-8")), path.name)
        if engine is None or release.engine == engine:
            releases.append(release)
    return sorted(releases, key=lambda r: (r.engine, r.parsed_version))


def releases_for(engine: str, specifier: str, directory: Path = RELEASES_DIR) -> list[EngineRelease]:
    return [r for r in committed_releases(engine, directory) if admits(specifier, r.version)]
