"""`sparkstack verify --host` against the stand-in engine in the VM, through an ssh tunnel."""

from __future__ import annotations

import json

import pytest

from sparkstack import testhost
from tests.hosts.conftest import BIN, pinned_image, run, vm_ssh


def verify(*args: str, history) -> tuple[int, dict | str]:
    result = run([str(BIN / "sparkstack"), "verify", "--host", testhost.HOST_ALIAS, "--runs", "3",
                  "--history-file", str(history), *args])
    if "--json" in args:
        return result.returncode, json.loads(result.stdout) if result.stdout.strip() else result.stderr
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def history(tmp_path):
    return tmp_path / "history.jsonl"


@pytest.mark.parametrize("alias,name,vision_code", [("qwen", "qwen36", "HTTP 400"), ("mistral", "mistral4", "HTTP 200")])
def test_verify_the_hot_model_through_the_host(deployed, history, alias, name, vision_code):
    assert vm_ssh(f"rm -f /var/lib/sparkstack/huggingface/standin-knobs.json; llm-switch {alias}").returncode == 0
    code, report = verify("--json", history=history)
    assert code == 0, report
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"readiness", "deterministic", "decode", "vision", "tools", "engine"}
    assert all(c["status"] == "PASS" for c in checks.values()), checks
    # the release the server answers with, and the MoE guard read from the container's command line
    assert checks["engine"]["figure"] == {"qwen36": "vllm 0.33.0", "mistral4": "sglang 0.5.10rc0"}[name]
    assert ("MoE guard in force: --moe-backend marlin" if name == "qwen36" else "no MoE backend pinned") in checks["engine"]["detail"]
    assert checks["vision"]["figure"] == vision_code
    assert report["expectations"]["profile"] == name
    assert report["expectations"]["image"] == pinned_image()
    # The run is on the host too, and the door's status page shows it (the test host's door: loopback, no key).
    on_host = json.loads(vm_ssh("tail -n 1 /var/lib/sparkstack/door/verify-history.jsonl").stdout)
    assert (on_host["model"], on_host["host"]) == (name, testhost.HOST_ALIAS)
    page = vm_ssh("curl -fsS http://127.0.0.1:30080/status").stdout
    assert f"<td>{name}</td><td>{report['expectations']['variant']}</td><td>{on_host['time']}</td>" in page, page[-2000:]
    code, table = verify(history=history)
    print(table)
    assert code == 0 and "decode" in table


def test_verify_reports_the_variant_and_a_regression(deployed, history):
    # The stand-in streams at 20 tok/s: below 80% of rollback's 29 tok/s baseline.
    vm_ssh("echo '{\"mistral4\": {\"token_rate\": 20}}' > /var/lib/sparkstack/huggingface/standin-knobs.json")
    assert vm_ssh("llm-switch mistral --variant rollback").returncode == 0
    code, report = verify("--json", "--max-tokens", "40", history=history)
    vm_ssh("rm -f /var/lib/sparkstack/huggingface/standin-knobs.json")
    assert code == 1
    assert report["expectations"]["variant"] == "rollback"
    decode = next(c for c in report["checks"] if c["name"] == "decode")
    assert decode["status"] == "FAIL" and "REGRESSION" in decode["detail"]
    assert 18 <= report["figures"]["decode"]["decode_tok_s_median"] <= 22


def test_verify_with_nothing_hot_says_so_and_exits_2(deployed, history):
    assert vm_ssh("llm-switch none").returncode == 0
    code, output = verify(history=history)
    assert code == 2 and "no single model is hot" in output
