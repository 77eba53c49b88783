"""What `sparkstack render` writes: pinned flags, labels, binding, variants, lint-clean scripts and units."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkstack.cli import main
from sparkstack.groups import GroupSettings, load_group_settings
from sparkstack.paths import repo_root
from sparkstack.lockfile import group_pins
from sparkstack.memory import make_plan
from sparkstack.profiles import load_profiles
from sparkstack.render import WATCHTOWER_DISABLE_LABEL, RenderError, render

# What systemd-analyze may say off-target, and only that: docker and the launch scripts exist
# on the host, not on this machine (the launch scripts are linted by shellcheck below, and the
# host checks run `systemd-analyze verify` inside the test VM where all of them exist).
OFF_TARGET_MESSAGES = (
    re.compile(r"^[\w-]+\.service: Failed to create [\w-]+\.service/start: Unit docker\.service not found\.$"),
    re.compile(r"^[\w-]+\.service: Command /usr/bin/docker is not executable: No such file or directory$"),
    re.compile(r"^[\w@-]+\.service: Command /usr/local/libexec/sparkstack/(launch-[\w-]+|sparkstack-memguard) is not "
               r"executable: No such file or directory$"),
    re.compile(r"^[\w@-]+\.service: Command /usr/local/bin/llm-switch is not executable: No such file or directory$"),
)


def rendering_for(group: str, settings: GroupSettings | None = None, models_dir: Path | None = None, pinned: bool = True):
    """What the CLI renders for GROUP: with its lock's pins (the test VM's lock exists once the VM tests ran)."""
    loaded = load_profiles([models_dir] if models_dir else None)
    settings = settings or load_group_settings(group)
    plan = make_plan(group, [lp.profile for lp in loaded], settings)
    return render(group, loaded, settings, plan, group_pins(group, plan.deployable, settings) if pinned else None)


@pytest.fixture(scope="module", params=["spark", "testhost"])
def tree(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"render-{request.param}")
    result = CliRunner().invoke(main, ["render", "--group", request.param, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def launch_script(tree: Path, name: str) -> str:
    return (tree / "usr/local/libexec/sparkstack" / f"launch-{name}").read_text()


def variant_block(script: str, variant: str) -> str:
    match = re.search(rf"^  {re.escape(variant)}\)\n(.*?)^    ;;", script, re.M | re.S)
    assert match, f"no variant {variant} in script"
    return match.group(1)


def test_render_writes_byte_for_byte_what_the_deploy_puts(tree):
    group = tree.name.split("-")[1].rstrip("0123456789")
    rendering = rendering_for(group)
    for rendered in rendering.files:
        on_disk = tree / rendered.path.lstrip("/")
        assert on_disk.read_text() == rendered.content
        assert oct(on_disk.stat().st_mode & 0o777) == oct(int(rendered.mode, 8))


def test_one_unit_and_one_launch_script_per_deployable_profile(tree):
    units = sorted(p.name for p in (tree / "etc/systemd/system").iterdir())
    # the model units, the memory guard, earlyoom's drop-in directory, the front door and its switch socket
    assert units == ["earlyoom.service.d", "sglang-mistral4.service", "sparkstack-frontdoor.service",
                     "sparkstack-memory-guard.service", "sparkstack-switch-request.socket",
                     "sparkstack-switch-request@.service", "vllm-qwen36.service"]
    scripts = sorted(p.name for p in (tree / "usr/local/libexec/sparkstack").iterdir())
    assert scripts == ["launch-mistral4", "launch-qwen36", "sparkstack-fetch", "sparkstack-frontdoor", "sparkstack-hub",
                       "sparkstack-memguard"]  # glm51 is refused by the plan


@pytest.mark.parametrize("name", ["qwen36", "mistral4"])
def test_every_container_carries_the_watchtower_disable_label(tree, name):
    assert f"--label {WATCHTOWER_DISABLE_LABEL} \\" in launch_script(tree, name)


@pytest.mark.parametrize("name", ["qwen36", "mistral4"])
def test_container_runs_in_the_foreground_without_a_docker_restart_policy(tree, name):
    script = launch_script(tree, name)
    assert "exec docker run --rm --pull=never \\" in script
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert " -d " not in code and "--detach" not in code and "--restart" not in code


@pytest.mark.parametrize("name,key", [("qwen36", "VLLM_API_KEY"), ("mistral4", None)])
def test_each_container_gets_only_its_engines_key_by_name_and_never_a_value(tree, name, key):
    from sparkstack.engines import API_KEY_ENV

    script = launch_script(tree, name)
    # systemd reads the secrets file into the script's environment; docker copies only the named variable
    # (SGLang reads no key from its environment: it gets no secret at all).
    assert "--env-file" not in script and "secrets.env" not in script and "HF_TOKEN" not in script
    expected = [f"  --env {key} \\"] if key else []
    assert [line for line in script.splitlines() if "API_KEY" in line] == expected
    assert (key in API_KEY_ENV.values()) if key else ("sglang" not in API_KEY_ENV)
    unit = next(tree.rglob(f"*-{name}.service")).read_text()
    assert "EnvironmentFile=-/etc/sparkstack/secrets.env" in unit


def test_qwen36_pinned_flags_and_env(tree):
    block = variant_block(launch_script(tree, "qwen36"), "default")
    for expected in (
        "vllm serve rdtand/Qwen3.6-35B-A3B-PrismaQuant-4.75bit-vllm",
        "--port 30001",
        "--gpu-memory-utilization 0.5",
        "--max-model-len 262144",
        "--language-model-only",
        """--speculative-config '{"method":"dflash","model":"z-lab/Qwen3.6-35B-A3B-DFlash","revision":""",
        '"num_speculative_tokens":3}',
        "--revision ",
        "--enable-auto-tool-choice",
        "--tool-call-parser qwen3_xml",
        # The seeds' MoE guard in the spelling vLLM >= 0.23 reads (VLLM_FLASHINFER_MOE_BACKEND is gone since 0.24).
        "--moe-backend marlin",
    ):
        assert expected in block, expected
    assert "VLLM_FLASHINFER_MOE_BACKEND" not in launch_script(tree, "qwen36")


