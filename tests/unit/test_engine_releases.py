"""Engine truth, offline: every rendered variant against the committed snapshots of the real releases.

The snapshots (sparkstack/engines/releases/*.json) were written by tools/snapshot_engine.py from
the PyPI releases' own parsers; the stand-in engine's table must be a subset of them, so the test
double never accepts what the real release refuses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkstack.cli import main
from sparkstack.engines import ADAPTERS, adapter_for
from sparkstack.engines.host import ABSENT, FAILED, read_answer
from sparkstack.engines.release import EngineRelease, committed_releases, releases_for
from sparkstack.engines.vllm import VllmAdapter
from sparkstack.profiles import load_profiles, release_findings
from tests.unit.conftest import edit_profile

STANDIN = Path(__file__).resolve().parents[1] / "standin_engine"
STANDIN_TABLE = json.loads((STANDIN / "engine_table.json").read_text())


def validate(*paths):
    return CliRunner().invoke(main, ["validate", *map(str, paths)])


def release(engine: str, version: str) -> EngineRelease:
    return next(r for r in committed_releases(engine) if r.version == version)


def test_every_shipped_profile_is_checked_against_at_least_one_real_release():
    for lp in load_profiles():
        p = lp.profile
        found = releases_for(p.engine, p.engine_version)
        assert found, f"{p.name}: no snapshot for {p.engine} {p.engine_version}"
        for r in found:
            assert len(r.actions) > 300, r.label  # a real release's parser, not the stand-in's dozen options
            assert release_findings(p, r) == [], f"{p.name} vs {r.label}"


@pytest.mark.parametrize("engine,version", [("vllm", "0.33.0"), ("sglang", "0.5.9"), ("sglang", "0.5.10rc0"), ("sglang", "0.5.23")])
def test_snapshots_were_written_by_the_real_parsers(engine, version):
    document = json.loads((Path("sparkstack/engines/releases") / f"{engine}-{version}.json").read_text())
    assert document["source"] == f"PyPI {engine}=={version}, probed by tools/snapshot_engine.py"
    assert len(document["actions"]) > 300  # the real parsers have hundreds of options; the stand-in has a dozen


def test_the_seeds_moe_pin_is_refused_by_vllm_0_33(profiles_dir):
    edit_profile(profiles_dir, "qwen36", lambda d: (d.pop("moe_backend"), d.update(env={"VLLM_FLASHINFER_MOE_BACKEND": "latency"})))
    result = validate(profiles_dir)
    assert result.exit_code == 2
    assert ("qwen36.yaml: qwen36: env VLLM_FLASHINFER_MOE_BACKEND: vllm 0.33.0 does not read it" in result.output), result.output


def test_a_flag_the_release_lacks_names_profile_variant_flag_and_release(profiles_dir):
    edit_profile(profiles_dir, "mistral4", lambda d: d["variants"]["rollback"].update(extra_args=["--no-such-flag"]))
    result = validate(profiles_dir)
    assert result.exit_code == 2
    assert "mistral4/rollback: --no-such-flag: sglang 0.5.10rc0 has no such option" in result.output, result.output
    assert "mistral4/safer-eagle" not in result.output


def test_a_value_outside_the_release_choices_is_refused(profiles_dir):
    edit_profile(profiles_dir, "mistral4", lambda d: d.update(extra_args=["--attention-backend", "warp-drive"]))
    result = validate(profiles_dir)
    assert "--attention-backend" in result.output and "invalid choice: 'warp-drive'" in result.output, result.output


def test_a_parser_the_release_does_not_register_is_refused(profiles_dir):
    edit_profile(profiles_dir, "qwen36", lambda d: d["tools"].update(parser="qwen9_xml"))
    result = validate(profiles_dir)
    assert "qwen36: --tool-call-parser: vllm 0.33.0 does not know 'qwen9_xml'" in result.output, result.output


def test_an_older_release_in_the_declared_range_is_checked_too(profiles_dir):
    # sglang 0.5.9 has no `mistral` reasoning parser; declaring a range that admits it must say so.
    edit_profile(profiles_dir, "mistral4", lambda d: d.update(engine_version=">=0.5.9,<=0.5.10rc0"))
    result = validate(profiles_dir)
    assert "mistral4/safer-eagle: --reasoning-parser: sglang 0.5.9 says: invalid choice: 'mistral'" in result.output, result.output


def test_no_snapshot_in_the_declared_range_is_an_error(profiles_dir):
    edit_profile(profiles_dir, "qwen36", lambda d: d.update(engine_version="==0.31.0"))
    result = validate(profiles_dir)
    assert "engine_version: no committed snapshot of a vllm release in '==0.31.0'" in result.output, result.output
    assert "tools/snapshot_engine.py vllm==VERSION" in result.output


@pytest.mark.parametrize("backend,message", [
    ("flashinfer_trtllm", "does not run on compute capability 12.1"),
    ("warp_drive", "sparkstack does not know which GPUs"),
])
def test_a_moe_backend_the_spark_cannot_run_is_refused(profiles_dir, backend, message):
    edit_profile(profiles_dir, "qwen36", lambda d: d.update(moe_backend=backend))
    result = validate(profiles_dir)
    assert result.exit_code == 2 and message in result.output, result.output


def test_moe_backend_needs_a_release_that_spells_it(profiles_dir):
    edit_profile(profiles_dir, "qwen36", lambda d: d.update(engine_version=">=0.20.0"))
    result = validate(profiles_dir)
    assert "admits vLLM releases before 0.23.0, which have no --moe-backend" in result.output, result.output


def test_vllm_attention_backends_are_checked_case_insensitively(profiles_dir):
    edit_profile(profiles_dir, "qwen36", lambda d: d.update(extra_args=["--attention-backend", "FLASHINFER"]))
    assert validate(profiles_dir).exit_code == 0  # vLLM upper-cases the value itself
    edit_profile(profiles_dir, "qwen36", lambda d: d.update(extra_args=["--attention-backend", "warp"]))
    result = validate(profiles_dir)
    assert "qwen36: --attention-backend: vllm 0.33.0 does not know 'warp'" in result.output, result.output


def test_an_unknown_flag_is_reported_once_with_its_value(profiles_dir):
    edit_profile(profiles_dir, "qwen36", lambda d: d.update(extra_args=["--no-such-flag", "value"]))
    result = validate(profiles_dir)
    # Once for each release the profile admits (its value is not taken for a second flag).
    admitted = len(releases_for("vllm", next(lp.profile for lp in load_profiles()
                                             if lp.profile.name == "qwen36").engine_version))
    assert admitted >= 2
    assert result.output.count("qwen36: ") == admitted and "--no-such-flag" in result.output, result.output


def test_a_probe_answer_is_only_the_marked_line():
    from sparkstack.engines.release import PROBE_MARKER

    noisy = "INFO some log line on stdout\n" + PROBE_MARKER + json.dumps(STANDIN_TABLE["vllm"] | {
        "engine": "vllm", "actions": [], "env_vars": []}) + "\n"
    assert read_answer("vllm", "img", noisy).release.version == "0.33.0"
    assert "unreadable" in read_answer("vllm", "img", "INFO only logs\n").problem
    assert "not a PEP 440 version" in read_answer("vllm", "img", PROBE_MARKER + json.dumps(
        {"engine": "vllm", "version": "dev", "actions": []})).problem


def test_speculative_config_keys_and_methods_are_checked():
    vllm_0_33 = release("vllm", "0.33.0")
    findings = VllmAdapter._speculative_findings('{"method":"medusa2","model":"x","bogus_key":1}', vllm_0_33)
    wheres = {f.where for f in findings}
    assert wheres == {"--speculative-config bogus_key", "--speculative-config method"}


def test_the_standin_table_is_a_subset_of_the_real_release_it_claims():
    """The test double never accepts a flag, choice or env var the real release refuses."""
    for engine, claimed in STANDIN_TABLE.items():
        if engine.startswith("_"):
            continue
        real = release(engine, claimed["version"])
        for flag, kind in claimed["options"].items():
            assert flag in real.options(), f"stand-in {engine}: {flag} not in {real.label}"
            if isinstance(kind, list):
                real_choices = real.choices_of(flag)
                assert real_choices and set(kind) <= set(real_choices), f"stand-in {engine} {flag}"
        assert set(claimed["env_vars"]) <= real.env_vars
        for key, flag in (("tool_call_parsers", "--tool-call-parser"), ("reasoning_parsers", "--reasoning-parser")):
            if key in claimed:
                assert flag in real.value_choices, f"{real.label} records no {flag} registry"
                assert set(claimed[key]) <= set(real.value_choices[flag]), f"stand-in {engine} {key}"


@pytest.mark.parametrize("engine", sorted(ADAPTERS))
def test_the_probe_reads_the_standin_packages_like_the_real_ones(engine):
    """The same probe script the deploy sends to an image answers from the stand-in's packages."""
    env = {"PYTHONPATH": f"{STANDIN / 'packages'}:{STANDIN}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-"], input=adapter_for(engine).probe_source(), capture_output=True,
                         text=True, env=env, check=True).stdout
    answer = read_answer(engine, "standin", out)
    assert answer.release is not None, answer.problem
    assert answer.release.version == STANDIN_TABLE[engine]["version"]
    assert answer.release.options() == set(STANDIN_TABLE[engine]["options"])
    assert answer.release.env_vars == set(STANDIN_TABLE[engine]["env_vars"])


