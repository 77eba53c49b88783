"""Rollback in the lock: an upgrade keeps what it replaced, `roll_back` swaps it back (and forward again), and a
rollback that could not run as locked is refused with the reason. The deploy after it, with nothing fetched, runs
on the test hosts (tests/hosts/test_12_qualify.py)."""

from __future__ import annotations

import json

import pytest

from sparkstack.lock_cli import kept_for_rollback
from sparkstack.lockfile import Lock, LockedRepo, load_lock, save_lock
from sparkstack.rollback import RollbackError, roll_back
from tests.unit.test_lockfile import DRAFT, MISTRAL, QWEN, full_lock, spark


def upgraded(lock: Lock, repo: str, commit: str) -> Lock:
    """What `sparkstack lock --upgrade` writes when `repo` moved to `commit`."""
    models = {**lock.models, repo: lock.models[repo].model_copy(update={"commit": commit})}
    return Lock(group=lock.group, images=lock.images, models=models,
                previous_images=kept_for_rollback(lock.images, lock.previous_images, lock.images),
                previous_models=kept_for_rollback(lock.models, lock.previous_models, models))


def test_an_upgrade_keeps_the_pin_it_replaced_and_a_rollback_swaps_it_back_then_forward(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKSTACK_LOCK_DIR", str(tmp_path))
    *_, needed = spark()
    before = full_lock(needed)
    after = upgraded(before, QWEN, "f" * 40)
    assert after.previous_models == {QWEN: before.models[QWEN]}  # only what changed is kept
    back, lines = roll_back(after, needed, "qwen36")
    assert back.models[QWEN] == before.models[QWEN] and back.previous_models[QWEN].commit == "f" * 40
    assert lines == [f"repo {QWEN} -> {before.models[QWEN].commit} (was {'f' * 40})"]
    assert back.models[DRAFT] == before.models[DRAFT] and back.models[MISTRAL] == before.models[MISTRAL]
    forward, _ = roll_back(back, needed, "qwen36")
    assert forward.models == after.models
    # The lock file keeps both, and reads back the same.
    save_lock(back)
    assert load_lock("spark") == back
    assert json.loads((tmp_path / "spark.lock.json").read_text())["previous_models"][QWEN]["size_bytes"] > 0


def test_a_model_with_no_previous_pins_or_a_changed_intent_is_refused_with_the_reason():
    *_, needed = spark()
    lock = full_lock(needed)
    with pytest.raises(RollbackError, match="keeps no previous pins for it; `sparkstack lock --host HOST --upgrade qwen36`"):
        roll_back(lock, needed, "qwen36")
    # The previous pin was locked for another revision than the profile now asks for.
    stale = LockedRepo(**{**lock.models[QWEN].model_dump(), "revision": "v1", "commit": "e" * 40})
    odd = lock.model_copy(update={"previous_models": {QWEN: stale}})
    with pytest.raises(RollbackError, match="locked for revision 'v1', the profile now asks for"):
        roll_back(odd, needed, "qwen36")


def test_a_second_upgrade_keeps_only_the_pin_it_replaced():
    *_, needed = spark()
    first = upgraded(full_lock(needed), QWEN, "1" * 40)
    second = upgraded(first, QWEN, "2" * 40)
    assert second.previous_models[QWEN].commit == "1" * 40
    unchanged = upgraded(second, MISTRAL, second.models[MISTRAL].commit)
    assert unchanged.previous_models == second.previous_models  # nothing moved, nothing replaced
