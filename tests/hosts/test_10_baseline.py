"""The host baseline on a test host: the lock records the platform the host has (no GPU: it says so, and the group's
fixture stands in for the GPU facts), drift reports a changed fact as its own kind, and the preflight refuses a
known-bad driver unless the group waives it until a date. Runs in the Debian 13 shard (release_loop)."""

from __future__ import annotations

import datetime
import json

import pytest

from sparkstack import testhost
from sparkstack.lockfile import lock_path
from tests.hosts.conftest import BIN, deploy, run, vm_ssh

pytestmark = pytest.mark.release_loop


def test_the_lock_records_the_platform_and_drift_reports_a_changed_fact(deployed):
    path = lock_path("testhost")
    lock = json.loads(path.read_text())
    facts = dict(lock["hosts"][testhost.HOST_ALIAS])
    assert facts["kernel.release"] == vm_ssh("uname -r").stdout.strip()
    assert facts["os.id"] == "debian" and facts["docker.version"]
    assert facts["fixture"] == ["nvidia.driver", "nvidia.flavour"] and facts["nvidia.driver"] == "580.173.02"
    assert "no GPU here" in facts["nvidia.why"]
    clean = run([str(BIN / "sparkstack"), "drift", "--limit", "testhost"])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # The kernel under the host changes (an OTA update): a deploy cannot undo it, drift must say so.
    original = path.read_text()
    try:
        lock["hosts"][testhost.HOST_ALIAS]["kernel.release"] = "6.17.0-1031-nvidia"
        path.write_text(json.dumps(lock))
        drifted = run([str(BIN / "sparkstack"), "drift", "--limit", "testhost"])
        said = drifted.stdout + drifted.stderr
        assert drifted.returncode == 1, said
        assert "drift: the platform changed since the lock (1 fact(s)" in said
        assert f"kernel.release: '6.17.0-1031-nvidia' in the lock, '{facts['kernel.release']}' now" in said
    finally:
        path.write_text(original)


def test_a_known_bad_driver_is_refused_before_the_host_changes_unless_waived(deployed):
    before = vm_ssh("stat -c %Y /etc/sparkstack/models.json").stdout
    bad = {"baseline_fixture": {"nvidia.driver": "590.48.01", "nvidia.flavour": "open"}}
    refused = run([str(BIN / "pyinfra"), "-y", "inventory.py", "deploy.py", "--limit", "testhost"],
                  env={"SPARKSTACK_TEST_GROUP_DATA": json.dumps(bad)})
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "known-bad nvidia-590: nvidia.driver=590.48.01" in said, said[-3000:]
    assert "eugr/spark-vllm-docker README (2026-03)" in said
    assert vm_ssh("stat -c %Y /etc/sparkstack/models.json").stdout == before  # nothing was changed
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    waived = {**bad, "baseline_waivers": {"nvidia-590": {"until": tomorrow, "reason": "testing the waiver"}}}
    result = deploy(env={"SPARKSTACK_TEST_GROUP_DATA": json.dumps(waived)})
    assert not result.errors and result.changed == []


def test_a_held_package_is_held_once_and_a_second_deploy_changes_nothing(deployed):
    holds = {"SPARKSTACK_TEST_GROUP_DATA": json.dumps({"baseline_holds": ["earlyoom"]})}
    try:
        first = deploy(env=holds)
        assert not first.errors and first.changed == ["Hold earlyoom (sparkstack_baseline_holds: an update must not "
                                                      "move the platform)"], first.changed
        assert "earlyoom" in vm_ssh("apt-mark showhold").stdout.split()
        assert deploy(env=holds).changed == []
    finally:
        vm_ssh("apt-mark unhold earlyoom")