def test_mistral4_has_vision_so_no_language_only_flag(tree):
    assert "--language-model-only" not in launch_script(tree, "mistral4")


def test_mistral4_default_variant_is_safer_eagle_and_rollback_has_no_eagle(tree):
    script = launch_script(tree, "mistral4")
    assert 'variant="${1:-safer-eagle}"' in script
    eagle = variant_block(script, "safer-eagle")
    rollback = variant_block(script, "rollback")
    assert "--speculative-algorithm EAGLE" in eagle
    assert "--speculative-draft-model-path mistralai/Mistral-Small-4-119B-2603-eagle" in eagle
    assert "--speculative" not in rollback
    for common in ("--mem-fraction-static 0.75", "--context-length 32768", "--attention-backend triton", "--port 30000"):
        assert common in eagle and common in rollback


@pytest.mark.parametrize("name,port", [("qwen36", 30001), ("mistral4", 30000)])
def test_endpoint_bound_to_loopback_by_default(tree, name, port):
    assert f"--publish 127.0.0.1:{port}:{port} \\" in launch_script(tree, name)


def test_units_are_docker_wrapped_and_not_started_at_boot_by_default(tree):
    unit = (tree / "etc/systemd/system/vllm-qwen36.service").read_text()
    for line in ("Requires=docker.service", "ExecStartPre=-/usr/bin/docker rm -f sparkstack-qwen36",
                 "ExecStop=/usr/bin/docker stop -t 60 sparkstack-qwen36",
                 "ExecStopPost=-/usr/bin/docker rm -f sparkstack-qwen36", "Restart=on-failure",
                 "StartLimitBurst=3", "Conflicts=sglang-mistral4.service",
                 # a missing launch script fails the start; every start waits for room first
                 "Type=exec", "ExecStartPre=/usr/local/libexec/sparkstack/sparkstack-memguard wait-for-room qwen36",
                 # the stop of a conflicting model finishes before this start: one total order over model units
                 "After=sglang-mistral4.service",
                 # the wait for room (180 s on a Spark) plus slack for docker rm and the exec
                 f"TimeoutStartSec={load_group_settings(tree.name.split('-')[1].rstrip('0123456789')).memory_wait_s + 120}"):
        assert line in unit.splitlines(), line
    unit_section = unit.split("[Service]")[0]
    assert "StartLimitIntervalSec=" in unit_section  # start limits belong in [Unit]