def test_probe_answers_that_are_not_a_release_are_problems_not_passes():
    assert "docker pull img" in read_answer("vllm", "img", ABSENT).problem
    assert "did not answer" in read_answer("vllm", "img", FAILED + "\nTraceback: boom").problem
    assert "unreadable" in read_answer("vllm", "img", "{not json").problem
    assert read_answer("vllm", "img", "").release is None


def test_language_model_only_on_sglang_is_judged_by_the_declared_release(profiles_dir):
    edit_profile(profiles_dir, "mistral4", lambda d: d.update(vision=False, language_model_only=True))
    result = validate(profiles_dir)
    assert "--language-model-only: sglang 0.5.10rc0 has no such option" in result.output, result.output
    edit_profile(profiles_dir, "mistral4", lambda d: d.update(engine_version=">=0.5.23"))
    assert validate(profiles_dir).exit_code == 0  # SGLang 0.5.23 has the switch


def test_marlin_with_an_unquantized_checkpoint_is_refused_with_the_engines_words(profiles_dir):
    path = edit_profile(profiles_dir, "qwen36", lambda d: d.update(checkpoint_quantization="none"))
    result = validate(path)
    assert result.exit_code == 2
    assert "qwen36.yaml" in result.output and "moe_backend" in result.output
    assert "moe_backend='marlin' is not supported for unquantized MoE" in result.output
    assert "extra_args: [--quantization, fp8]" in result.output
    # Quantized at load (weight-only FP8 through Marlin), the same checkpoint starts: accepted.
    path = edit_profile(profiles_dir, "qwen36", lambda d: d.update(extra_args=["--quantization", "fp8"]))
    assert "moe_backend" not in validate(path).output


