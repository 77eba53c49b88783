"""Each kind of bad profile gets its own one-line `FILE: field.path: what is wrong`, exit 2."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sparkstack.cli import main
from sparkstack.profiles import ProfileErrors, load_profiles
from tests.unit.conftest import edit_profile

ERROR_LINE = re.compile(r"^(?P<file>[^:]+\.yaml)(:\d+)?: (?P<field>[^:]+): (?P<message>.+)$")


def validate(*paths: Path):
    return CliRunner().invoke(main, ["validate", *map(str, paths)])


def test_shipped_profiles_are_valid():
    result = validate()
    assert result.exit_code == 0, result.output
    assert "3 profile(s) valid" in result.output


def _set(path, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return change


def _delete(key):
    return lambda data: data.pop(key)


BAD_PROFILES = [
    ("unknown key", "qwen36", _set(["gpu_mem"], 0.5), "gpu_mem", "unknown field"),
    ("unknown nested key", "qwen36", _set(["memory", "fractoin"], 0.5), "memory.fractoin", "unknown field"),
    ("wrong type", "qwen36", _set(["port"], "30001"), "port", "wrong type"),
    ("wrong type list", "qwen36", _set(["aliases"], "qwen"), "aliases", "wrong type"),
    ("missing field", "qwen36", _delete("image"), "image", "required field is missing"),
    ("unknown engine", "qwen36", _set(["engine"], "llamacpp"), "engine", "not supported"),
    ("fraction zero", "qwen36", _set(["memory", "fraction"], 0), "memory.fraction", "greater than 0"),
    ("fraction above one", "qwen36", _set(["memory", "fraction"], 1.2), "memory.fraction", "less than or equal to 1"),
    ("context zero", "qwen36", _set(["context_length"], 0), "context_length", "greater than 0"),
    ("context negative", "qwen36", _set(["context_length"], -8), "context_length", "greater than 0"),
    ("speculative method for other engine", "qwen36", _set(["speculative", "method"], "nextn"),
     "speculative.method", "vllm does not take speculative method 'nextn'"),
    ("sglang-only speculative knob on vllm", "qwen36", _set(["speculative", "eagle_topk"], 4),
     "speculative.eagle_topk", "vllm does not take eagle_topk"),
    ("speculative method in variant", "mistral4", _set(["variants", "safer-eagle", "speculative", "method"], "dflash"),
     "variants.safer-eagle.speculative.method", "sglang does not take speculative method 'dflash'"),
    ("language-only with vision", "qwen36", _set(["vision"], True),
     "language_model_only", "cannot be true on a profile that declares vision"),
    ("inline token in env", "qwen36", _set(["env", "HF_TOKEN"], "hf_abcdefghijklmnopqrstuvwxyz"),
     "env.HF_TOKEN", "looks like a secret"),
    ("inline secret value", "qwen36", _set(["env", "SOMETHING"], "hf_abcdefghijklmnopqrstuvwxyz0123"),
     "env.SOMETHING", "looks like a secret"),
    ("api key argument", "qwen36", _set(["extra_args"], ["--api-key", "abc"]), "extra_args.0", "passes a secret"),
    ("default variant unknown", "mistral4", _set(["default_variant"], "fast"), "default_variant", "not a declared variant"),
    ("name differs from file", "qwen36", _set(["name"], "qwen37"), "name", "must match the file name"),
    ("reserved alias", "qwen36", _set(["aliases"], ["status"]), "aliases", "reserved by llm-switch"),
]


@pytest.mark.parametrize("kind,profile,change,field,message", BAD_PROFILES, ids=[b[0] for b in BAD_PROFILES])
def test_bad_profile_gets_one_clear_line(profiles_dir, kind, profile, change, field, message):
    path = edit_profile(profiles_dir, profile, change)
    result = validate(profiles_dir)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1, lines
    match = ERROR_LINE.match(lines[0])
    assert match, lines[0]
    assert match["file"].endswith(path.name)
    assert match["field"] == field
    assert message in match["message"]


def test_field_errors_carry_the_line_number(profiles_dir):
    edit_profile(profiles_dir, "qwen36", _set(["port"], "30001"))
    text = (profiles_dir / "qwen36.yaml").read_text().splitlines()
    line_of_port = next(i for i, line in enumerate(text, 1) if line.startswith("port:"))
    assert f"qwen36.yaml:{line_of_port}: port:" in validate(profiles_dir).output


def test_yaml_syntax_error_names_the_line(profiles_dir):
    path = profiles_dir / "qwen36.yaml"
    lines = path.read_text().splitlines()
    lines.insert(4, "engine: [vllm")
    path.write_text("\n".join(lines) + "\n")
    result = validate(profiles_dir)
    assert result.exit_code == 2
    assert re.search(r"qwen36\.yaml:\d+: \(yaml\): YAML syntax error", result.output), result.output


@pytest.mark.parametrize("field,value,message", [
    ("port", 30000, "30000 is already used by"),
    ("aliases", ["mistral4"], "'mistral4' is already used by"),
    ("aliases", ["mistral"], "'mistral' is already used by"),
])
def test_duplicates_across_profiles(profiles_dir, field, value, message):
    edit_profile(profiles_dir, "qwen36", _set([field], value))
    result = validate(profiles_dir)
    assert result.exit_code == 2
    assert message in result.output, result.output
    assert f"qwen36.yaml: {field}:" in result.output or f"mistral4.yaml: {field}:" in result.output


def test_duplicate_name_across_directories(profiles_dir, tmp_path):
    other = tmp_path / "more"
    other.mkdir()
    (other / "qwen36.yaml").write_text((profiles_dir / "qwen36.yaml").read_text())
    result = validate(profiles_dir, other)
    assert result.exit_code == 2
    assert "more/qwen36.yaml: name: 'qwen36' is already used by" in result.output, result.output


def test_every_error_is_reported_not_just_the_first(profiles_dir):
    edit_profile(profiles_dir, "qwen36", _set(["engine"], "tgi"))
    edit_profile(profiles_dir, "mistral4", _set(["context_length"], 0))
    with pytest.raises(ProfileErrors) as caught:
        load_profiles([profiles_dir])
    fields = sorted(e.field for e in caught.value.errors)
    assert fields == ["context_length", "engine"]


@pytest.mark.parametrize("command", [["plan"], ["render", "--group", "spark", "--out", "OUT"]])
def test_commands_that_read_profiles_refuse_invalid_ones(profiles_dir, tmp_path, monkeypatch, command):
    edit_profile(profiles_dir, "qwen36", _set(["memory", "fraction"], 2))
    monkeypatch.setenv("SPARKSTACK_MODELS_DIR", str(profiles_dir))
    out = tmp_path / "tree"
    result = CliRunner().invoke(main, [str(out) if c == "OUT" else c for c in command])
    assert result.exit_code == 2
    assert "memory.fraction" in result.output
    assert not out.exists()


def test_commands_read_the_checkout_they_run_in_not_the_installed_one(tmp_path):
    """A second clone used with the first clone's venv reads its own profiles."""
    import subprocess
    import sys

    from sparkstack.paths import repo_root

    other = tmp_path / "second-clone"
    other.mkdir()
    for part in ("deploy.py", "inventory.py", "group_data", "templates", "files"):
        source = repo_root() / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, other / part)
    edit_profile(other / "group_data" / "models", "qwen36", _set(["port"], 30007))
    sparkstack = [sys.executable, "-m", "sparkstack.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("SPARKSTACK_ROOT", "SPARKSTACK_MODELS_DIR")}
    here = subprocess.run(sparkstack + ["render", "--group", "spark", "--out", str(tmp_path / "out")],
                          cwd=other / "group_data", capture_output=True, text=True, env=env)
    assert here.returncode == 0, here.stderr
    assert "--port 30007" in (tmp_path / "out/usr/local/libexec/sparkstack/launch-qwen36").read_text()
    nowhere = subprocess.run(sparkstack + ["validate"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert nowhere.returncode == 2
    assert "is not inside a sparkstack checkout" in nowhere.stderr and "deploy.py" in nowhere.stderr


def test_an_alias_bomb_profile_is_refused_unexpanded(profiles_dir):
    # The attacker's pull request: a profile whose nine levels of aliases expand to 10**9 strings.
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (profiles_dir / "bomb.yaml").write_text("\n".join(levels) + "\nname: bomb\n")
    with pytest.raises(ProfileErrors) as caught:
        load_profiles([profiles_dir])
    # Refused on the count, before the loader or the schema could walk the expansion.
    assert "bomb.yaml: (yaml): 90 YAML aliases (*name); a profile may use at most 32" in str(caught.value)


# A profile pull request is an attacker's way to root on every host: free text must never become a line of the
# root launch script or a directive of the unit.
HOSTILE_DESCRIPTIONS = [
    ("a shell line", "Qwen\ntouch /tmp/OWNED"),
    ("a unit section", "Qwen\n[Service]\nExecStartPost=/bin/touch /tmp/OWNED"),
    ("a carriage return", "Qwen\rtouch /tmp/OWNED"),
    ("a NUL", "Qwen\x00"),
    ("an escape sequence", "Qwen\x1b[2J"),
    ("a very long value", "Q" * 201),
    ("an empty value", ""),
]


@pytest.mark.parametrize("where", ["description", "variant"])
@pytest.mark.parametrize("kind,text", HOSTILE_DESCRIPTIONS, ids=[h[0] for h in HOSTILE_DESCRIPTIONS])
def test_a_description_that_is_not_one_printable_line_is_refused(profiles_dir, where, kind, text):
    if where == "description":
        path, field = edit_profile(profiles_dir, "qwen36", _set(["description"], text)), "description"
    else:
        path = edit_profile(profiles_dir, "mistral4", _set(["variants", "safer-eagle", "description"], text))
        field = "variants.safer-eagle.description"
    result = validate(profiles_dir)
    assert result.exit_code == 2, result.output
    match = ERROR_LINE.match(result.output.splitlines()[0])
    assert match and match["file"].endswith(path.name) and match["field"] == field, result.output


def test_a_description_that_skipped_validation_still_renders_as_one_comment_line():
    from sparkstack.groups import GroupSettings
    from sparkstack.memory import make_plan
    from sparkstack.profiles import load_profiles
    from sparkstack.render import render

    loaded = load_profiles()
    qwen = next(lp.profile for lp in loaded if lp.profile.name == "qwen36")
    # As if a profile had been built in code, past the schema.
    object.__setattr__(qwen, "description", "Qwen\ntouch /tmp/OWNED\n[Service]\nExecStartPost=/bin/true")
    settings = GroupSettings()
    rendering = render("spark", loaded, settings, make_plan("spark", [lp.profile for lp in loaded], settings))
    checked = 0
    for rendered in rendering.files:
        if rendered.path.endswith(("launch-qwen36", "vllm-qwen36.service")):
            assert "\ntouch /tmp/OWNED" not in rendered.content and "\n[Service]\nExecStartPost" not in rendered.content
            assert "Qwen touch /tmp/OWNED [Service] ExecStartPost=/bin/true" in rendered.content, rendered.path
            checked += 1
    assert checked == 2


# The plan talked around from extra_args: each flag repeats one the kit renders from a profile field, and the
# engine's argparse keeps the last value (issue 22: 0.9 ran where the plan, the gate and `clients` said 0.6).
MANAGED_REPEATS = [
    ("qwen36", ["--gpu-memory-utilization", "0.9"], "--gpu-memory-utilization", "memory.fraction"),
    ("qwen36", ["--max-model-len=65536"], "--max-model-len", "context_length"),
    ("qwen36", ["--gpu_memory_utilization", "0.9"], "--gpu_memory_utilization", "memory.fraction"),  # vLLM's _ spelling
    ("qwen36", ["--gpu-memory-util", "0.9"], "--gpu-memory-util", "memory.fraction"),  # argparse's abbreviation
    ("qwen36", ["--kv-cache-memory-bytes", "120000000000"], "--kv-cache-memory-bytes", "memory.fraction"),
    ("qwen36", ["--port", "8000"], "--port", "port"),
    ("qwen36", ["--speculative-config.num_speculative_tokens", "9"], "--speculative-config.num_speculative_tokens", "speculative"),
    ("mistral4", ["--mem-fraction-static", "0.95"], "--mem-fraction-static", "memory.fraction"),
    ("mistral4", ["--context-length=1048576"], "--context-length", "context_length"),
]


@pytest.mark.parametrize("name,args,shown,field", MANAGED_REPEATS, ids=[" ".join(m[1]) for m in MANAGED_REPEATS])
def test_extra_args_may_not_repeat_a_flag_the_kit_renders(profiles_dir, name, args, shown, field):
    path = edit_profile(profiles_dir, name, lambda data: data.__setitem__("extra_args", [*data.get("extra_args", []), *args]))
    result = validate(profiles_dir)
    assert result.exit_code == 2, result.output
    index = len(yaml.safe_load(path.read_text())["extra_args"]) - len(args)
    match = ERROR_LINE.match(result.output.splitlines()[0])
    assert match and match["file"].endswith(path.name) and match["field"] == f"extra_args.{index}", result.output
    assert f"{shown} is rendered by sparkstack from {field}" in result.output, result.output


def test_a_variant_may_not_repeat_a_managed_flag_either(profiles_dir):
    path = edit_profile(profiles_dir, "mistral4", _set(["variants", "safer-eagle", "extra_args"], ["--mem-fraction-static", "0.9"]))
    result = validate(profiles_dir)
    assert result.exit_code == 2, result.output
    assert f"{path.name}" in result.output and "variants.safer-eagle.extra_args.0: --mem-fraction-static is rendered" in result.output


def test_env_may_not_set_what_the_kit_sets(profiles_dir):
    path = edit_profile(profiles_dir, "qwen36", _set(["env", "HF_HUB_OFFLINE"], "0"))
    result = validate(profiles_dir)
    assert result.exit_code == 2, result.output
    assert f"{path.name}" in result.output and "env.HF_HUB_OFFLINE: is set by the kit" in result.output, result.output


def test_every_flag_an_adapter_renders_is_on_its_managed_list():
    """A flag added to an adapter's command is refused in extra_args at once, or this test names it."""
    from sparkstack.engines import adapter_for
    from sparkstack.profiles import _SAMPLE_WORKER, _IntentRevisions, load_profiles

    tests = Path(__file__).resolve().parents[1]
    dirs = [None, tests / "hosts" / "cluster_models", tests / "hosts" / "cluster_models_four"]
    seen = 0
    for directory in dirs:
        for lp in load_profiles([directory] if directory else None):
            p = lp.profile
            adapter = adapter_for(p.engine)
            for variant in p.variant_names:
                resolved = p.resolve(variant)
                own = set(resolved.extra_args)
                for node in ([None] if not p.cluster else [_SAMPLE_WORKER]):
                    argv = adapter.command(p, resolved, _IntentRevisions(p), node)
                    rendered = {t.split("=", 1)[0] for t in argv if t.startswith("--") and t not in own}
                    assert rendered <= set(adapter.managed_flags), (p.name, rendered - set(adapter.managed_flags))
                    seen += len(rendered)
    assert seen > 50


def test_validate_file_checks_it_against_the_other_profiles_and_reports_it_alone(tmp_path):
    # A new profile copied from qwen36, renamed, that forgot to change its port and served name.
    from sparkstack.paths import models_dir

    text = (models_dir() / "qwen36.yaml").read_text()
    text = text.replace("name: qwen36", "name: qwen37", 1).replace("aliases: [qwen]", "aliases: [q7]")
    new = tmp_path / "qwen37.yaml"
    new.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(new)])
    assert result.exit_code == 2, result.output
    assert f"{new}: port: 30001 is already used by group_data/models/qwen36.yaml" in result.output
    assert f"{new}: served_model_name: 'qwen36' is already served by group_data/models/qwen36.yaml" in result.output
    new.write_text(text.replace("port: 30001 ", "port: 30009 ").replace("served_model_name: qwen36 ", "served_model_name: qwen37 "))
    assert CliRunner().invoke(main, ["validate", str(new)]).exit_code == 0


def test_a_profile_on_the_doors_default_port_is_refused_naming_the_setting(tmp_path):
    from sparkstack.paths import models_dir

    (tmp_path / "qwen36.yaml").write_text((models_dir() / "qwen36.yaml").read_text().replace("port: 30001 ", "port: 30080 "))
    with pytest.raises(ProfileErrors, match="port: 30080 is where the front door listens by default "
                                            r"\(sparkstack_frontdoor_port\); give this model another port"):
        load_profiles([tmp_path])


# The attacker's profile pull request puts its payload in a field that reaches the launch script or the unit.
HOSTILE_FIELDS = [
    ("an env value with a second line", ["env"], {"NCCL_DEBUG": "INFO\ntouch /tmp/OWNED"}, "env.NCCL_DEBUG",
     "holds a control character"),
    ("an env value with a NUL", ["env"], {"NCCL_DEBUG": "INFO\x00"}, "env.NCCL_DEBUG", "holds a control character"),
    ("an env name that is code", ["env"], {"X=1; touch /tmp/OWNED #": "v"}, "env.X=1; touch /tmp/OWNED #.[key]",
     "is not an environment variable name"),
    ("an argument with a second line", ["extra_args"], ["--enable-chunked-prefill\ntouch /tmp/OWNED"], "extra_args.0",
     "holds a control character"),
    ("a served name with a space", ["served_model_name"], "qwen36 --api-key stolen", "served_model_name",
     "is not one printable word"),
    ("an image with a second line", ["image"], "eugr/spark-vllm:latest\ntouch /tmp/OWNED", "image", "is not one printable word"),
    ("a very long argument", ["extra_args"], ["--x=" + "A" * 5000], "extra_args.0", "at most 4096 characters"),
]


@pytest.mark.parametrize("kind,path,value,field,says", HOSTILE_FIELDS, ids=[h[0] for h in HOSTILE_FIELDS])
def test_a_hostile_value_in_a_field_that_reaches_a_script_is_refused(profiles_dir, kind, path, value, field, says):
    edit_profile(profiles_dir, "qwen36", _set(path, value))
    result = validate(profiles_dir)
    assert result.exit_code == 2, result.output
    line = next((line for line in result.output.splitlines() if f": {field}: " in line), None)
    assert line is not None and says in line, result.output
