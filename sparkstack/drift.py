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

from sparkstack.baseline import DRIFT_MARK
from sparkstack.groups import DEPLOYED_GROUPS
from sparkstack.paths import repo_root

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
    hosts: list[str] = field(default_factory=list)
    # Baseline facts changed since the lock: drift the deploy cannot fix (sparkstack/baseline.py).
    platform: list[str] = field(default_factory=list)
    # Checked against uninstall.py: clean means nothing of sparkstack is left.
    uninstalled: bool = False

    def describe(self) -> str:
        if self.exit_code == EXIT_UNKNOWN:
            return f"drift: cannot tell: {self.problem}"
        if self.exit_code == EXIT_CLEAN and self.uninstalled:
            return (f"drift: clean host: nothing of sparkstack is left on {', '.join(self.hosts)} ({self.operations} "
                    "uninstall operations checked; none would change)")
        if self.uninstalled:
            return "\n".join([f"drift: not clean: {len(self.changes)} operation(s) of the uninstall would still change:"]
                             + [f"  {host}: {name}" for host, name in self.changes])
        if self.exit_code == EXIT_CLEAN:
            return (f"drift: none ({self.operations} operations checked on {len(self.hosts)} host(s): "
                    f"{', '.join(self.hosts)}; nothing would change)")
        lines = []
        if self.platform:
            lines.append(f"drift: the platform changed since the lock ({len(self.platform)} fact(s); a deploy cannot "
                         "change these back: check them, then `sparkstack lock --host HOST` to accept them):")
            lines += [f"  {line}" for line in self.platform]
        if self.changes or not self.platform:
            lines.append(f"drift: {len(self.changes)} operation(s) would change:")
        lines += [f"  {host}: {name}" for host, name in self.changes]
        if self.diffs:
            lines.append("differences (- on the host, + what the deploy would write):")
            lines += [f"  {line}" for diff in self.diffs for line in diff.splitlines()]
        return "\n".join(lines)


def limits(limit: str | None) -> list[str]:
    """The --limit patterns (comma-separated), or the groups an owner deploys to: never a test host that happens
    to run here, unless named."""
    return [pattern for pattern in (limit or "").split(",") if pattern] or list(DEPLOYED_GROUPS)


def pyinfra_command(limit: str | None, extra: list[str] | tuple[str, ...] = (), deploy_file: str = "deploy.py") -> list[str]:
    # --fail-percent 0: one unreachable host fails the run, so "cannot tell" never passes for clean.
    command = [str(Path(sys.executable).with_name("pyinfra")), "--dry", "--json", "--diff", "--fail-percent", "0",
               "inventory.py", deploy_file]
    for pattern in limits(limit):
        command += ["--limit", pattern]
    return command + list(extra)


def _diffs(stderr: str) -> list[str]:
    """The file differences pyinfra's --diff prints: unified diffs, and mode/owner pairs (host first)."""
    blocks: list[str] = []
    current: list[str] | None = None
    attribute: tuple[str, str] | None = None
    for raw in stderr.splitlines():
        line = ANSI.sub("", raw).rstrip()
        modify = re.search(r"\] Will (modify|create) (\S+)", line)
        pair = re.match(r"^    (mode|user|group|chown) (\S+)$", line)
        if modify:
            current = [f"{modify.group(2)}:" if modify.group(1) == "modify" else f"{modify.group(2)}: missing on the host; would be created"]
            blocks.append("")
        elif current is not None and line.startswith("      "):
            current.append("  " + line[6:])
            blocks[-1] = "\n".join(current)
            continue
        else:
            current = None
        if pair:
            if attribute and attribute[0] == pair.group(1):
                label = "owner" if pair.group(1) == "chown" else pair.group(1)
                blocks.append(f"{label}: {attribute[1]} on the host, {pair.group(2)} wanted")
                attribute = None
            else:
                attribute = (pair.group(1), pair.group(2))
        elif not modify:
            attribute = None
    return [b for b in blocks if b]


def named_hosts(limit: str | None, cwd: Path, env: dict | None = None) -> list[str]:
    """The inventory hosts a --limit selects, read with pyinfra's own inventory-file reader and matched as
    pyinfra's --limit matches them (a group name, else a host-name glob)."""
    return list(inventory_hosts(limit, cwd, env))