def test_marlin_needs_the_checkpoint_quantization_said(profiles_dir):
    path = edit_profile(profiles_dir, "qwen36", lambda d: d.pop("checkpoint_quantization"))
    result = validate(path)
    assert result.exit_code == 2 and "checkpoint_quantization" in result.output


def test_engines_lists_each_snapshot_and_the_profiles_checked_against_it():
    result = CliRunner().invoke(main, ["engines"])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("vllm 0.33.0") and "qwen36" in line and "glm51" in line for line in result.output.splitlines())
    assert any(line.startswith("sglang 0.5.10rc0") and "mistral4" in line for line in result.output.splitlines())


def test_engines_diff_names_what_a_profile_uses_that_changed():
    import dataclasses

    from sparkstack.engines.diff import diff

    old = release("vllm", "0.33.0")
    gone = "--moe-backend"
    changed = next(a for a in old.actions if "--gpu-memory-utilization" in a.options)
    new = dataclasses.replace(old, version="9.9.9", actions=tuple(
        dataclasses.replace(a, default="0.5") if a is changed else a for a in old.actions if gone not in a.options))
    old = dataclasses.replace(old, actions=tuple(dataclasses.replace(a, default="0.9") if a is changed else a
                                                 for a in old.actions))
    lines = diff(old, new, [lp.profile for lp in load_profiles()])
    assert any(line.startswith("removed   --moe-backend") and "qwen36" in line for line in lines), lines
    assert any(line.startswith("default   --gpu-memory-utilization: 0.9 -> 0.5") for line in lines), lines
    assert "release-wide: 0 option(s) added, 1 removed; 0 env var(s) added, 0 removed" in lines, lines


def test_engines_diff_refuses_a_release_it_has_no_snapshot_of():
    result = CliRunner().invoke(main, ["engines", "diff", "vllm", "0.33.0", "0.99.0"])
    assert result.exit_code == 2 and "no vllm snapshot for 0.99.0" in result.output
    assert "tools/snapshot_engine.py vllm==0.99.0" in result.output
