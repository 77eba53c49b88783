"""What `sparkstack drift` and `sparkstack plan` check by default, and what they say when there is nothing to check.
Drift against real hosts is the hosts tier's (tests/hosts/test_1_deploy_loop.py)."""

from __future__ import annotations

from click.testing import CliRunner

from sparkstack import drift
from sparkstack.cli import main


def test_without_a_limit_drift_checks_the_groups_you_deploy_to():
    assert drift.limits(None) == ["spark", "cluster"]
    assert drift.limits("testhost,spark-2") == ["testhost", "spark-2"]
    command = drift.pyinfra_command(None, ["--sudo"])
    assert command[command.index("deploy.py") + 1:] == ["--limit", "spark", "--limit", "cluster", "--sudo"]


def test_sudo_and_options_after_the_double_dash_reach_pyinfra(monkeypatch):
    seen = {}

    def check(limit, extra=(), uninstalled=False):
        seen.update(limit=limit, extra=list(extra), uninstalled=uninstalled)
        return drift.DriftReport(drift.EXIT_CLEAN, operations=1, hosts=["spark-1"], uninstalled=uninstalled)
    monkeypatch.setattr(drift, "check_drift", check)
    result = CliRunner().invoke(main, ["drift", "--limit", "spark", "--sudo", "--", "--user", "ubuntu"])
    assert result.exit_code == 0, result.output
    assert seen == {"limit": "spark", "extra": ["--sudo", "--user", "ubuntu"], "uninstalled": False}
    # --uninstalled checks the uninstall's plan instead, and clean reads as a clean host.
    result = CliRunner().invoke(main, ["drift", "--limit", "spark", "--uninstalled"])
    assert seen["uninstalled"] and "clean host: nothing of sparkstack is left on spark-1" in result.output
    assert drift.pyinfra_command("spark", (), "uninstall.py")[7] == "uninstall.py"


def test_an_inventory_with_no_hosts_has_its_whole_guidance_shown(tmp_path):
    (tmp_path / "inventory.py").write_text(
        "import sys\nsys.stderr.write('no hosts configured.\\n  - a real Spark: export X=1\\n  - a test host: up\\n')\n"
        "sys.exit(2)\n")
    report = drift.check_drift(None, cwd=tmp_path)
    assert report.exit_code == drift.EXIT_UNKNOWN
    for line in ("no hosts configured.", "- a real Spark: export X=1", "- a test host: up"):
        assert line in report.describe()


def test_plan_leaves_the_test_groups_out_unless_asked():
    plain = CliRunner().invoke(main, ["plan"])
    assert plain.exit_code == 0, plain.output
    assert "memory plan for group 'spark'" in plain.output and "group 'testhost'" not in plain.output
    assert "test groups testcluster, testhost left out: `sparkstack plan --all`" in plain.output
    every = CliRunner().invoke(main, ["plan", "--all"])
    assert "memory plan for group 'testhost'" in every.output and "left out" not in every.output
