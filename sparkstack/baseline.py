"""The host baseline on the kit's side: collecting it (sparkstack_host/baseline.py, run on the host), the known-bad
list (sparkstack/known_bad.yaml) with the group's waivers, and what changed against the lock.

A known-bad match refuses the deploy before the host is touched, unless the group waives that entry with an expiry
date and a reason (sparkstack_baseline_waivers, as InSpec's waivers do); an expired waiver refuses again. A
changed baseline fact is drift of its own kind: the deploy cannot fix it, CI must see it.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from sparkstack_host import baseline as host_baseline

KNOWN_BAD = Path(__file__).with_name("known_bad.yaml")
# How the deploy's preflight says a baseline fact changed since the lock; drift reads these lines from pyinfra.
DRIFT_MARK = "baseline changed since the lock:"


class KnownBad(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    match: dict[str, Any]
    symptom: str
    source: str

    def matches(self, facts: dict) -> bool:
        for key, wanted in self.match.items():
            value = facts.get(key)
            if wanted is None:
                if value is not None:
                    return False
            elif isinstance(wanted, str) and wanted.endswith("*"):
                if not isinstance(value, str) or not value.startswith(wanted[:-1]):
                    return False
            elif str(value) != str(wanted):
                return False
        return True


def known_bad() -> list[KnownBad]:
    return [KnownBad.model_validate(entry) for entry in yaml.safe_load(KNOWN_BAD.read_text(encoding="utf-8"))]


def collect_command(interfaces: list[str] = ()) -> str:
    """The shell command that prints the host's facts: the host module's own source, run by the host's python3."""
    source = Path(host_baseline.__file__).read_text(encoding="utf-8")
    args = " ".join(interfaces)
    return f"python3 - {args} <<'SPARKSTACK_BASELINE'\n{source}\nSPARKSTACK_BASELINE"


def with_fixture(facts: dict, fixture: dict) -> dict:
    """The host's facts, and where the host has no GPU, the group's fixture for the GPU facts (the test hosts have no
    GPU: sparkstack_baseline_fixture); "fixture" lists what came from it."""
    if not fixture or facts.get("nvidia.driver") is not None:
        return facts
    return {**facts, **fixture, "fixture": sorted(fixture)}


def parse(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def findings(facts: dict, waivers: dict, today: datetime.date | None = None) -> tuple[list[str], list[str]]:
    """(refusals, waived): one line per known-bad entry the facts match, with its symptom and source."""
    today = today or datetime.date.today()
    refusals, waived = [], []
    for entry in known_bad():
        if not entry.matches(facts):
            continue
        what = (f"known-bad {entry.id}: {', '.join(f'{k}={facts.get(k)}' for k in entry.match)}: {entry.symptom} "
                f"(reported: {entry.source})")
        waiver = waivers.get(entry.id)
        if waiver is not None and waiver.until >= today:
            waived.append(f"{what}; waived until {waiver.until} by sparkstack_baseline_waivers: {waiver.reason}")
        elif waiver is not None:
            refusals.append(f"{what}; its waiver expired on {waiver.until}")
        else:
            refusals.append(f"{what}; waive it with sparkstack_baseline_waivers = {{{entry.id!r}: "
                            "{'until': 'YYYY-MM-DD', 'reason': '...'}} to deploy anyway")
    return refusals, waived


def changes(locked: dict, now: dict) -> list[str]:
    """One line per baseline fact that differs from the lock."""
    keys = sorted((set(locked) | set(now)) - {"fixture"})
    return [f"{key}: {locked.get(key)!r} in the lock, {now.get(key)!r} now" for key in keys if locked.get(key) != now.get(key)]