COMPILE_VOLUME = "--volume /var/cache/sparkstack/compile/"


def test_testhost_differs_from_spark_only_in_image_and_gpus(tmp_path):
    spark = {f.path: f.content for f in rendering_for("spark", pinned=False).files}
    testvm = {f.path: f.content for f in rendering_for("testhost", pinned=False).files}
    assert spark.keys() == testvm.keys()
    standin = "127.0.0.1:5000/sparkstack/standin-engine:latest"
    for path in spark:
        if "launch-" not in path:
            continue
        removed = set(spark[path].splitlines()) - set(testvm[path].splitlines())
        added = set(testvm[path].splitlines()) - set(spark[path].splitlines())
        assert {line.strip() for line in removed} <= {"--gpus all \\"} | {
            line.strip() for line in spark[path].splitlines()
            if line.strip().startswith(("UNLOCKED:eugr/", "UNLOCKED:lmsysorg/", "#   image ", COMPILE_VOLUME))}
        # The compile cache follows the image: another image, another cache.
        cache = {line.strip() for line in added if line.strip().startswith(COMPILE_VOLUME)}
        assert len(cache) == 1
        assert {line.strip() for line in added} - cache == {f"UNLOCKED:{standin} \\", f"#   image {standin}"}


def test_a_new_profile_renders_and_reaches_llm_switch_with_no_code_change(profiles_dir):
    new = profiles_dir / "tiny.yaml"
    text = (profiles_dir / "qwen36.yaml").read_text()
    text = text.replace("name: qwen36", "name: tiny").replace("aliases: [qwen]", "aliases: [tee]")
    text = text.replace("port: 30001", "port: 30005").replace("served_model_name: qwen36", "served_model_name: tiny")
    new.write_text(text)
    rendering = rendering_for("spark", models_dir=profiles_dir)
    paths = {f.path for f in rendering.files}
    assert "/etc/systemd/system/vllm-tiny.service" in paths
    assert "/usr/local/libexec/sparkstack/launch-tiny" in paths
    registry = json.loads(next(f.content for f in rendering.files if f.kind == "registry"))
    assert registry["models"]["tiny"]["aliases"] == ["tee"]
    assert registry["models"]["tiny"]["unit"] == "vllm-tiny.service"


def test_sparkstack_expose_is_refused_with_a_pointer_to_the_door():
    from sparkstack.groups import GroupSettingsError, settings_from_data

    with pytest.raises(GroupSettingsError, match="group_data/spark.py: .*sparkstack_expose is gone: engines listen on "
                                                 "loopback only. Set sparkstack_frontdoor_expose = True"):
        settings_from_data({"sparkstack_expose": True}, "group_data/spark.py")


def test_every_engine_publishes_on_loopback_only_and_an_exposed_door_binds_every_interface():
    rendering = rendering_for("spark", GroupSettings(frontdoor_expose=True))
    for script in (f for f in rendering.files if "/launch-" in f.path):
        published = [line for line in script.content.splitlines() if "--publish" in line]
        assert published and all("--publish 127.0.0.1:" in line for line in published), script.path
    door = json.loads(next(f.content for f in rendering.files if f.kind == "registry"))["frontdoor"]
    assert (door["bind"], door["api_key_env"]) == ("0.0.0.0", "SPARKSTACK_FRONTDOOR_API_KEY")


