"""A failing host check never prints a secret, and a container holds only the secrets it needs: the engine's
holds no HF token (the API key, its only secret, is the hosts tier's test_6 and the unit tier's render test)."""

from __future__ import annotations

import sys

from sparkstack.paths import models_dir
from sparkstack.render import SECRETS_PATH
from tests.hosts.conftest import run, vm_ssh

PLANTED = "hf_sparkstackPlantedSecret0123456789abcdef"


def test_a_failing_env_check_does_not_print_the_secrets_file(deployed, ssh_config, tmp_path):
    assert vm_ssh(f"echo 'HF_TOKEN={PLANTED}' >> {SECRETS_PATH}").returncode == 0
    models = tmp_path / "models"
    models.mkdir()
    for source in models_dir().glob("*.yaml"):
        text = source.read_text()
        if source.name == "qwen36.yaml":
            # An engine variable the kit leaves to profiles (VLLM_HOST_IP, which it used to be, is now the kit's
            # own); the host's launch script does not set it, so the check fails.
            text += "env: {VLLM_IMAGE_FETCH_TIMEOUT: '19876'}\n"
        (models / source.name).write_text(text)
    try:
        result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/host",
                      "--hosts=paramiko://sparkstack-testhost", f"--ssh-config={ssh_config}",
                      "-k", "switching_to_a_model and qwen36", "-vv"],
                     env={"SPARKSTACK_MODELS_DIR": str(models)})
        output = result.stdout + result.stderr
        assert result.returncode == 1, output[-3000:]
        assert "VLLM_IMAGE_FETCH_TIMEOUT" in output and "19876" in output  # the failure is shown...
        assert PLANTED not in output                              # ...and the secret is not
        held = vm_ssh("docker inspect sparkstack-qwen36 --format '{{json .Config.Env}}'").stdout
        assert "VLLM_IMAGE_FETCH_TIMEOUT=19876" not in held and PLANTED not in held  # the token stayed in the file
    finally:
        vm_ssh(f"sed -i '/^HF_TOKEN={PLANTED}$/d' {SECRETS_PATH}; llm-switch none")
    assert PLANTED not in vm_ssh(f"cat {SECRETS_PATH}").stdout
