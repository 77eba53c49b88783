"""Day-2 operations from the laptop (sparkstack/operate.py): what runs on the host, and how its answer reads.

The commands run over pyinfra's own connection against the container test hosts (tests/hosts/test_2_switch.py);
here the host side is the fake Spark, and the laptop side reads what it printed.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from sparkstack.cli import main
from sparkstack.operate import (SERVICE_WORDS, describe_status, last_verify_for, logs_command, parse_status,
                                status_command, switch_command)
from sparkstack_host import switch
from tests.unit.fakehost import FakeHost


def test_status_reads_the_hot_model_memory_the_guard_and_the_door(tmp_path, monkeypatch):
    host = FakeHost(tmp_path, monkeypatch)
    assert switch.switch_to(switch.load_registry(), "mistral4", "rollback") == 0
    printed = json.dumps(switch.collect_status(switch.load_registry()))
    # What `status_command()` prints on the host: llm-switch's JSON, the door's unit state and its address.
    status = parse_status(printed + '\n--- door\nactive\n{"bind": "127.0.0.1", "port": 30080}\n')
    text = describe_status("spark-1", status, None)
    assert "hot: mistral4 (variant rollback), ready, up " in text
    assert f"memory: {status['memory']['available_gb']} GB available of 119.7 GB" in text
    assert "door: active on 127.0.0.1:30080" in text
    assert host.hot() == ["mistral4"]


def test_status_says_none_and_names_a_failed_model():
    status = {"hot": None, "models": [{"name": "qwen36", "unit_state": "failed"}], "memory": {}, "door": {}}
    assert "hot: none (failed: qwen36)" in describe_status("spark-1", status, None)


def test_the_host_commands_quote_what_the_user_typed():
    assert switch_command("qwen; rm -rf /", None) == "/usr/local/bin/llm-switch 'qwen; rm -rf /'"
    assert switch_command("mistral4", "rollback") == "/usr/local/bin/llm-switch mistral4 --variant rollback"
    assert logs_command("vllm-qwen36.service", 20, True).endswith("-u vllm-qwen36.service -n 20 -f")
    assert "llm-switch status --json" in status_command() and "sparkstack-frontdoor.service" in status_command()
    assert set(SERVICE_WORDS) == {"door", "guard"}


def test_the_last_verify_of_a_host_comes_from_the_laptops_history(tmp_path):
    history = tmp_path / "verify-history.jsonl"
    history.write_text("\n".join(json.dumps(e) for e in [
        {"time": "2026-12-01T10:00:00Z", "url": "spark-1:127.0.0.1:30001 (via ssh tunnel)", "model": "qwen36",
         "variant": "default", "decode_tok_s": 57.2, "results": {"readiness": "PASS", "decode": "PASS"}},
        {"time": "2026-12-02T10:00:00Z", "url": "spark-2:127.0.0.1:30001 (via ssh tunnel)", "model": "qwen36",
         "variant": "default", "decode_tok_s": 12.0, "results": {"decode": "FAIL"}},
    ]) + "\n")
    assert last_verify_for("spark-1", history) == ("2026-12-01T10:00:00Z qwen36 (default), 57.2 tok/s: "
                                                   "readiness PASS, decode PASS")
    assert last_verify_for("spark-3", history) is None


def test_logs_refuses_a_word_that_names_nothing_before_connecting():
    result = CliRunner().invoke(main, ["logs", "llama"])
    assert result.exit_code == 2 and "'llama' is no profile name or alias, nor one of door, guard" in result.output


def test_every_command_takes_dash_h():
    for command in (["status"], ["switch"], ["stop"], ["logs"], ["engines", "diff"], ["plan"], ["drift"]):
        result = CliRunner().invoke(main, [*command, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output, (command, result.output)