def test_launch_script_argument_arrays_parse_back_to_the_engine_command(tree):
    """The rendered bash array, parsed like bash would, is exactly the engine's argument list."""
    from sparkstack.engines import engine_args

    group = tree.name.split("-")[1].rstrip("0123456789")
    profiles = {lp.profile.name: lp.profile for lp in load_profiles()}
    settings = load_group_settings(group)
    pins = group_pins(group, [profiles["qwen36"], profiles["mistral4"]], settings)
    for name in ("qwen36", "mistral4"):
        script = launch_script(tree, name)
        for variant in profiles[name].variant_names:
            block = variant_block(script, variant)
            array = block.split("engine_args=(", 1)[1].rsplit(")", 1)[0]
            assert shlex.split(array) == engine_args(profiles[name], profiles[name].resolve(variant), pins)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (make test installs it)")
def test_shellcheck_passes_on_every_rendered_script(tree):
    scripts = sorted((tree / "usr/local/libexec/sparkstack").glob("launch-*"))
    assert scripts
    result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_shellcheck_would_catch_a_broken_script(tmp_path):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    bad = tmp_path / "bad"
    bad.write_text("#!/bin/bash\nrm -rf $1/*\n")
    assert subprocess.run(["shellcheck", str(bad)], capture_output=True).returncode != 0


def _verify(tree: Path, units: list[Path]) -> list[str]:
    result = subprocess.run(["systemd-analyze", "verify", *map(str, units)],
                            capture_output=True, text=True)
    messages = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return [m for m in messages if not any(p.search(m) for p in OFF_TARGET_MESSAGES)]


def test_systemd_analyze_verify_passes_on_every_rendered_unit(tree):
    units = sorted((tree / "etc/systemd/system").glob("*.service")) + sorted((tree / "etc/systemd/system").glob("*.socket"))
    assert units
    assert _verify(tree, units) == []


def test_systemd_analyze_verify_would_catch_a_broken_unit(tree, tmp_path):
    broken_tree = tmp_path / "tree"
    shutil.copytree(tree, broken_tree)
    unit = broken_tree / "etc/systemd/system/vllm-qwen36.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    assert any("restart specifier" in m for m in _verify(broken_tree, [unit]))


def test_the_memory_guard_orders_and_earlyoom_thresholds_are_absolute(tree):
    guard = (tree / "etc/systemd/system/sparkstack-memory-guard.service").read_text()
    assert "ExecStart=/usr/local/libexec/sparkstack/sparkstack-memguard watch" in guard
    mistral = (tree / "etc/systemd/system/sglang-mistral4.service").read_text()
    assert not any(line.startswith("After=") and "qwen36" in line for line in mistral.splitlines())  # no ordering cycle
    earlyoom = (tree / "etc/systemd/system/earlyoom.service.d/sparkstack.conf").read_text()
    exec_line = next(line for line in earlyoom.splitlines() if line.startswith("ExecStart=/"))
    scale = 1 if "spark" in tree.name else 0.01
    assert f"-M {round(524288 * scale)},{round(102400 * scale)} -s 100,100" in exec_line
    assert " -m " not in exec_line and "--prefer" in exec_line and "--avoid" in exec_line
    assert "$$" in exec_line  # regex anchors escaped from systemd's variable expansion


def test_llm_switch_is_shipped_and_compiles(tree):
    for program in (tree / "usr/local/bin/llm-switch", tree / "usr/local/libexec/sparkstack/sparkstack-memguard"):
        assert program.read_text().startswith("#!/usr/bin/python3")
        subprocess.run(["python3", "-m", "py_compile", str(program)], check=True)


