"""Drift: would a deploy change anything? A dry run of deploy.py, read from pyinfra's own plan.

pyinfra compares files, modes and unit states itself; this module only runs
`pyinfra --dry --json --diff` and reads the plan's `hosts_with_change`. Operations
that are only conditional (`_if=`, e.g. the daemon-reload that follows a unit
change) are not drift by themselves.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sparkstack.paths import REPO_ROOT

EXIT_CLEAN = 0
EXIT_DRIFT = 1
EXIT_UNKNOWN = 2
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class DriftReport:
    exit_code: int
    changes: list[tuple[str, str]] = field(default_factory=list)  # (host, operation name)
    diffs: list[str] = field(default_factory=list)
    problem: str | None = None
    operations: int = 0

    def describe(self) -> str:
        if self.exit_code == EXIT_UNKNOWN:
            return f"drift: cannot tell: {self.problem}"
        if self.exit_code == EXIT_CLEAN:
            return f"drift: none ({self.operations} operations checked, nothing would change)"
        lines = [f"drift: {len(self.changes)} operation(s) would change:"]
        lines += [f"  {host}: {name}" for host, name in self.changes]
        if self.diffs:
            lines.append("differences (- on the host, + what the deploy would write):")
            lines += [f"  {line}" for diff in self.diffs for line in diff.splitlines()]
        return "\n".join(lines)


def pyinfra_command(limit: str | None) -> list[str]:
    # --fail-percent 0: one unreachable host fails the run, so "cannot tell" never passes for clean.
    command = [str(Path(sys.executable).with_name("pyinfra")), "--dry", "--json", "--diff", "--fail-percent", "0",
               "inventory.py", "deploy.py"]
    if limit:
        command += ["--limit", limit]
    return command


def _diffs(stderr: str) -> list[str]:
    """The file differences pyinfra's --diff prints: unified diffs, and mode/owner pairs (host first)."""
    blocks: list[str] = []
    current: list[str] | None = None
    attribute: tuple[str, str] | None = None
    for raw in stderr.splitlines():
        line = ANSI.sub("", raw).rstrip()
        modify = re.search(r"\] Will modify (\S+)", line)
        pair = re.match(r"^    (mode|user|group) (\S+)$", line)
        if modify:
            current = [f"{modify.group(1)}:"]
            blocks.append("")
        elif current is not None and line.startswith("      "):
            current.append("  " + line[6:])
            blocks[-1] = "\n".join(current)
            continue
        else:
            current = None
        if pair:
            if attribute and attribute[0] == pair.group(1):
                blocks.append(f"{pair.group(1)}: {attribute[1]} on the host, {pair.group(2)} wanted")
                attribute = None
            else:
                attribute = (pair.group(1), pair.group(2))
        elif not modify:
            attribute = None
    return [b for b in blocks if b]


def check_drift(limit: str | None = None, env: dict | None = None, cwd: Path = REPO_ROOT) -> DriftReport:
    result = subprocess.run(pyinfra_command(limit), capture_output=True, text=True, cwd=cwd, env=env)
    stderr = ANSI.sub("", result.stderr)
    try:
        payload = json.loads(result.stdout)
    except ValueError:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        return DriftReport(EXIT_UNKNOWN, problem=f"pyinfra exited {result.returncode} without a plan:\n{tail}")
    if result.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        return DriftReport(EXIT_UNKNOWN, problem=f"pyinfra exited {result.returncode}:\n{tail}")
    plan = payload.get("plan") or []
    changes = [(host, op["name"]) for op in plan for host in op["hosts_with_change"]]
    report = DriftReport(EXIT_DRIFT if changes else EXIT_CLEAN, changes=changes, operations=len(plan))
    if changes:
        report.diffs = _diffs(stderr)
    return report
