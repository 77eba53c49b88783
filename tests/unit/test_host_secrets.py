"""The secrets file's one rule (sparkstack_host/secrets.py): what breaks it is named by line and name, never by
value, and what keeps it reads the same in every reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sparkstack_host import secrets

VALUE = "hf_abcDEF0123456789-_.:/+=,@%^&*()[]{}<>?!~|;"


def test_a_file_that_keeps_the_rule_reads_as_written():
    text = f"# the owner's comment\n\nHF_TOKEN={VALUE}\nVLLM_API_KEY=sk-0123\n"
    assert secrets.parse(text) == {"HF_TOKEN": VALUE, "VLLM_API_KEY": "sk-0123"}


@pytest.mark.parametrize("line,why", [
    ('HF_TOKEN="hf_quoted"', "HF_TOKEN holds a space, a quote"),       # systemd strips these; docker kept them
    ("HF_TOKEN='hf_quoted'", "HF_TOKEN holds a space, a quote"),
    ("HF_TOKEN=hf_with space", "HF_TOKEN holds a space"),
    ("HF_TOKEN=hf_back\\slash", "HF_TOKEN holds a space, a quote, a backslash"),  # systemd reads escapes
    ("HF_TOKEN=hf_$HOME", "HF_TOKEN holds a space, a quote, a backslash, a $"),    # a shell would expand it
    ("HF_TOKEN=hf_`id`", "HF_TOKEN holds"),
    ("HF_TOKEN=hf_tab\there", "HF_TOKEN holds"),
    ("HF_TOKEN=hf_é", "HF_TOKEN holds"),
    ("HF_TOKEN=", "HF_TOKEN is empty"),
    ("HF_TOKEN=" + "x" * 4097, "HF_TOKEN is longer than 4096 characters"),
    ("export HF_TOKEN=hf_x", "is not NAME=VALUE"),
    ("1TOKEN=x", "is not NAME=VALUE"),
    ("HF_TOKEN", "is not NAME=VALUE"),
    (" HF_TOKEN=x", "is not NAME=VALUE"),
])
def test_each_break_of_the_rule_is_named_by_line_and_name_never_by_value(line, why):
    with pytest.raises(secrets.SecretsError) as refused:
        secrets.parse(f"GOOD=fine\n{line}\n", "/etc/sparkstack/secrets.env")
    assert f"/etc/sparkstack/secrets.env line 2: " in str(refused.value) and why in str(refused.value)
    value = line.partition("=")[2]
    if len(value) > 3:
        assert value not in str(refused.value)


def test_a_name_set_twice_is_refused():
    assert secrets.problems("A=1\nA=2\n") == [(2, "A is set twice")]


def test_the_check_the_deploy_runs_is_this_module_run_by_the_hosts_python(tmp_path):
    # The preflight sends the module's source to the host's python3 on stdin (one definition of the rule).
    path = tmp_path / "secrets.env"
    path.write_text('GOOD=x\nHF_TOKEN="hf_quoted_secret"\n')
    source = Path(secrets.__file__).read_text()
    result = subprocess.run([sys.executable, "-", "check", str(path)], input=source, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{path} line 2: HF_TOKEN holds") and "hf_quoted_secret" not in result.stdout
    assert subprocess.run([sys.executable, "-", "check", str(tmp_path / "absent")], input=source, text=True).returncode == 0


def test_read_returns_only_the_names_asked_for(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("HF_TOKEN=hf_x\nVLLM_API_KEY=sk-y\n")
    assert secrets.read(str(path), ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")) == {"HF_TOKEN": "hf_x"}
    assert secrets.read(str(tmp_path / "absent")) == {}


def test_set_value_replaces_one_line_keeps_the_others_and_the_file_stays_root_only(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text("# the owner's\nHF_TOKEN=hf_1\nRAY_AUTH_TOKEN=old\nVLLM_API_KEY=sk-2")  # no final newline
    path.chmod(0o644)
    assert secrets.set_value(str(path), "RAY_AUTH_TOKEN", "new0123") is True
    assert path.read_text() == "# the owner's\nHF_TOKEN=hf_1\nVLLM_API_KEY=sk-2\nRAY_AUTH_TOKEN=new0123\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert secrets.set_value(str(path), "RAY_AUTH_TOKEN", "new0123") is False  # the same value: nothing written
    assert secrets.parse(path.read_text())["RAY_AUTH_TOKEN"] == "new0123"


def test_set_value_makes_a_missing_file_and_refuses_a_value_that_breaks_the_rule(tmp_path):
    path = tmp_path / "secrets.env"
    assert secrets.set_value(str(path), "RAY_AUTH_TOKEN", "abc") is True
    assert path.read_text() == "RAY_AUTH_TOKEN=abc\n" and path.stat().st_mode & 0o777 == 0o600
    for value in ("two words", "x\nExecStartPost=/bin/sh", "", "$HOME"):
        with pytest.raises(secrets.SecretsError) as refused:
            secrets.set_value(str(path), "RAY_AUTH_TOKEN", value)
        assert value not in str(refused.value) or not value
    assert path.read_text() == "RAY_AUTH_TOKEN=abc\n"
