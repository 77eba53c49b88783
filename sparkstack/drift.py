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
            lines.append("file differences (- on the host, + what the deploy would write):")
            lines += [f"  {line}" for diff in self.diffs for line in diff.splitlines()]
        return "\n".join(lines)


def pyinfra_command(limit: str | None) -> list[str]:
    command = [str(Path(sys.executable).with_name("pyinfra")), "--dry", "--json", "--diff",
               "inventory.py", "deploy.py"]
    if limit:
        command += ["--limit", limit]
    return command


def _diffs(stderr: str) -> list[str]:
    """The unified-diff blocks pyinfra prints for files that would change."""
    blocks, current = [], []
    for raw in stderr.splitlines():
        line = ANSI.sub("", raw).rstrip()
        stripped = line.strip()
        if stripped.startswith(("--- ", "+++ ", "@@", "- ", "+ ", "-", "+")) and not stripped.startswith("-->"):
            if "Will modify" in stripped:
                continue
            current.append(stripped)
        elif "Will modify" in line or "Will create" in line:
            if current:
                blocks.append("\n".join(current))
            current = [stripped]
        elif current and not stripped:
            continue
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return [b for b in blocks if any(l.startswith(("+", "-")) for l in b.splitlines()[1:])]


def check_drift(limit: str | None = None, env: dict | None = None, cwd: Path = REPO_ROOT) -> DriftReport:
    result = subprocess.run(pyinfra_command(limit), capture_output=True, text=True, cwd=cwd, env=env)
    stderr = ANSI.sub("", result.stderr)
    try:
        payload = json.loads(result.stdout)
    except ValueError:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        return DriftReport(EXIT_UNKNOWN, problem=f"pyinfra exited {result.returncode} without a plan:\n{tail}")
    failed = re.findall(r"\[([^\]]+)\] (?:Could not connect|Connection error|Error:)", stderr)
    if result.returncode != 0 or failed:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        return DriftReport(EXIT_UNKNOWN, problem=f"pyinfra exited {result.returncode}:\n{tail}")
    plan = payload.get("plan") or []
    changes = [(host, op["name"]) for op in plan for host in op["hosts_with_change"]]
    report = DriftReport(EXIT_DRIFT if changes else EXIT_CLEAN, changes=changes, operations=len(plan))
    if changes:
        report.diffs = _diffs(stderr)
    return report