def test_tls_files_are_refused_alone_or_without_tls_naming_the_settings(tmp_path):
    from sparkstack.groups import GroupSettingsError, settings_from_data

    cert, key = tmp_path / "door.crt", tmp_path / "door.key"
    cert.write_text("certificate")
    key.write_text("key")
    with pytest.raises(GroupSettingsError, match="group_data/spark.py: .*tls_cert and sparkstack_frontdoor_tls_key go together"):
        settings_from_data({"sparkstack_frontdoor_tls": True, "sparkstack_frontdoor_tls_cert": str(cert)}, "group_data/spark.py")
    with pytest.raises(GroupSettingsError, match="sparkstack_frontdoor_tls is not"):
        settings_from_data({"sparkstack_frontdoor_tls_cert": str(cert), "sparkstack_frontdoor_tls_key": str(key)},
                           "group_data/spark.py")
    with pytest.raises(GroupSettingsError, match="sparkstack_frontdoor_tls_cert"):
        settings_from_data({"sparkstack_frontdoor_tls": True, "sparkstack_frontdoor_tls_cert": str(tmp_path / "missing"),
                            "sparkstack_frontdoor_tls_key": str(key)}, "group_data/spark.py")
    settings = settings_from_data({"sparkstack_frontdoor_tls": True}, "group_data/spark.py")
    registry = json.loads(next(f.content for f in rendering_for("spark", settings).files if f.kind == "registry"))
    assert registry["frontdoor"]["tls"] == {"cert": "/etc/sparkstack/tls/door.crt", "key": "/etc/sparkstack/tls/door.key"}


def _render_into(given: str):
    return CliRunner().invoke(main, ["render", "--group", "spark", "--out", given])


@pytest.mark.parametrize("given,says", [
    ("/", "the root of this machine's filesystem"),
    ("", "the current directory"),
    (".", "the current directory"),
], ids=["the root", "the empty string", "the current directory"])
def test_render_refuses_to_write_into_the_live_system_or_the_current_directory(given, says):
    result = _render_into(given)
    assert result.exit_code != 0 and says in result.output, result.output
    assert "rendered" not in result.output


def test_render_refuses_the_checkout_and_what_is_above_it():
    from sparkstack.paths import repo_root

    for given, says in ((repo_root(), "that is the checkout;"), (repo_root().parent, "the checkout or a directory above it")):
        result = _render_into(str(given))
        assert result.exit_code != 0 and says in result.output, result.output


def test_render_refuses_a_directory_it_did_not_write_and_leaves_it_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    result = _render_into(str(tmp_path))
    assert result.exit_code != 0 and "is not empty and holds no sparkstack MANIFEST" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_second_render_replaces_its_own_tree_so_no_stale_file_stays(tmp_path):
    out = tmp_path / "spark"
    assert _render_into(str(out)).exit_code == 0
    first = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    stale = out / "usr/local/libexec/sparkstack/launch-retired"  # a model since removed from the profiles
    stale.write_text("#!/bin/bash\n")
    assert _render_into(str(out)).exit_code == 0
    assert not stale.exists()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == first


def test_the_members_of_a_set_do_not_conflict_with_each_other_and_the_registry_lists_the_set(tmp_path):
    import yaml
    shutil.copytree(repo_root() / "group_data" / "models", tmp_path, dirs_exist_ok=True)
    mistral = yaml.safe_load((tmp_path / "mistral4.yaml").read_text())
    mistral["memory"].update(fraction=0.2, resident_gb=20, weights_gb=15)  # small enough to sit beside qwen36
    (tmp_path / "mistral4.yaml").write_text(yaml.safe_dump(mistral))
    settings = load_group_settings("spark").model_copy(update={"model_sets": {"pair": ["qwen36", "mistral4"]}})
    rendering = rendering_for("spark", settings, models_dir=tmp_path, pinned=False)
    files = {f.path: f.content for f in rendering.files}
    for unit, partner in (("vllm-qwen36.service", "sglang-mistral4.service"), ("sglang-mistral4.service", "vllm-qwen36.service")):
        conflicts = [line for line in files[f"/etc/systemd/system/{unit}"].splitlines() if line.startswith("Conflicts=")]
        assert all(partner not in line for line in conflicts), conflicts
    registry = json.loads(files["/etc/sparkstack/models.json"])
    assert registry["sets"] == {"pair": {"members": ["qwen36", "mistral4"], "required_memory_gb": 92.6}}
