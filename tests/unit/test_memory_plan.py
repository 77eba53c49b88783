"""The memory plan admits what fits a host's unified memory and refuses the rest with numbers."""

from __future__ import annotations

import pytest

from sparkstack.groups import GroupSettings, load_group_settings
from sparkstack.memory import PlanError, check_fit, make_plan
from sparkstack.profiles import load_profiles


@pytest.fixture(scope="module")
def profiles():
    return {lp.profile.name: lp.profile for lp in load_profiles()}


def test_spark_plan_admits_qwen_and_mistral_and_refuses_glm(profiles):
    plan = make_plan("spark", list(profiles.values()), load_group_settings("spark"))
    assert sorted(p.name for p in plan.deployable) == ["mistral4", "qwen36"]
    assert [f.profile.name for f in plan.refused] == ["glm51"]


def test_glm_refusal_carries_the_numbers(profiles):
    fit = check_fit(profiles["glm51"], host_gb=128, reserve_gb=8, floor_gb=10)
    assert not fit.fits
    text = fit.describe()
    assert "377 GB" in text and "128 GB" in text
    assert "needs at least 4 hosts of 128 GB" in text
    assert fit.min_hosts == 4


# The claim is the larger of fraction x host and resident_gb; with the reserve it must leave the guard's floor.
@pytest.mark.parametrize("name,host_gb,reserve_gb,fits", [
    ("qwen36", 128, 8, True),      # claim 67 (resident > 0.5 x 128 = 64): 128 - 75 = 53 left
    ("qwen36", 84, 8, False),      # 84 - 75 = 9 left, below the 10 GB floor
    ("qwen36", 85, 8, True),       # exactly the floor left still fits
    ("mistral4", 128, 8, True),    # claim 96 (0.75 x 128 > resident 82): 24 left
    ("mistral4", 128, 30, False),  # 128 - 96 - 30 = 2 left
    ("mistral4", 92, 0, True),     # claim 82 (resident > 0.75 x 92 = 69): 10 left
    ("mistral4", 81, 0, False),    # 82 GB resident > 81
])
def test_fit_boundaries(profiles, name, host_gb, reserve_gb, fits):
    fit = check_fit(profiles[name], host_gb, reserve_gb, floor_gb=10)
    assert fit.fits is fits, fit.describe()


def _with_memory(profile, **memory):
    return profile.model_copy(update={"memory": profile.memory.model_copy(update=memory)})


def test_a_fraction_above_what_resident_gb_says_is_what_the_plan_counts(profiles):
    # A new user's profile: fraction 0.95 and no resident_gb. The engine is told 0.95 x 128 GB and takes it.
    greedy = _with_memory(profiles["qwen36"], fraction=0.95, resident_gb=None)
    fit = check_fit(greedy, 128, 8, floor_gb=10)
    assert not fit.fits
    assert ("claim 121.6 GB (0.95 x 128 GB = 121.6 GB >= weights 22 GB) + OS reserve 8 GB = 129.6 GB exceeds 128 GB "
            "of unified memory") in fit.describe()
    assert "memory.fraction 0.95: at most 0.85 leaves the guard's floor here" in fit.describe()


def test_a_model_the_guard_would_stop_does_not_fit(profiles):
    # 0.88 x 128 = 112.64 GB + 8 GB leaves 7.36 GB: it loads, and the guard stops it below its 10 GB floor.
    fit = check_fit(_with_memory(profiles["qwen36"], fraction=0.88), 128, 8, floor_gb=10)
    assert not fit.fits
    assert ("claim 112.64 GB (0.88 x 128 GB = 112.64 GB >= resident 67 GB) + OS reserve 8 GB = 120.64 GB leaves "
            "7.36 GB of 128 GB, below the memory guard's floor of 10 GB (sparkstack_memory_guard_floor_gb): the guard "
            "would stop it") in fit.describe()
    # The floor is the group's one setting: the plan reads the same figure the guard is rendered with.
    strict = GroupSettings(memory_guard_floor_gb=30)
    plan = make_plan("spark", [profiles["mistral4"], profiles["qwen36"]], strict)
    assert [p.name for p in plan.deployable] == ["qwen36"]  # mistral4: 128 - 96 - 8 = 24 left < 30


def test_a_claim_far_from_resident_gb_is_pointed_out(profiles):
    fit = check_fit(profiles["mistral4"], 128, 8, floor_gb=10)
    assert fit.fits
    assert ("note: memory.fraction 0.75 lets the engine take 96 GB, 14 GB more than memory.resident_gb 82 GB; "
            "the plan counts 96 GB (a fraction of about 0.64 matches resident_gb)") in fit.describe()
    # qwen36's two figures are 3 GB apart (within 10% of its 67 GB): no note.
    assert "note:" not in check_fit(profiles["qwen36"], 128, 8, floor_gb=10).describe()


