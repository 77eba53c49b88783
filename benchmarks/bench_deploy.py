"""Deploy benchmark: fresh deploy, no-op re-run and drift against a fresh test VM; prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_deploy.py      (or: make bench)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_section  # noqa: E402
from sparkstack import testhost  # noqa: E402
from sparkstack.paths import repo_root  # noqa: E402
from tests.artifact_servers import prepare  # noqa: E402

BIN = Path(sys.executable).parent


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=repo_root())
    return time.monotonic() - started, result


def main() -> None:
    info = testhost.up(fresh=True)
    # A wiped Spark: the group locked against the VM's registry and hub, no image or snapshot on it.
    # The servers stay up for bench_switch (benchmarks/bench_artifacts.py stops them).
    prepare(repo_root() / "build" / "artifact-servers", weights_bytes=4 * 1024 * 1024)
    deploy = [str(BIN / "pyinfra"), "-y", "--json", "inventory.py", "deploy.py", "--limit", "testhost"]
    fresh_s, fresh = timed(deploy)
    noop_s, noop = timed(deploy)
    drift_s, drift = timed([str(BIN / "sparkstack"), "drift", "--limit", "testhost"])
    fresh_totals = json.loads(fresh.stdout)["results"]["totals"]
    noop_totals = json.loads(noop.stdout)["results"]["totals"]
    operations = len(json.loads(fresh.stdout)["results"]["operations"])
    body = f"""| measure | figure |
|---|---|
| VM boot to `systemctl is-system-running` | {info['boot_s']} s |
| fresh deploy of a wiped host, image and 4 snapshots fetched (`pyinfra -y inventory.py deploy.py --limit testhost`) | {fresh_s:.1f} s, {fresh_totals['success']} changed of {operations} operations |
| no-op re-run (same command) | {noop_s:.1f} s, {noop_totals['success']} changed, {noop_totals['no_change']} unchanged |
| `sparkstack drift --limit testhost` on the converged host | {drift_s:.1f} s, exit {drift.returncode} |
| operations in the deploy | {operations} |"""
    print(body)
    write_section("Deploy, re-run and drift (test VM)", "make bench (benchmarks/bench_deploy.py)", body)


if __name__ == "__main__":
    main()
