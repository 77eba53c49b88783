"""Fresh VM -> deploy -> host checks -> zero-change re-run -> planted drift found -> healed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from sparkstack.paths import models_dir
from tests.hosts.conftest import BIN, deploy, drift, run, vm_ssh


@pytest.mark.release_loop
def test_fresh_deploy_changes_the_host(deployed):
    assert not deployed.errors
    assert any("Unit /etc/systemd/system/vllm-qwen36.service" in name for name in deployed.changed)
    assert any("Switch /usr/local/bin/llm-switch" in name for name in deployed.changed)


@pytest.mark.release_loop
def test_host_checks_pass_against_the_deployed_host(deployed, ssh_config):
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/host",
                  "--hosts=paramiko://sparkstack-testhost", f"--ssh-config={ssh_config}"])
    assert result.returncode == 0, result.stdout[-4000:]


def test_model_units_were_not_started_by_the_deploy(deployed):
    out = vm_ssh("systemctl is-active vllm-qwen36.service sglang-mistral4.service").stdout.split()
    assert out == ["inactive", "inactive"]


# On Debian 13 these two are the qualification's rerun and baseline steps (test_12_qualify.py): not run twice there.
def test_second_deploy_reports_zero_changes(deployed):
    again = deploy()
    assert again.changed == [], again.changed
    assert again.unchanged > 0


def test_drift_is_clean_after_a_deploy(deployed):
    result = drift()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drift: none" in result.stdout


def _changed_profiles(tmp_path: Path) -> dict:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    for source in models_dir().glob("*.yaml"):
        text = source.read_text()
        if source.name == "qwen36.yaml":
            text = text.replace("  fraction: 0.5 ", "  fraction: 0.6 ")
            assert "fraction: 0.6" in text
        (models / source.name).write_text(text)
    return {"SPARKSTACK_MODELS_DIR": str(models)}


# Drift planted by hand on the host, all at once (one drift run, one deploy, one drift run: each round costs
# three pyinfra runs against the VM): the drift run must report every one, the deploy heal them all.
PLANTED = {
    "unit edited": ("sed -i 's/^RestartSec=10$/RestartSec=11/' /etc/systemd/system/vllm-qwen36.service",
                    ["Unit /etc/systemd/system/vllm-qwen36.service", "- RestartSec=11", "+ RestartSec=10"]),
    "switch mode changed": ("chmod 0700 /usr/local/bin/llm-switch",
                            ["Switch /usr/local/bin/llm-switch", "mode: 700 on the host, 755 wanted"]),
    "owner changed": ("chown nobody:nogroup /usr/local/libexec/sparkstack/launch-mistral4",
                      ["Launch-script /usr/local/libexec/sparkstack/launch-mistral4",
                       "owner: nobody:nogroup on the host, root:root wanted"]),
    "unit deleted": ("rm /etc/systemd/system/sglang-mistral4.service",
                     ["Unit /etc/systemd/system/sglang-mistral4.service",
                      "/etc/systemd/system/sglang-mistral4.service: missing on the host; would be created"]),
    "model unit enabled by hand": ("systemctl enable vllm-qwen36.service",
                                   ["Keep vllm-qwen36.service disabled at boot"]),
}


@pytest.mark.release_loop
def test_drift_planted_on_the_host_is_reported_and_healed(deployed):
    for kind, (command, _) in PLANTED.items():
        assert vm_ssh(command).returncode == 0, kind
    found = drift()
    assert found.returncode == 1, found.stdout + found.stderr
    unreported = {kind: [text for text in expected if text not in found.stdout] for kind, (_, expected) in PLANTED.items()}
    assert not any(unreported.values()), f"{unreported}\n{found.stdout}"
    healed = deploy()
    assert healed.changed and not healed.errors
    after = drift()
    assert after.returncode == 0, after.stdout + after.stderr


def test_a_profile_flag_changed_in_the_repo_is_reported_and_deployed(deployed, tmp_path):
    env = _changed_profiles(tmp_path)
    found = drift(env)
    assert found.returncode == 1, found.stdout + found.stderr
    for text in ("Launch-script /usr/local/libexec/sparkstack/launch-qwen36", "+       --gpu-memory-utilization 0.6"):
        assert text in found.stdout, found.stdout
    healed = deploy(env)
    assert healed.changed and not healed.errors
    assert drift(env).returncode == 0
    # Put the shipped profiles back on the host for the tests that follow.
    deploy()
    assert drift().returncode == 0


def test_a_removed_profile_is_retired_from_the_host(deployed, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for source in models_dir().glob("*.yaml"):
        (models / source.name).write_text(source.read_text())
    extra = (models_dir() / "qwen36.yaml").read_text().replace("name: qwen36", "name: tiny")
    extra = extra.replace("aliases: [qwen]", "aliases: [tee]").replace("port: 30001", "port: 30005")
    (models / "tiny.yaml").write_text(extra.replace("served_model_name: qwen36", "served_model_name: tiny"))
    added = deploy({"SPARKSTACK_MODELS_DIR": str(models)})
    assert any("launch-tiny" in name for name in added.changed)
    assert vm_ssh("test -x /usr/local/libexec/sparkstack/launch-tiny && systemctl cat vllm-tiny.service").returncode == 0
    assert "Conflicts=sglang-mistral4.service vllm-tiny.service" in vm_ssh("cat /etc/systemd/system/vllm-qwen36.service").stdout
    retired = deploy()
    assert "sparkstack retired models | Remove retired /usr/local/libexec/sparkstack/launch-tiny" in retired.changed
    assert vm_ssh("test -e /usr/local/libexec/sparkstack/launch-tiny || test -e /etc/systemd/system/vllm-tiny.service").returncode == 1
    assert vm_ssh("systemctl cat vllm-tiny.service").returncode != 0  # systemd forgot it too
    assert drift().returncode == 0


@pytest.mark.parametrize("limit", ["spark", "spark,testhost"], ids=["only the unreachable host", "beside the reachable host"])
def test_drift_cannot_tell_when_a_host_is_unreachable(deployed, limit):
    result = drift({"SPARKSTACK_SPARK_HOSTS": "root@127.0.0.1"}, limit=limit)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot tell" in result.stderr


def test_drift_cannot_tell_when_profiles_are_invalid(deployed, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "qwen36.yaml").write_text((models_dir() / "qwen36.yaml").read_text().replace("engine: vllm", "engine: tgi"))
    result = run([str(BIN / "sparkstack"), "drift", "--limit", "testhost"], env={"SPARKSTACK_MODELS_DIR": str(models)})
    assert result.returncode == 2
    assert re.search(r"qwen36\.yaml:\d+: engine: engine 'tgi' is not supported", result.stderr), result.stderr


@pytest.mark.parametrize("limit,env", [
    ("testvn", {}),                                  # a typo
    ("spark", {"SPARKSTACK_SPARK_HOSTS": ""}),       # the group's hosts are not configured
], ids=["typo", "unconfigured group"])
def test_drift_never_passes_when_no_host_matched(deployed, limit, env):
    result = drift(env, limit=limit)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no inventory host matches --limit '{limit}', so nothing was checked" in result.stderr


def test_drift_without_a_limit_checks_the_groups_you_deploy_to_not_a_running_test_host(deployed):
    result = drift({"SPARKSTACK_SPARK_HOSTS": "", "SPARKSTACK_CLUSTER_HOSTS": ""}, limit=None)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no host in spark or cluster, the groups you deploy to, so nothing was checked" in result.stderr
    assert "--limit testhost" in result.stderr


def test_clean_drift_names_the_hosts_it_checked(deployed):
    result = drift()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on 1 host(s): sparkstack-testhost" in result.stdout