def test_the_plan_counts_what_the_launch_scripts_pass_the_engines(profiles):
    import json

    from sparkstack.render import render

    loaded = load_profiles()
    settings = load_group_settings("spark")
    plan = make_plan("spark", [lp.profile for lp in loaded], settings)
    files = {f.path: f.content for f in render("spark", loaded, settings, plan).files}
    registry = json.loads(next(c for p, c in files.items() if p.endswith("/models.json")))
    for profile in plan.deployable:
        script = next(c for p, c in files.items() if p.endswith(f"/launch-{profile.name}"))
        flag = {"vllm": "--gpu-memory-utilization", "sglang": "--mem-fraction-static"}[profile.engine]
        told = float(script.split(flag, 1)[1].split()[0].strip("'\"\\"))
        fit = next(f for f in plan.fits if f.profile is profile)
        assert told == fit.claim.fraction
        assert fit.claim.told_gb == round(told * plan.host_gb, 2)
        # The memory gate waits for the very figure the plan counted.
        assert registry["models"][profile.name]["required_memory_gb"] == fit.claim_gb
    assert registry["memory_guard_floor_gb"] == settings.memory_guard_floor_gb


def test_fraction_must_cover_the_weights(profiles):
    # 0.5 x 40 = 20 GB < 22 GB of qwen36 weights, even with a large host otherwise.
    fit = check_fit(_with_memory(profiles["qwen36"], resident_gb=30), 40, 0, floor_gb=0)
    assert not fit.fits
    assert "memory fraction 0.5 x 40 GB = 20 GB cannot hold 22 GB of weights" in fit.describe()


def test_reserve_is_configurable(profiles):
    tight = GroupSettings(os_reserve_gb=50)
    plan = make_plan("spark", [profiles["mistral4"], profiles["qwen36"]], tight)
    assert [p.name for p in plan.deployable] == ["qwen36"]  # 67 + 50 = 117 leaves 11, 96 + 50 = 146 does not fit


def test_live_memory_is_used_when_the_group_does_not_declare_it(profiles):
    settings = GroupSettings(unified_memory_gb=None)
    assert make_plan("spark", [profiles["qwen36"]], settings, live_gb=70).refused
    assert not make_plan("spark", [profiles["qwen36"]], settings, live_gb=119.5).refused
    assert make_plan("spark", [profiles["qwen36"]], settings).host_gb == 128


def test_pinning_a_profile_that_cannot_fit_stops_the_plan(profiles):
    with pytest.raises(PlanError, match="needs at least 4 hosts"):
        make_plan("spark", list(profiles.values()), GroupSettings(models=["qwen36", "glm51"]))


def test_pinning_an_unknown_profile_is_an_error(profiles):
    with pytest.raises(PlanError, match="unknown profiles: llama"):
        make_plan("spark", list(profiles.values()), GroupSettings(models=["llama"]))


def test_glm_is_placed_on_a_four_node_cluster_with_the_figures_per_node(profiles):
    plan = make_plan("cluster", list(profiles.values()), load_group_settings("cluster"))
    fit = next(f for f in plan.fits if f.profile.name == "glm51")
    assert fit.fits and fit.nodes == 4
    assert ("glm51      vllm   weights 94.25 GB per node of 4  claim 102.4 GB (0.8 x 128 GB = 102.4 GB >= weights "
            "94.25 GB) + reserve 8 GB = 110.4 GB of 128 GB  (headroom 17.6 GB >= guard floor 10 GB; placed on 4 nodes, "
            "native multi-node)") in fit.describe()
    # placed, but not deployed: nothing renders a cluster model per node yet
    assert [f.profile.name for f in plan.placed_clusters] == ["glm51"]
    assert "glm51" not in [p.name for p in plan.deployable]
    assert "note: glm51 is placed but not deployed" in plan.describe()


def test_glm_on_three_nodes_is_refused_with_the_per_node_numbers(profiles):
    fit = check_fit(profiles["glm51"], host_gb=128, reserve_gb=8, cluster_nodes=3, floor_gb=10)
    assert not fit.fits
    text = fit.describe()
    assert "tensor_parallel 4 x pipeline_parallel 1 = 4 nodes, but this group has 3" in text
    # 377 / 3 = 125.67 GB per node: more than 0.8 x 128 GB and, with the reserve, more than 128 GB
    assert ("claim 125.67 GB (weights 125.67 GB > 0.8 x 128 GB = 102.4 GB) per node of 3 + OS reserve 8 GB = 133.67 GB "
            "exceeds 128 GB") in text
    assert "needs at least 4 hosts of 128 GB; not deployed" in text


def test_tensor_parallel_must_divide_the_declared_heads(tmp_path):
    from sparkstack.paths import models_dir
    from sparkstack.profiles import ProfileErrors

    for source in models_dir().glob("*.yaml"):
        text = source.read_text()
        if source.name == "glm51.yaml":
            text = text.replace("  tensor_parallel: 4\n", "  tensor_parallel: 3\n  attention_heads: 64\n  kv_heads: 8\n")
        (tmp_path / source.name).write_text(text)
    with pytest.raises(ProfileErrors) as caught:
        load_profiles([tmp_path])
    message = str(caught.value)
    assert "glm51.yaml" in message and "cluster.tensor_parallel: 3 does not divide the 64 attention heads" in message
    assert "cluster.tensor_parallel: 3 neither divides the 8 KV heads nor is a multiple of them" in message


