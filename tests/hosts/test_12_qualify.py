"""`sparkstack qualify` on a test host: the whole matrix, with an upgrade first so the rollback has pins to return to.
Its report is kept in build/test-artifacts/. Runs in the Debian 13 shard (release_loop)."""

from __future__ import annotations

import json
import shutil

import pytest

from sparkstack.paths import repo_root
from sparkstack.lockfile import lock_path
from tests.hosts.conftest import BIN, deploy, locked, run, vm_ssh
from tests.hosts.test_11_platform import FAST_WATCH

pytestmark = pytest.mark.release_loop

QWEN = "rdtand/Qwen3.6-35B-A3B-PrismaQuant-4.75bit-vllm"


def test_qualify_runs_the_matrix_on_the_host_and_writes_its_report(deployed, artifact_servers, tmp_path):
    # Upstream moves on and the owner upgrades qwen36: the lock keeps the pins it replaced. (Only this upgrade's:
    # a lock the session wrote over an older one kept that one's pins, from a hub since made afresh.)
    lock = locked()
    lock_path("testhost").write_text(json.dumps({**lock, "previous_images": {}, "previous_models": {}}))
    old_commit = lock["models"][QWEN]["commit"]
    new_commit = artifact_servers.commit(QWEN, "upstream moves on", change="qualify")
    upgraded = run([str(BIN / "sparkstack"), "lock", "--host", "sparkstack-testhost", "--upgrade", "qwen36"])
    assert upgraded.returncode == 0 and f"was {old_commit}, kept for rollback" in upgraded.stdout, upgraded.stdout
    assert locked()["previous_models"][QWEN]["commit"] == old_commit
    assert any(f"Fetch {QWEN}@{new_commit[:12]}" in name for name in deploy().changed)

    out = tmp_path / "qualify"
    env = {"SPARKSTACK_TEST_GROUP_DATA": json.dumps(FAST_WATCH)}
    try:
        result = run([str(BIN / "sparkstack"), "qualify", "--limit", "testhost", "--rollback", "qwen36", "--out", str(out),
                      "--wedge-within", "120"],
                     env=env, timeout=1500)
        print(result.stdout[-4000:])
        report = json.loads((out / "qualify-sparkstack-testhost.json").read_text())
        artifacts = repo_root() / "build" / "test-artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        for kept in out.iterdir():
            shutil.copy(kept, artifacts / kept.name)
        steps = {s["name"]: s for s in report["steps"]}
        assert result.returncode == 0 and report["ok"], json.dumps(report, indent=2)
        assert list(steps) == ["clean-install", "cached-reinstall", "rerun", "resume", "switches", "wedge", "rollback",
                               "uninstall", "baseline"]
        assert all(s["ok"] for s in report["steps"]), report["steps"]
        assert "fetches" in steps["clean-install"]["detail"] and "no fetch" in steps["cached-reinstall"]["detail"]
        assert steps["rerun"]["detail"].endswith("0 changes")
        assert "mistral4->qwen36" in steps["switches"]["detail"] and "qwen36->mistral4" in steps["switches"]["detail"]
        assert "frozen; found and restarted" in steps["wedge"]["detail"]
        # Back to the old commit and forward to the new one, each in one deploy that fetched nothing.
        rollback = steps["rollback"]["detail"]
        assert f"-> {old_commit} (was {new_commit})" in rollback and f"-> {new_commit} (was {old_commit})" in rollback
        assert "clean host: nothing of sparkstack is left" in steps["uninstall"]["detail"]
        assert "drift: none" in steps["baseline"]["detail"]
        assert "no kernel messages" in report["kernel_note"]  # a container has no kernel log of its own
        assert "| wedge | pass |" in (out / "qualify-sparkstack-testhost.md").read_text()
    finally:
        vm_ssh("llm-switch none")
        assert not deploy().errors
