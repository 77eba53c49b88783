"""The lock: intents from the profiles, refusals of unlocked and stale entries, pins in the rendered files."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from sparkstack.artifacts import intents
from sparkstack.cli import main
from sparkstack.groups import load_group_settings
from sparkstack.lock_cli import pick_digest, repository_of, to_resolve
from sparkstack.lockfile import Lock, LockedImage, LockedRepo, lock_problems, pins
from sparkstack.memory import make_plan
from sparkstack.profiles import load_profiles
from sparkstack.render import render

QWEN = "rdtand/Qwen3.6-35B-A3B-PrismaQuant-4.75bit-vllm"
DRAFT = "z-lab/Qwen3.6-35B-A3B-DFlash"
MISTRAL = "mistralai/Mistral-Small-4-119B-2603-NVFP4"
EAGLE = "mistralai/Mistral-Small-4-119B-2603-eagle"
DIGEST = "sha256:" + "ab" * 32


def spark():
    loaded = load_profiles()
    settings = load_group_settings("spark")
    plan = make_plan("spark", [lp.profile for lp in loaded], settings)
    return loaded, settings, plan, intents(plan.deployable, settings)


def full_lock(needed) -> Lock:
    images = {ref: LockedImage(pinned=f"{repository_of(ref)}@{DIGEST}", size_bytes=20_000_000_000, platform="linux/arm64")
              for ref in needed.images}
    models = {repo: LockedRepo(revision=i.revision, commit=f"{n:040x}", allow=list(i.allow), ignore=list(i.ignore),
                               files={"config.json": 10, "model-00001-of-00002.safetensors": 5_000_000_000})
              for n, (repo, i) in enumerate(sorted(needed.repos.items()), start=1)}
    return Lock(group="spark", images=images, models=models)


def test_intents_are_the_images_models_and_drafts_of_the_admitted_profiles():
    *_, needed = spark()
    assert sorted(needed.repos) == sorted([QWEN, DRAFT, MISTRAL, EAGLE])  # glm51 does not fit one Spark
    assert needed.repos[EAGLE].used_by == ["mistral4"] and needed.repos[EAGLE].revision == "main"
    # what each engine loads: the Mistral repo's second weight format is never fetched
    assert "consolidated*.safetensors" in needed.repos[MISTRAL].ignore
    assert "*.safetensors" in needed.repos[QWEN].allow
    assert set(needed.images) == {"eugr/spark-vllm:latest", "lmsysorg/sglang:nightly-dev-cu13-20260323-999bad5a"}


def test_without_a_lock_every_profile_is_refused_with_the_command():
    *_, needed = spark()
    problems = lock_problems(None, needed, "spark")
    assert [p.split(":")[0] for p in problems] == ["mistral4", "qwen36"]
    assert all("run `sparkstack lock --host HOST`" in p and "group_data/spark.lock.json" in p for p in problems)
    assert f"repo {DRAFT} is not locked" in problems[1] and "image eugr/spark-vllm:latest is not locked" in problems[1]


def test_a_changed_intent_makes_the_entry_stale():
    *_, needed = spark()
    lock = full_lock(needed)
    assert lock_problems(lock, needed, "spark") == []
    entry = lock.models[QWEN]
    stale = lock.model_copy(update={"models": {**lock.models, QWEN: entry.model_copy(update={"revision": "v1.0"})}})
    problems = lock_problems(stale, needed, "spark")
    assert len(problems) == 1 and problems[0].startswith("qwen36: repo " + QWEN + " is locked for revision 'v1.0'")
    assert "(stale)" in problems[0]
    assert QWEN not in pins(stale, needed).revisions  # a stale entry never reaches a rendered file


def test_locked_values_are_what_the_files_run():
    loaded, settings, plan, needed = spark()
    lock = full_lock(needed)
    rendering = render("spark", loaded, settings, plan, pins(lock, needed))
    qwen = next(f.content for f in rendering.files if f.path.endswith("launch-qwen36"))
    assert f"  eugr/spark-vllm@{DIGEST} \\" in qwen
    assert f"--revision {lock.models[QWEN].commit}" in qwen
    assert f'"model":"{DRAFT}","revision":"{lock.models[DRAFT].commit}"' in qwen
    mistral = next(f.content for f in rendering.files if f.path.endswith("launch-mistral4"))
    assert f"--speculative-draft-model-revision {lock.models[EAGLE].commit}" in mistral
    assert "UNLOCKED" not in qwen + mistral
    registry = json.loads(next(f.content for f in rendering.files if f.kind == "registry"))
    snapshots = {s["repo"]: s for s in registry["models"]["qwen36"]["snapshots"]}
    assert snapshots[QWEN]["commit"] == lock.models[QWEN].commit
    assert snapshots[QWEN]["files"] == ["config.json", "model-00001-of-00002.safetensors"]


def test_render_of_the_unlocked_spark_group_marks_every_value_and_invents_nothing(tmp_path):
    result = CliRunner().invoke(main, ["render", "--group", "spark", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "does not pin every image and model" in result.output
    text = "".join(p.read_text() for p in (tmp_path / "usr/local/libexec/sparkstack").glob("launch-*"))
    assert "UNLOCKED:eugr/spark-vllm:latest" in text and "--revision UNLOCKED:main" in text
    assert '"revision":"UNLOCKED:main"' in text and "--speculative-draft-model-revision UNLOCKED:main" in text
    assert not re.search(r"sha256:[0-9a-f]{64}|\b[0-9a-f]{40}\b", text)  # no digest, no commit made up


def test_a_lock_holds_only_digests_and_commits():
    with pytest.raises(ValidationError):
        LockedImage(pinned="eugr/spark-vllm:latest", size_bytes=1, platform="linux/arm64")
    with pytest.raises(ValidationError):
        LockedRepo(revision="main", commit="main", allow=[], ignore=[], files={})


@pytest.mark.parametrize("reference,digests,expected", [
    ("eugr/spark-vllm:latest", [f"eugr/spark-vllm@{DIGEST}"], f"eugr/spark-vllm@{DIGEST}"),
    ("127.0.0.1:5000/sparkstack/standin-engine:latest",
     ["other/name@sha256:" + "cd" * 32, f"127.0.0.1:5000/sparkstack/standin-engine@{DIGEST}"],
     f"127.0.0.1:5000/sparkstack/standin-engine@{DIGEST}"),
    ("127.0.0.1:5000/sparkstack/standin-engine", [f"127.0.0.1:5000/sparkstack/standin-engine@{DIGEST}"],
     f"127.0.0.1:5000/sparkstack/standin-engine@{DIGEST}"),
])
def test_the_digest_docker_recorded_for_the_repository_is_picked(reference, digests, expected):
    assert pick_digest(reference, digests) == expected


def test_upgrade_resolves_everything_or_one_profile_and_otherwise_only_what_is_missing():
    *_, needed = spark()
    lock = full_lock(needed)
    assert to_resolve(lock, needed, None, lambda w: w) == (set(), set())
    images, repos = to_resolve(lock, needed, "qwen36", lambda w: w)
    assert images == {"eugr/spark-vllm:latest"} and repos == {QWEN, DRAFT}
    images, repos = to_resolve(lock, needed, "*", lambda w: w)
    assert len(images) == 2 and len(repos) == 4
    partial = lock.model_copy(update={"models": {k: v for k, v in lock.models.items() if k != EAGLE}})
    assert to_resolve(partial, needed, None, lambda w: w) == (set(), {EAGLE})


def test_vllm_with_the_mistral_load_format_fetches_the_consolidated_files():
    from sparkstack.engines import adapter_for

    profile = next(lp.profile for lp in load_profiles() if lp.profile.name == "qwen36")
    mistral_format = profile.model_copy(update={"extra_args": ["--load-format", "mistral"]})
    allow, ignore = adapter_for("vllm").weight_patterns(mistral_format)
    assert "consolidated*.safetensors" in allow and not ignore


def test_a_second_profile_on_the_same_repo_does_not_make_the_lock_stale():
    loaded, settings, plan, needed = spark()
    lock = full_lock(needed)
    qwen = next(p for p in plan.deployable if p.name == "qwen36")
    twin = qwen.model_copy(update={"name": "tiny", "port": 30005, "aliases": []})
    both = intents(list(plan.deployable) + [twin], settings)
    assert both.repos[QWEN].used_by == ["qwen36", "tiny"]
    assert lock_problems(lock, both, "spark") == []


@pytest.mark.parametrize("name", ["../../../etc/cron.d/owned", "/etc/passwd", "weights/../../x", "a//b", "./config.json",
                                  "dir\\..\\x", "config.json\n", ""])
def test_a_hub_naming_a_file_outside_the_snapshot_is_refused_at_lock_time(name):
    # The attacker runs the hub (or edits the lock): its file list names a path that leaves the snapshot,
    # which the host's fetcher would write or delete.
    from pydantic import ValidationError

    from sparkstack.lockfile import LockedRepo

    with pytest.raises(ValidationError, match="file name"):
        LockedRepo(revision="main", commit="a" * 40, allow=[], ignore=[], files={name: 1, "config.json": 2})
    assert LockedRepo(revision="main", commit="a" * 40, allow=[], ignore=[],
                      files={"config.json": 2, "sub/dir/model.safetensors": 3}).size_bytes == 5


@pytest.mark.parametrize("digests,says", [
    ({"config.json": "md5:0123"}, "neither sha256:<64 hex> nor git-sha1:<40 hex>"),
    ({"config.json": "sha256:" + "a" * 63}, "neither sha256"),
    ({"config.json": "git-sha1:" + "A" * 40}, "neither sha256"),
    ({"other.json": "git-sha1:" + "a" * 40}, "digests name files the lock does not hold: other.json"),
])
def test_a_lock_holds_only_real_hashes_and_only_of_its_files(digests, says):
    from pydantic import ValidationError

    from sparkstack.lockfile import LockedRepo

    with pytest.raises(ValidationError, match=says):
        LockedRepo(revision="main", commit="a" * 40, allow=[], ignore=[], files={"config.json": 2}, digests=digests)
    kept = LockedRepo(revision="main", commit="a" * 40, allow=[], ignore=[], files={"config.json": 2},
                      digests={"config.json": "git-sha1:" + "a" * 40})
    assert kept.digests == {"config.json": "git-sha1:" + "a" * 40}
