"""Qualification: the matrix NVIDIA's NemoClaw runs on hardware, run by the kit on one host (`sparkstack qualify`).

Each step runs the kit's own commands against the host, as an owner would, and judges them:
  clean install       uninstall with images and weights, then a deploy: everything is fetched
  cached reinstall    uninstall (images and weights stay), then a deploy: nothing is fetched
  rerun               a second deploy: zero changes
  resume              a deploy killed half-way, then one more: it converges, and the next changes nothing
  switches            llm-switch between every ordered pair of the host's models, each timed to ready
  wedge               every process of the hot model's container stopped (SIGSTOP: /health and all hang): the
                      door's wedge watch finds it and llm-switch restarts it
  rollback            `sparkstack rollback` of a model whose lock keeps previous pins, then forward again: no fetch
  uninstall           `sparkstack uninstall`, and `sparkstack drift --uninstalled` says the host is clean
  baseline            a deploy brings it all back, and drift finds neither change nor platform drift
The report (Markdown and JSON) has each step's result, time and detail, and the kernel's messages during the run
that name the GPU, a hung task or a panic (`journalctl -k`; a container test host has none to read).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sparkstack.operate import Hosts
from sparkstack.paths import repo_root
from sparkstack_host.contract import DOOR_POLL_S, REGISTRY_PATH

STEPS = ("clean-install", "cached-reinstall", "rerun", "resume", "switches", "wedge", "rollback", "uninstall", "baseline")
# What a deploy operation that downloads is called (sparkstack/deployers/artifacts.py): "Pull image REF@sha256:..."
# and "Fetch REPO@COMMIT12: N file(s), SIZE".
FETCH_OPERATION = re.compile(r"^(Pull image \S+@sha256:|Fetch \S+@[0-9a-f]{12}: )")
KERNEL_EVENTS = r"NVRM|Xid|nvidia|hung_task|blocked for more than|Oops|BUG:|panic|NV_ERR"


@dataclass
class Step:
    name: str
    ok: bool | None  # None: skipped
    seconds: float
    detail: str


@dataclass
class Report:
    host: str
    started: str
    steps: list[Step] = field(default_factory=list)
    kernel_events: list[str] = field(default_factory=list)
    kernel_note: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.ok is not False for s in self.steps)

    def markdown(self) -> str:
        lines = [f"# Qualification of {self.host}", "", f"Started {self.started}, took {self.seconds:.0f} s: "
                 f"**{'qualified' if self.ok else 'NOT qualified'}**.", "",
                 "| step | result | seconds | detail |", "|---|---|---|---|"]
        for s in self.steps:
            result = "skipped" if s.ok is None else ("pass" if s.ok else "FAIL")
            lines.append(f"| {s.name} | {result} | {s.seconds:.1f} | {s.detail.replace('|', '/')} |")
        lines += ["", "## Kernel and NVIDIA events during the run", ""]
        lines += [f"    {line}" for line in self.kernel_events] or [self.kernel_note or "none"]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict:
        return {"host": self.host, "started": self.started, "seconds": round(self.seconds, 1), "ok": self.ok,
                "steps": [asdict(s) for s in self.steps], "kernel_events": self.kernel_events,
                "kernel_note": self.kernel_note}


class StepFailed(Exception):
    pass


class StepSkipped(Exception):
    pass


def fetches(changed: list[str]) -> list[str]:
    """The operations that downloaded (pyinfra names an operation of a @deploy "DEPLOY | OPERATION")."""
    return [name for name in changed if FETCH_OPERATION.match(name.rpartition(" | ")[2])]


class Qualify:
    def __init__(self, limit: str, sudo: bool = False, wedge_bound_s: float = 900):
        self.limit, self.sudo = limit, sudo
        self.sudo_flag = ["--sudo"] if sudo else []
        self.bin = Path(sys.executable).parent
        self.hosts = Hosts(limit, repo_root(), sudo)
        if len(self.hosts.names) != 1:
            raise StepFailed(f"--limit {limit!r} names {len(self.hosts.names)} hosts; qualify one at a time")
        self.host = self.hosts.names[0]
        self.wedge_bound_s = wedge_bound_s
        self.cached_deploy_s = 30.0

    # - the kit's commands ---------------------------------------------------------------------------
    def sparkstack(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "sparkstack"), *args], capture_output=True, text=True,
                              cwd=repo_root())

    def deploy(self) -> tuple[list[str], float]:
        """(the operations that changed, seconds) of `pyinfra -y --json inventory.py deploy.py --limit HOST`."""
        started = time.monotonic()
        result = subprocess.run(self.deploy_command(), capture_output=True, text=True, cwd=repo_root())
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise StepFailed(f"the deploy exited {result.returncode}: {_tail(result.stderr)}")
        operations = json.loads(result.stdout)["results"]["operations"]
        return [op["name"] for op in operations if op["success"]], seconds

    def deploy_command(self) -> list[str]:
        return [str(self.bin / "pyinfra"), "-y", "--json", "inventory.py", "deploy.py", "--limit", self.limit,
                *self.sudo_flag]

    def uninstall(self, *extras: str) -> None:
        result = self.sparkstack("uninstall", "--limit", self.limit, *extras, *self.sudo_flag)
        if result.returncode != 0:
            raise StepFailed(f"sparkstack uninstall exited {result.returncode}: {_tail(result.stderr + result.stdout)}")

    def on_host(self, command: str) -> str:
        answer = self.hosts.run(command)[0]
        if not answer.ok:
            raise StepFailed(f"`{command}` failed on {self.host}: {_tail(answer.stderr or answer.stdout)}")
        return answer.stdout

    def status(self) -> dict:
        return json.loads(self.on_host("llm-switch status --json"))

    # - the steps ---------------------------------------------------------------------------------------
    def clean_install(self) -> str:
        self.uninstall("--images", "--weights")
        changed, seconds = self.deploy()
        fetched = fetches(changed)
        if not fetched:
            raise StepFailed("the deploy after removing images and weights fetched nothing")
        return f"deploy {seconds:.0f} s, {len(changed)} changes, {len(fetched)} fetches"

    def cached_reinstall(self) -> str:
        self.uninstall()
        changed, seconds = self.deploy()
        self.cached_deploy_s = seconds
        fetched = fetches(changed)
        if fetched:
            raise StepFailed(f"fetched with images and weights in place: {fetched}")
        return f"deploy {seconds:.0f} s, {len(changed)} changes, no fetch"

    def rerun(self) -> str:
        changed, seconds = self.deploy()
        if changed:
            raise StepFailed(f"a second deploy changed {len(changed)}: {changed[:5]}")
        return f"deploy {seconds:.0f} s, 0 changes"

    def resume(self) -> str:
        self.uninstall()
        kill_after = max(2.0, self.cached_deploy_s / 2)
        process = subprocess.Popen(self.deploy_command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   cwd=repo_root(), start_new_session=True)
        try:
            process.wait(kill_after)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            killed = True
        changed, seconds = self.deploy()
        again, _ = self.deploy()
        if again:
            raise StepFailed(f"after the resumed deploy, one more changed {len(again)}: {again[:5]}")
        return (f"killed after {kill_after:.0f} s" if killed else f"the deploy ended before {kill_after:.0f} s") + \
            f"; the next deploy made {len(changed)} changes in {seconds:.0f} s, the one after 0"

    def models(self) -> list[str]:
        registry = json.loads(self.on_host(f"cat {REGISTRY_PATH}"))
        return sorted(n for n, m in registry["models"].items() if not m.get("cluster"))

    def switches(self) -> str:
        names = self.models()
        timings = []
        for before, after in itertools.permutations(names, 2):
            self.on_host(f"llm-switch {before}")
            started = time.monotonic()
            self.on_host(f"llm-switch {after}")
            timings.append(f"{before}->{after} {time.monotonic() - started:.1f} s")
        self.on_host("llm-switch none")
        return "; ".join(timings) or "fewer than two models: nothing to switch between"

    def wedge(self) -> str:
        name = self.models()[0]
        registry = json.loads(self.on_host(f"cat {REGISTRY_PATH}"))
        self.on_host(f"llm-switch {name}")
        # The watch follows what the door has seen hot: give the door one look first.
        time.sleep(DOOR_POLL_S + 2)
        before = (self.status().get("wedges") or {}).get(name, {}).get("at")
        # SIGSTOP, not docker pause: a stopped process still dies of SIGKILL, where a cgroup-v1 freezer can keep a
        # paused container (and a test host around it) from being killed at all.
        processes = f"$(docker top {registry['models'][name]['container']} -o pid | tail -n +2)"
        self.on_host(f"kill -STOP {processes}")
        started = time.monotonic()
        deadline = started + self.wedge_bound_s
        try:
            while time.monotonic() < deadline:
                wedge = (self.status().get("wedges") or {}).get(name) or {}
                if wedge.get("at") != before and wedge.get("state") in ("restarted", "stopped"):
                    if wedge["state"] != "restarted":
                        door = self.hosts.run("journalctl -u sparkstack-frontdoor --no-pager -o cat -n 12")[0].stdout
                        raise StepFailed(f"{name} was stopped, not restarted: {wedge.get('message')}; the door said: "
                                         + " / ".join(door.strip().splitlines()))
                    return f"{name} frozen; found and restarted after {time.monotonic() - started:.0f} s ({wedge['reason']})"
                time.sleep(2)
            raise StepFailed(f"{name} frozen for {self.wedge_bound_s:.0f} s and the wedge watch did not restart it")
        finally:
            self.hosts.run(f"kill -CONT {processes} 2>/dev/null; llm-switch none")

    def uninstall_step(self) -> str:
        self.uninstall()
        clean = self.sparkstack("drift", "--uninstalled", "--limit", self.limit, *self.sudo_flag)
        if clean.returncode != 0:
            raise StepFailed(_tail(clean.stdout + clean.stderr))
        return clean.stdout.strip().splitlines()[-1]

    def baseline(self) -> str:
        changed, seconds = self.deploy()
        fetched = fetches(changed)
        if fetched:
            raise StepFailed(f"the deploy after the uninstall fetched: {fetched}")
        drift = self.sparkstack("drift", "--limit", self.limit, *self.sudo_flag)
        if drift.returncode != 0:
            raise StepFailed(_tail(drift.stdout + drift.stderr))
        return f"deploy {seconds:.0f} s, {len(changed)} changes; {drift.stdout.strip().splitlines()[-1]}"

    # - the run -----------------------------------------------------------------------------------------
    def run(self, skip: tuple[str, ...] = (), rollback_model: str | None = None) -> Report:
        started_wall = time.time()
        report = Report(self.host, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)))
        began = time.monotonic()
        since = self.on_host("date +%s").strip()
        actions = {"clean-install": self.clean_install, "cached-reinstall": self.cached_reinstall, "rerun": self.rerun,
                   "resume": self.resume, "switches": self.switches, "wedge": self.wedge,
                   "rollback": lambda: self.roll_back_and_forward(rollback_model), "uninstall": self.uninstall_step,
                   "baseline": self.baseline}
        for name in STEPS:
            if name in skip:
                report.steps.append(Step(name, None, 0.0, "skipped (--skip)"))
                continue
            step_began = time.monotonic()
            try:
                ok, detail = True, actions[name]()
            except StepSkipped as exc:
                ok, detail = None, f"skipped: {exc}"
            except StepFailed as exc:
                ok, detail = False, str(exc)
            report.steps.append(Step(name, ok, time.monotonic() - step_began, detail))
            print(f"qualify: {name}: {'skipped' if ok is None else 'pass' if ok else 'FAIL'} "
                  f"({report.steps[-1].seconds:.0f} s) {detail}", flush=True)
        report.seconds = time.monotonic() - began
        self.kernel_events(report, since)
        self.hosts.close()
        return report

    def roll_back_and_forward(self, model: str | None) -> str:
        if model is None:
            raise StepSkipped("no model named with --rollback MODEL (one whose lock keeps previous pins)")
        details = []
        for way in ("back", "forward"):
            result = self.sparkstack("rollback", model, "--limit", self.limit, "--no-deploy")
            said = result.stdout + result.stderr
            if result.returncode != 0:
                raise StepFailed(f"rollback ({way}) exited {result.returncode}: {_tail(said)}")
            changed, seconds = self.deploy()
            fetched = fetches(changed)
            if fetched:
                raise StepFailed(f"the deploy of the rollback ({way}) fetched: {fetched[:3]}")
            pins = "; ".join(line.strip() for line in said.splitlines() if "->" in line)
            details.append(f"{way} in one deploy ({seconds:.0f} s, {len(changed)} changes, no fetch): {pins}")
        return " / ".join(details)

    def kernel_events(self, report: Report, since: str) -> None:
        answer = self.hosts.run(f"journalctl -k --no-pager -o short-iso --since @{since} 2>&1 | "
                                f"grep -E '{KERNEL_EVENTS}' || true; journalctl -k -n 1 --no-pager -q 2>/dev/null | grep -q . "
                                "&& echo KERNEL-LOG-READ")[0]
        lines = [line for line in answer.stdout.splitlines() if line.strip() and line != "KERNEL-LOG-READ"]
        report.kernel_events = lines
        if "KERNEL-LOG-READ" not in answer.stdout:
            report.kernel_note = ("no kernel messages in this host's journal to read (a container test host has none "
                                  "of its own)")


def write_report(report: Report, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    markdown, document = out / f"qualify-{report.host}.md", out / f"qualify-{report.host}.json"
    markdown.write_text(report.markdown(), encoding="utf-8")
    document.write_text(json.dumps(report.as_json(), indent=2) + "\n", encoding="utf-8")
    return markdown, document


def _tail(text: str, lines: int = 6) -> str:
    return " / ".join(text.strip().splitlines()[-lines:])