def test_weights_far_below_what_the_lock_records_are_refused_with_both_numbers(profiles):
    qwen = profiles["qwen36"]
    declared = qwen.memory.weights_gb
    # The lock says the repo's files weigh twice what the profile declares (another quantisation, say).
    fit = check_fit(qwen, 128, 8, locked=("org/qwen", declared * 2), floor_gb=10)
    assert not fit.fits
    assert (f"memory.weights_gb {declared:g} GB is more than 10% below the {declared * 2:g} GB the lock records for "
            f"org/qwen; set memory.weights_gb to at least {declared * 2:g} GB") in fit.describe()
    # Within 10% (configs and rounding), the declared figure stands.
    assert check_fit(qwen, 128, 8, locked=("org/qwen", declared * 1.05), floor_gb=10).fits


def test_the_plan_reads_the_groups_lock(profiles, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from sparkstack.cli import main

    lock = {"lock_version": 1, "group": "spark", "images": {}, "models": {"rdtand/Qwen3.6-35B-A3B-PrismaQuant-4.75bit-vllm": {
        "revision": "main", "commit": "a" * 40, "allow": [], "ignore": [],
        "files": {"model-00001-of-00002.safetensors": 60_000_000_000, "model-00002-of-00002.safetensors": 40_000_000_000}}}}
    (tmp_path / "spark.lock.json").write_text(json.dumps(lock))
    monkeypatch.setenv("SPARKSTACK_LOCK_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["plan", "--group", "spark"])
    assert "the 100 GB the lock records for rdtand/Qwen3.6-35B-A3B-PrismaQuant-4.75bit-vllm" in result.output, result.output


def test_the_plan_says_where_its_memory_figure_comes_from(profiles):
    spark = make_plan("spark", list(profiles.values()), load_group_settings("spark")).describe()
    assert "128 GB unified memory (assumed offline: a Spark's nominal figure)" in spark
    assert "set sparkstack_unified_memory_gb in group_data/spark.py to your host's figure" in spark
    live = make_plan("spark", list(profiles.values()), load_group_settings("spark"), live_gb=119.7).describe()
    assert "119.7 GB unified memory (the host's MemTotal)" in live and "note: a deploy plans" not in live
    pinned = make_plan("testhost", list(profiles.values()), load_group_settings("testhost"), live_gb=1.9).describe()
    assert "128 GB unified memory (sparkstack_unified_memory_gb; the host's MemTotal reads 1.9 GiB)" in pinned


def small(profile, fraction: float, resident_gb: float):
    """The profile with a smaller memory claim (a small model beside a coder)."""
    return profile.model_copy(update={"memory": profile.memory.model_copy(
        update={"fraction": fraction, "resident_gb": resident_gb, "weights_gb": resident_gb * 0.75})})


def test_a_set_is_checked_as_a_whole_and_fits_when_its_claims_leave_the_floor(profiles):
    settings = GroupSettings(model_sets={"pair": ["qwen36", "mistral4"]}, os_reserve_gb=8, memory_guard_floor_gb=10)
    plan = make_plan("spark", [profiles["qwen36"], small(profiles["mistral4"], 0.2, 20)], settings)
    [pair] = plan.sets
    assert pair.fits and pair.claim_gb == 67 + 25.6
    assert "FITS     set pair: qwen36 67 GB + mistral4 25.6 GB + reserve 8 GB = 100.6 GB of 128 GB" in plan.describe()


def test_a_set_that_does_not_fit_together_stops_the_plan_with_its_numbers(profiles):
    # Each fits alone (67 and 96 GB claimed); together they need 171 GB of 128.
    settings = GroupSettings(model_sets={"pair": ["qwen36", "mistral4"]})
    with pytest.raises(PlanError) as refused:
        make_plan("spark", [profiles["qwen36"], profiles["mistral4"]], settings)
    text = str(refused.value)
    assert "REFUSED  set pair: qwen36 67 GB + mistral4 96 GB + reserve 8 GB = 171 GB of 128 GB" in text
    assert "below the memory guard's floor" in text and "sparkstack_model_sets" in text


@pytest.mark.parametrize("sets,message", [
    ({"pair": ["qwen36", "gpt4"]}, "sparkstack_model_sets.pair names models this group does not plan: gpt4"),
    ({"qwen": ["qwen36", "mistral4"]}, "the set's name is taken by a model, an alias or llm-switch's own word"),
    ({"none": ["qwen36", "mistral4"]}, "the set's name is taken"),
])
def test_a_set_naming_an_unknown_model_or_taking_a_models_name_is_refused(profiles, sets, message):
    with pytest.raises(PlanError, match=message):
        make_plan("spark", [profiles["qwen36"], small(profiles["mistral4"], 0.2, 20)], GroupSettings(model_sets=sets))


def test_a_set_of_one_model_or_the_same_model_twice_is_refused_by_the_settings():
    from pydantic import ValidationError
    for members in (["qwen36"], ["qwen36", "qwen36"]):
        with pytest.raises(ValidationError, match="a set names two or more different models"):
            GroupSettings(model_sets={"pair": members})
