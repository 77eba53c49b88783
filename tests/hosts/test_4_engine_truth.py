"""Engine truth on a host: the deploy asks the pinned image which release it carries and what it accepts.

The stand-in engine answers from its declared table (tests/standin_engine/engine_table.json), a
subset of the real releases, so a profile the real vLLM 0.33.0 accepts can still be refused by
the image on the host, which is the point: the host's image is the judge, not our snapshot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sparkstack.paths import models_dir
from tests.artifact_servers import STANDIN_PUSHED
from tests.hosts.conftest import BIN, deploy, pinned_image, run, vm_ssh

PROBE_CACHE = "/var/lib/sparkstack/engine-probes"
WATCHED = "/usr/local/libexec/sparkstack/launch-qwen36 /etc/systemd/system/vllm-qwen36.service /etc/sparkstack/models.json"


def profiles_with(tmp_path: Path, qwen36_extra: str) -> dict:
    models = tmp_path / "models"
    models.mkdir()
    for source in models_dir().glob("*.yaml"):
        text = source.read_text()
        if source.name == "qwen36.yaml":
            text += qwen36_extra
        (models / source.name).write_text(text)
    return {"SPARKSTACK_MODELS_DIR": str(models)}


def attempt_deploy(env: dict):
    return run([str(BIN / "pyinfra"), "-y", "inventory.py", "deploy.py", "--limit", "testhost"], env=env)


def host_files_digest() -> str:
    return vm_ssh(f"sha256sum {WATCHED}").stdout


def test_the_shipped_profiles_pass_the_image_check_and_it_is_cached(deployed):
    cached = vm_ssh(f"ls {PROBE_CACHE}").stdout.split()
    assert any(name.startswith("vllm-") and name.endswith(".json") for name in cached), cached
    assert any(name.startswith("sglang-") and name.endswith(".json") for name in cached), cached
    before = vm_ssh(f"stat -c '%n %Y' {PROBE_CACHE}/*.json").stdout
    again = deploy()
    assert again.changed == []
    assert vm_ssh(f"stat -c '%n %Y' {PROBE_CACHE}/*.json").stdout == before  # asked once per image, then read


@pytest.mark.parametrize("extra,expected", [
    # vLLM 0.33.0 has --enforce-eager (so `sparkstack validate` passes); the image's release does not.
    ("extra_args: [--enforce-eager]\n",
     "qwen36: --enforce-eager: vllm 0.33.0 in image {image} has no such option"),
    # vLLM 0.33.0 reads VLLM_LOGGING_LEVEL; the image's release does not.
    ("env: {VLLM_LOGGING_LEVEL: INFO}\n",
     "qwen36: env VLLM_LOGGING_LEVEL: vllm 0.33.0 in image {image} does not read it"),
], ids=["flag the release lacks", "env var the release does not read"])
def test_the_deploy_refuses_what_the_image_would_refuse_before_changing_anything(deployed, tmp_path, extra, expected):
    expected = expected.format(image=pinned_image())
    env = profiles_with(tmp_path, extra)
    offline = run([str(BIN / "sparkstack"), "validate"], env=env)
    assert offline.returncode == 0, offline.stdout + offline.stderr  # the real 0.33.0 accepts it
    before = host_files_digest()
    result = attempt_deploy(env)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    assert "nothing was changed" in result.stdout + result.stderr
    assert host_files_digest() == before


def lock_upgrade() -> None:
    result = run([str(BIN / "sparkstack"), "lock", "--host", "sparkstack-testhost", "--upgrade"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def image_claiming_another_release(deployed):
    """The registry's tag moves to an image that says it carries vLLM 0.24.0 and the lock is upgraded to it;
    afterwards the tag moves back and the lock returns to the original digest."""
    original = pinned_image()
    script = (f"docker rm -f sparkstack-derive >/dev/null 2>&1; "
              f"docker run --name sparkstack-derive --entrypoint sh {original} -c "
              "\"sed -i 's/\\\"version\\\": \\\"0.33.0\\\"/\\\"version\\\": \\\"0.24.0\\\"/' /opt/standin/engine_table.json\" && "
              f"docker commit --change 'ENTRYPOINT [\"/usr/bin/tini\", \"--\"]' sparkstack-derive {STANDIN_PUSHED} >/dev/null && "
              f"docker rm sparkstack-derive >/dev/null && docker push -q {STANDIN_PUSHED} >/dev/null")
    made = vm_ssh(script)
    assert made.returncode == 0, made.stderr
    lock_upgrade()
    assert pinned_image() != original
    yield pinned_image()
    restored = vm_ssh(f"docker tag {original} {STANDIN_PUSHED} && docker push -q {STANDIN_PUSHED}")
    assert restored.returncode == 0, restored.stderr
    lock_upgrade()
    assert pinned_image() == original


def test_an_image_carrying_another_release_is_refused(image_claiming_another_release):
    image = image_claiming_another_release
    before = host_files_digest()
    result = attempt_deploy({})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (f"qwen36: engine_version: image {image} carries vllm 0.24.0, but the profile declares '>=0.33.0.dev0'"
            in output), output[-3000:]
    assert host_files_digest() == before


def test_verify_on_the_host_reports_the_release_and_the_moe_guard(deployed, ssh_config):
    switched = vm_ssh("llm-switch qwen")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    result = run([sys.executable, "-m", "sparkstack.cli", "verify", "--host", "sparkstack-testhost", "--ssh-config",
                  str(ssh_config), "--runs", "1", "--max-tokens", "16"])
    engine_line = next((line for line in result.stdout.splitlines() if line.startswith("engine")), "")
    assert "vllm 0.33.0" in engine_line and "MoE guard in force: --moe-backend marlin" in engine_line, result.stdout
    vm_ssh("llm-switch none")
