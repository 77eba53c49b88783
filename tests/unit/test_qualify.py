"""The qualification report and the uninstall's options, without a host (the matrix itself runs on a test host:
tests/hosts/test_12_qualify.py)."""

from __future__ import annotations

import json

import pytest

from sparkstack.deployers.uninstall import WHAT_ENV, asked
from sparkstack.qualify import Report, Step, write_report


def test_a_failed_step_fails_the_report_and_a_skipped_one_does_not(tmp_path):
    report = Report("spark-1", "2026-12-05T09:00:00Z", seconds=61.0)
    report.steps = [Step("rerun", True, 8.2, "deploy 8 s, 0 changes"), Step("clean-install", None, 0.0, "skipped (--skip)")]
    assert report.ok
    report.steps.append(Step("wedge", False, 900.0, "qwen36 frozen for 900 s | and not restarted"))
    assert not report.ok
    markdown, document = write_report(report, tmp_path)
    text = markdown.read_text()
    assert "**NOT qualified**" in text and "| clean-install | skipped | 0.0 |" in text
    assert "| wedge | FAIL | 900.0 | qwen36 frozen for 900 s / and not restarted |" in text  # a | cannot break the table
    assert json.loads(document.read_text())["steps"][2] == {"name": "wedge", "ok": False, "seconds": 900.0,
                                                          "detail": "qwen36 frozen for 900 s | and not restarted"}


def test_the_uninstall_takes_only_the_extras_it_knows(monkeypatch):
    monkeypatch.setenv(WHAT_ENV, "images,weights")
    assert asked() == {"images", "weights"}
    monkeypatch.setenv(WHAT_ENV, "images,everything")
    with pytest.raises(ValueError, match="unknown everything"):
        asked()


def test_a_fetch_is_told_by_its_operation_name_within_its_deploy():
    from sparkstack.qualify import fetches

    changed = ["sparkstack artifacts | Pull image 127.0.0.1:5000/x@sha256:" + "ab" * 32 + " (1.0 GB unpacked)",
               "sparkstack artifacts | Fetch org/repo@0123456789ab: 2 file(s), 3 MB",
               "sparkstack host files | Launch-script /usr/local/libexec/sparkstack/launch-qwen36",
               "sparkstack artifacts | Fetch program /usr/local/libexec/sparkstack/sparkstack-fetch"]
    assert fetches(changed) == changed[:2]
