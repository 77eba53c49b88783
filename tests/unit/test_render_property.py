"""A property of rendering: whatever valid profile an author writes, the launch script and the unit stay clean
(shellcheck, `systemd-analyze verify`), and the author's free text never becomes code. hypothesis draws the
text (descriptions, env values, extra arguments) from an alphabet of shell and systemd metacharacters; what
`sparkstack validate` refuses is skipped, what it accepts must render safely."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sparkstack.groups import GroupSettings
from sparkstack.memory import make_plan
from sparkstack.paths import models_dir
from sparkstack.profiles import ProfileErrors, load_profiles
from sparkstack.render import render
from tests.unit.test_render import _verify

pytestmark = pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (make test installs it)")

BASE = yaml.safe_load((models_dir() / "qwen36.yaml").read_text())
SCRIPT, UNIT = "/usr/local/libexec/sparkstack/launch-qwen36", "/etc/systemd/system/vllm-qwen36.service"
# An environment variable the kit leaves to profiles, and an argument the engine's release accepts free text for.
ENV_NAME = "NCCL_DEBUG_FILE"
TEXT = st.text(alphabet=st.sampled_from(list("aZ9 $`\\'\";&|<>(){}[]%#!*?~=-_./:@\n\r\t") + ["\x00", "\x1b", "é"]),
               min_size=1, max_size=40)


def rendered(tmp: Path, description: str, env_value: str) -> dict[str, str] | None:
    profile = dict(BASE, description=description, env={ENV_NAME: env_value})
    folder = tmp / "models"
    folder.mkdir(exist_ok=True)
    (folder / "qwen36.yaml").write_text(yaml.safe_dump(profile))
    try:
        loaded = load_profiles([folder])
    except ProfileErrors:
        return None  # refused: validate names the field (tests/unit/test_validation.py)
    group = GroupSettings()
    files = render("spark", loaded, group, make_plan("spark", [lp.profile for lp in loaded], group)).files
    return {f.path: f.content for f in files if f.path in (SCRIPT, UNIT)}


def code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, str]:
    return rendered(tmp_path_factory.mktemp("baseline"), "Qwen", "x")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much])
@given(description=TEXT, env_value=TEXT)
def test_valid_free_text_renders_clean_and_never_becomes_code(baseline, tmp_path_factory, description, env_value):
    tmp = tmp_path_factory.mktemp("drawn")
    files = rendered(tmp, description, env_value)
    assume(files is not None)
    # The only code is the template's: the drawn env value appears once, as one shell-quoted word.
    quoted = shlex.quote(f"{ENV_NAME}={env_value}")
    assert [line.replace(quoted, f"{ENV_NAME}=x") for line in code_lines(files[SCRIPT])] == code_lines(baseline[SCRIPT])
    assert code_lines(files[UNIT]) == code_lines(baseline[UNIT])
    tree = tmp / "tree"
    for path, content in files.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    lint = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(tree / SCRIPT.lstrip("/"))],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    assert _verify(tree, [tree / UNIT.lstrip("/")]) == []


def test_the_property_would_catch_free_text_that_became_code(baseline, tmp_path):
    # The check itself can fail: a description let through as a line of its own differs from the template's code.
    files = rendered(tmp_path, "Qwen", "x")
    broken = files[SCRIPT].replace("# Launch qwen36", "# Launch qwen36\ntouch /tmp/OWNED", 1)
    assert code_lines(broken) != code_lines(baseline[SCRIPT])