def inventory_hosts(limit: str | None, cwd: Path, env: dict | None = None) -> dict[str, dict]:
    """named_hosts, each with its inventory data (ssh_hostname, ssh_user, ssh_key, ...), in name order."""
    code = (
        "import fnmatch, json, sys\n"
        "from pyinfra.api import State\n"
        "from pyinfra.context import ctx_state\n"
        "from pyinfra_cli.inventory import _get_groups_from_filename\n"
        "ctx_state.set(State())\n"
        "groups, data = {}, {}\n"
        "for name, value in _get_groups_from_filename('inventory.py').items():\n"
        "    hosts = value[0] if isinstance(value, tuple) else value\n"
        "    groups[name] = [h[0] if isinstance(h, tuple) else h for h in hosts]\n"
        "    for h in hosts:\n"
        "        data.setdefault(h[0] if isinstance(h, tuple) else h, h[1] if isinstance(h, tuple) else {})\n"
        "everyone = {h for hosts in groups.values() for h in hosts}\n"
        "patterns = [p for p in sys.argv[1].split(',') if p] or ['*']\n"
        "names = set()\n"
        "for pattern in patterns:\n"
        "    names.update(groups[pattern] if pattern in groups else [h for h in everyone if fnmatch.fnmatch(h, pattern)])\n"
        "print(json.dumps({n: data[n] for n in sorted(names)}, default=str))\n"
    )
    # A separate interpreter: inventory.py may exit (no hosts configured) and pyinfra keeps global state.
    result = subprocess.run([sys.executable, "-c", code, ",".join(limits(limit))], capture_output=True, text=True,
                            cwd=cwd, env=env)
    if result.returncode != 0:
        # The inventory's own guidance, whole (it says how to configure a Spark or start a test host).
        raise InventoryProblem(ANSI.sub("", result.stderr).strip() or f"inventory.py exited {result.returncode}")
    return json.loads(result.stdout)


class InventoryProblem(Exception):
    pass


def check_drift(limit: str | None = None, env: dict | None = None, cwd: Path | None = None,
                extra: list[str] | tuple[str, ...] = (), uninstalled: bool = False) -> DriftReport:
    """Exit 0 only when every host the limit names answered and a non-empty plan had no change."""
    cwd = cwd or repo_root()
    try:
        named = named_hosts(limit, cwd, env)
    except InventoryProblem as exc:
        return DriftReport(EXIT_UNKNOWN, problem=f"the inventory could not be read: {exc}")
    if not named and not limit:
        return DriftReport(EXIT_UNKNOWN, problem=f"no host in {' or '.join(DEPLOYED_GROUPS)}, the groups you deploy to, "
                                                 "so nothing was checked: set SPARKSTACK_SPARK_HOSTS (or "
                                                 "SPARKSTACK_CLUSTER_HOSTS), or name a test host with --limit testhost")
    if not named:
        return DriftReport(EXIT_UNKNOWN, problem=f"no inventory host matches --limit {limit!r}, so nothing was checked "
                                                 "(a typo, or the group's hosts are not configured: see inventory.py)")
    deploy_file = "uninstall.py" if uninstalled else "deploy.py"
    result = subprocess.run(pyinfra_command(limit, extra, deploy_file), capture_output=True, text=True, cwd=cwd, env=env)
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
    if not plan:
        return DriftReport(EXIT_UNKNOWN, problem=f"pyinfra planned no operation for {', '.join(named)}; an empty plan checks nothing")
    # One host per line; a diff printed just before (a JSON list opening "[") must not be read as a host name.
    answered = set(re.findall(r"^[ \t]*\[([^\]\[\n]+)\][ \t]+Ready: " + re.escape(deploy_file), stderr, re.MULTILINE))
    missing = [h for h in named if h not in answered]
    if missing:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        return DriftReport(EXIT_UNKNOWN, problem=f"{len(answered & set(named))} of {len(named)} hosts answered; not checked: "
                                                 f"{', '.join(missing)}; pyinfra said:\n{tail}")
    changes = [(host, op["name"]) for op in plan for host in op["hosts_with_change"]]
    # The platform under the deploy (kernel, driver, docker...), as the preflight compared it with the lock.
    platform = [f"{m.group(1)}: {m.group(2)}" for m in re.finditer(
        rf"(\S+): {re.escape(DRIFT_MARK)} (.+)$", stderr, re.MULTILINE)]
    platform = list(dict.fromkeys(platform))
    report = DriftReport(EXIT_DRIFT if changes or platform else EXIT_CLEAN, changes=changes, operations=len(plan),
                         hosts=sorted(answered), platform=platform, uninstalled=uninstalled)
    if changes:
        report.diffs = _diffs(stderr)
    return report
