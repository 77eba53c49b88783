"""The `sparkstack` command: validate, plan and render profiles; drive the test VM; check drift; verify."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from sparkstack.artifacts import UNLOCKED
from sparkstack.cluster import inventory_problems
from sparkstack.groups import (DEPLOYED_GROUPS, TEST_GROUPS, GroupSettingsError, inventory_hosts, known_groups,
                               load_group_settings)
from sparkstack.lockfile import LockError, group_pins, load_lock, lock_path, locked_model_sizes, save_lock
from sparkstack.memory import PlanError, make_plan
from sparkstack.paths import NotARepo, display_path
from sparkstack.profiles import LoadedProfile, ProfileErrors, collect_profile_files, load_profiles
from sparkstack.render import RenderError, claim_output_dir, render

EXIT_INVALID = 2


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def valid_profiles(paths: tuple[Path, ...] = ()) -> list[LoadedProfile]:
    """Load and validate profiles, or print one line per error and exit 2."""
    try:
        return load_profiles(list(paths) or None)
    except ProfileErrors as exc:
        fail(str(exc))


def group_pins_or_exit(group: str, plan_result, settings):
    """The lock's pins for what the plan admits (values without a current entry render as UNLOCKED)."""
    try:
        return group_pins(group, plan_result.deployable, settings)
    except LockError as exc:
        fail(str(exc))


def default_group(target: str) -> str:
    """The group a command means when none is named: the test host's (by its group or its host name), else spark."""
    from sparkstack import testhost

    return "testhost" if target in ("testhost", testhost.HOST_ALIAS) else "spark"


def group_plan(group: str, loaded: list[LoadedProfile]):
    """The group's settings and memory plan, or the reason there is none (exit 2)."""
    try:
        settings = load_group_settings(group)
        profiles = [lp.profile for lp in loaded]
        plan = make_plan(group, profiles, settings, locked=locked_model_sizes(load_lock(group), profiles))
    except (GroupSettingsError, PlanError, LockError) as exc:
        fail(str(exc))
    problems = inventory_problems(group, settings, inventory_hosts(group))
    if problems:
        fail("\n".join(problems))
    return settings, plan


class KitGroup(click.Group):
    """Commands read the checkout you stand in; outside one they say so and exit 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NotARepo as exc:
            fail(f"sparkstack: {exc}")


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparkstack")
def main() -> None:
    """Provision an NVIDIA DGX Spark as a local LLM serving box from YAML model profiles."""


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Validate model profiles (default: group_data/models/). Exit 0 valid, 2 invalid.

    A FILE is checked against the other profiles too (names, aliases, ports, served names), as a deploy would
    check it beside them; only what concerns the FILE is reported."""
    loaded = valid_profiles(paths)
    given = {path.resolve() for path in paths if path.is_file()}
    if given:
        others = [f for f in collect_profile_files(None) if f.resolve() not in given]
        try:
            load_profiles([*others, *paths])  # the FILE last: a clash is reported on it
        except ProfileErrors as exc:
            shown = {display_path(path) for path in given}
            mine = [error for error in exc.errors if error.file in shown]
            if mine:
                fail(str(ProfileErrors(mine)))
    for lp in loaded:
        p = lp.profile
        click.echo(f"ok  {display_path(lp.source)}: {p.name} ({p.engine}, port {p.port}, "
                   f"variants: {', '.join(p.variant_names)})")
    click.echo(f"{len(loaded)} profile(s) valid")


@main.command()
@click.option("--group", "groups", multiple=True, help="Host group to plan (default: every group you deploy to).")
@click.option("--all", "every", is_flag=True, help=f"Also the test groups ({', '.join(TEST_GROUPS)}).")
def plan(groups: tuple[str, ...], every: bool) -> None:
    """Show which profiles fit each group's unified memory, with the numbers."""
    loaded = valid_profiles()
    chosen = groups or [g for g in known_groups() if every or g not in TEST_GROUPS]
    for group in chosen:
        click.echo(group_plan(group, loaded)[1].describe())
    left_out = [] if groups or every else [g for g in known_groups() if g in TEST_GROUPS]
    if left_out:
        click.echo(f"(test groups {', '.join(left_out)} left out: `sparkstack plan --all` or --group NAME shows them)")


@main.command("render")
@click.option("--group", required=True, help="Host group whose files to render (e.g. spark, testhost).")
@click.option("--out", "given", required=True, type=click.Path(file_okay=False),
              help="Directory to write the tree into: empty, or a tree rendered before (replaced whole).")
def render_command(group: str, given: str) -> None:
    """Write the exact files a deploy puts on a host of GROUP, as a tree under OUT."""
    out = Path(given)
    try:
        claim_output_dir(out, given)
    except RenderError as exc:
        fail(str(exc))
    loaded = valid_profiles()
    settings, plan_result = group_plan(group, loaded)
    click.echo(plan_result.describe())
    pinned = group_pins_or_exit(group, plan_result, settings)
    # A group that deploys a cluster model differs per node (rank, addresses): one tree per node.
    per_node = any(p.cluster for p in plan_result.deployable)
    nodes = list(settings.cluster_addresses) if per_node else [None]
    for node in nodes:
        try:
            rendering = render(group, loaded, settings, plan_result, pinned, node)
        except RenderError as exc:
            fail(str(exc))
        target = out / node if node else out
        written = rendering.write_tree(target)
        what = f"node {node!r} of group {group!r}" if node else f"group {group!r}"
        click.echo(f"rendered {len(written)} files for {what} under {display_path(target)}:")
        for path in written:
            click.echo(f"  {display_path(path)}")
        click.echo(f"  {display_path(target / 'MANIFEST')} (modes and owners as deployed)")
    if not pinned.complete:
        click.echo(f"note: {display_path(lock_path(group))} does not pin every image and model; the files mark each "
                   f"such value {UNLOCKED}:<intent>. A deploy refuses them until `sparkstack lock --host HOST` has run.")


@main.command("lock")
@click.option("--host", required=True, help="A host of the group, as ssh reaches it (alias or user@address; `sparkstack-testhost`).")
@click.option("--group", help="The group to lock (default: testhost for the test host, else spark).")
@click.option("--ssh-config", type=click.Path(path_type=Path, dir_okay=False), help="ssh config file for --host.")
@click.option("--upgrade", is_flag=False, flag_value="*", default=None, metavar="[NAME]",
              help="Re-resolve every entry, or only those of profile NAME (default: only unlocked and stale ones).")
def lock_command(host: str, group: str | None, ssh_config: Path | None, upgrade: str | None) -> None:
    """Resolve the group's images to digests and model repos to commits on HOST; write group_data/GROUP.lock.json."""
    from sparkstack import testhost
    from sparkstack.lock_cli import run_lock
    from sparkstack.profiles import find_profile
    from sparkstack.remote import RemoteError

    group = group or default_group(host)
    if ssh_config is None and host == testhost.HOST_ALIAS and testhost.ssh_config_file().is_file():
        ssh_config = testhost.ssh_config_file()
    loaded = valid_profiles()
    settings, plan_result = group_plan(group, loaded)
    deployable = list(plan_result.deployable)

    def profile_of(word: str) -> str:
        found = find_profile([lp for lp in loaded if lp.profile in deployable], word)
        if found is None:
            fail(f"lock: --upgrade {word}: no profile or alias of that name is deployed to group {group!r}")
        return found.name

    try:
        sys.exit(run_lock(host, group, ssh_config, upgrade, deployable, settings, profile_of))
    except (RemoteError, LockError) as exc:
        fail(f"lock: {exc}; the lock file was not changed")


@main.command()
@click.option("--group", default="spark", show_default=True, help="The group whose deployed models the clients get.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The Spark's address as the clients reach it, or HOST:PORT through a forwarded port "
                   "(default: the door's own loopback).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("build/clients"), show_default=True,
              help="Directory for opencode.json, continue/config.yaml, .aider.conf.yml, .aider.model.metadata.json.")
def clients(group: str, host: str, out: Path) -> None:
    """Write client configs (opencode, Continue, Aider) for the front door, and print the settings for others."""
    import os

    from sparkstack.clients import endpoint, settings_text, write_configs

    loaded = valid_profiles()
    settings, plan_result = group_plan(group, loaded)
    key = os.environ.get("SPARKSTACK_FRONTDOOR_API_KEY") if settings.frontdoor_expose else None
    try:
        door = endpoint(list(plan_result.deployable), settings, host, key)
    except ValueError as exc:
        fail(f"clients: group {group!r}: {exc}")
    if host.split(":")[0] not in ("127.0.0.1", "localhost") and not settings.frontdoor_expose:
        click.echo(f"note: group {group!r} keeps the door on the Spark's loopback; from another machine use "
                   f"`ssh -L {settings.frontdoor_port}:127.0.0.1:{settings.frontdoor_port} <spark>` and --host 127.0.0.1, "
                   "or set sparkstack_frontdoor_expose = True (the door then needs SPARKSTACK_FRONTDOOR_API_KEY)",
                   err=True)
    for path in write_configs(door, out):
        click.echo(f"wrote {display_path(path)}")
    click.echo(settings_text(door))


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--limit", help="Only this host group or host (as pyinfra --limit; default: the groups you deploy to, "
                              f"{' and '.join(DEPLOYED_GROUPS)}, never a test host that happens to run).")
@click.option("--sudo", is_flag=True, help="Run the dry run's commands with sudo (for a sudoer, DGX OS's default user).")
@click.option("--uninstalled", is_flag=True, help="Check that nothing of sparkstack is left (a dry run of uninstall.py).")
@click.argument("pyinfra_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- PYINFRA_OPTIONS]")
def drift(limit: str | None, sudo: bool, uninstalled: bool, pyinfra_args: tuple[str, ...]) -> None:
    """Dry-run the deploy: exit 0 nothing would change, 1 something would, 2 cannot tell.

    With --uninstalled, dry-run the uninstall instead: exit 0 is a clean host.
    Options after `--` go to pyinfra as they are (e.g. `-- --user ubuntu --sudo-password ...`)."""
    from sparkstack.drift import EXIT_UNKNOWN, check_drift

    try:
        load_profiles()
    except ProfileErrors as exc:
        fail(f"drift: cannot tell: invalid model profiles:\n{exc}", EXIT_UNKNOWN)
    report = check_drift(limit, extra=(["--sudo"] if sudo else []) + list(pyinfra_args), uninstalled=uninstalled)
    click.echo(report.describe(), err=report.exit_code == EXIT_UNKNOWN)
    sys.exit(report.exit_code)


@main.command("rollback")
@click.argument("model")
@click.option("--limit", required=True, help="The host group or host to deploy the rollback to (as pyinfra --limit).")
@click.option("--group", help="The group whose lock holds the pins (default: testhost for the test host, else spark).")
@click.option("--no-deploy", is_flag=True, help="Only rewrite the lock.")
@click.option("--sudo", is_flag=True, help="Run the deploy's commands with sudo (for a sudoer).")
def rollback_command(model: str, limit: str, group: str | None, no_deploy: bool, sudo: bool) -> None:
    """Return MODEL to the pins its last upgrade replaced, in one deploy that fetches nothing.

    The previous image and snapshot are still on the host (a deploy never deletes one). Run it again to roll
    forward. Afterwards, `sparkstack verify --host HOST` measures the model again; the last run with each image
    is printed here."""
    import subprocess

    from sparkstack.artifacts import intents
    from sparkstack.history import by_image, load_history
    from sparkstack.profiles import find_profile
    from sparkstack.rollback import RollbackError, roll_back
    from sparkstack.verify import default_history_file
    from sparkstack.paths import repo_root

    group = group or default_group(limit)
    loaded = valid_profiles()
    settings, plan_result = group_plan(group, loaded)
    found = find_profile([lp for lp in loaded if lp.profile in plan_result.deployable], model)
    if found is None:
        fail(f"rollback: {model!r}: no profile or alias of that name is deployed to group {group!r}")
    try:
        lock = load_lock(group)
        if lock is None:
            raise RollbackError(f"group {group!r} has no lock yet")
        new_lock, lines = roll_back(lock, intents(list(plan_result.deployable), settings), found.name)
    except (RollbackError, LockError) as exc:
        fail(f"rollback: {exc}; the lock was not changed")
    for line in lines:
        click.echo(f"  {line}")
    click.echo(f"rollback: wrote {display_path(save_lock(new_lock))}")
    if not no_deploy:
        command = [str(Path(sys.executable).with_name("pyinfra")), "-y", "inventory.py", "deploy.py", "--limit", limit,
                   *(["--sudo"] if sudo else [])]
        code = subprocess.run(command, cwd=repo_root()).returncode
        if code:
            sys.exit(code)
    history = load_history(sorted(default_history_file(limit).parent.glob("*.jsonl")))
    compared = by_image(history, found.name)
    if compared:
        click.echo(f"verify's last run of {found.name} with each image (run `sparkstack verify --host HOST` to measure "
                   "this one):")
        for line in compared:
            click.echo(f"  {line}")


@main.command("qualify")
@click.option("--limit", required=True, help="The one host to qualify (as pyinfra --limit).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("build/qualify"), show_default=True,
              help="Where the report goes (qualify-HOST.md and qualify-HOST.json).")
@click.option("--skip", multiple=True, type=click.Choice(["clean-install", "cached-reinstall", "rerun", "resume", "switches",
                                                         "wedge", "rollback", "uninstall", "baseline"]),
              help="Leave a step out (e.g. clean-install on a Spark whose weights take hours to fetch again).")
@click.option("--rollback", "rollback_model", metavar="MODEL",
              help="The model to roll back and forward (its lock must keep previous pins).")
@click.option("--wedge-within", default=900, show_default=True, type=click.IntRange(min=1), metavar="SECONDS",
              help="How long the wedge watch may take to find and restart a frozen model (the group's watch settings "
                   "and the model's load time decide).")
@click.option("--sudo", is_flag=True, help="Run the commands with sudo (for a sudoer).")
def qualify_command(limit: str, out: Path, skip: tuple[str, ...], rollback_model: str | None, wedge_within: int,
                    sudo: bool) -> None:
    """Run the qualification matrix on one host and write its report: clean install, cached reinstall, rerun,
    resume after a killed deploy, switches between every pair, a wedge recovered, rollback, uninstall, and the
    baseline restored. It removes and reinstalls the kit (and with clean-install the images and weights)."""
    from sparkstack.operate import OperateError
    from sparkstack.qualify import Qualify, StepFailed, write_report

    try:
        run = Qualify(limit, sudo, wedge_bound_s=wedge_within)
    except (StepFailed, OperateError) as exc:
        fail(f"qualify: {exc}")
    report = run.run(skip, rollback_model)
    markdown, document = write_report(report, out)
    click.echo(f"qualify: {'qualified' if report.ok else 'NOT qualified'} in {report.seconds:.0f} s; "
               f"wrote {display_path(markdown)} and {display_path(document)}")
    sys.exit(0 if report.ok else 1)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--limit", required=True, help="The host group or host to take sparkstack off (as pyinfra --limit).")
@click.option("--images", is_flag=True, help="Also remove the engine images the host's models use.")
@click.option("--weights", is_flag=True, help="Also remove the weights (the model cache; hours to fetch again).")
@click.option("--secrets", is_flag=True, help="Also remove the secrets file, which holds the owner's tokens.")
@click.option("--sudo", is_flag=True, help="Run the commands with sudo (for a sudoer, DGX OS's default user).")
@click.argument("pyinfra_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- PYINFRA_OPTIONS]")
def uninstall(limit: str, images: bool, weights: bool, secrets: bool, sudo: bool, pyinfra_args: tuple[str, ...]) -> None:
    """Remove everything the deploy put on the hosts: units, scripts, the door, the guard, state and users.

    A deploy brings it all back; without --images and --weights it fetches nothing."""
    import os
    import subprocess

    from sparkstack.deployers.uninstall import WHAT_ENV
    from sparkstack.paths import repo_root

    what = ",".join(name for name, on in (("images", images), ("weights", weights), ("secrets", secrets)) if on)
    command = [str(Path(sys.executable).with_name("pyinfra")), "-y", "inventory.py", "uninstall.py", "--limit", limit,
               *(["--sudo"] if sudo else []), *pyinfra_args]
    sys.exit(subprocess.run(command, cwd=repo_root(), env=os.environ | {WHAT_ENV: what}).returncode)


@main.command("verify")
@click.option("--host", help="Inventory host or ssh alias; verifies the hot model through an ssh tunnel.")
@click.option("--url", help="Base URL of an OpenAI-compatible endpoint, e.g. http://127.0.0.1:30001.")
@click.option("--model", help="Profile name or alias whose expectations apply (default: the hot or served model).")
@click.option("--variant", help="With --url: the variant that runs, whose baseline applies (--host reads it from the host).")
@click.option("--ssh-config", type=click.Path(path_type=Path, dir_okay=False), help="ssh config file for --host.")
@click.option("--runs", default=3, show_default=True, type=click.IntRange(min=1), help="Streaming runs for the decode figure (median).")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(min=2), help="Tokens per streaming run.")
@click.option("--timeout", "read_timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Read timeout per request, seconds.")
@click.option("--regression-share", default=0.8, show_default=True, type=click.FloatRange(0, 1),
              help="Flag a regression below this share of the profile's expected decode tok/s.")
@click.option("--api-key-env", default="SPARKSTACK_API_KEY", show_default=True,
              help="Local environment variable holding the endpoint's API key, if it needs one.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--history", "show_history", is_flag=True,
              help="Print earlier runs (of --host or --url, else of every host) and their regressions, and exit.")
@click.option("--history-file", type=click.Path(path_type=Path, dir_okay=False),
              help="The history to append to or read (JSON lines; default: one file per host).")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False),
              help="With --history: draw tok/s and TTFT per model and variant over time into this PNG (matplotlib).")
def verify_command(host, url, model, variant, ssh_config, runs, max_tokens, read_timeout, regression_share, api_key_env,
                   as_json, show_history, history_file, plot) -> None:
    """Measure the served model directly: readiness, a fixed answer, decode speed, vision, tools.

    Exit 0 all pass, 1 a check failed, 2 an instrument failure (nothing reached the model) or bad usage.
    """
    from sparkstack.verify_cli import run_verify

    sys.exit(run_verify(host, url, model, ssh_config, runs, max_tokens, read_timeout, regression_share,
                        api_key_env, as_json, show_history, history_file, variant, plot))


@main.group(invoke_without_command=True)
@click.pass_context
def engines(ctx) -> None:
    """The engine release snapshots (sparkstack/engines/releases/) and which profile checks against which."""
    if ctx.invoked_subcommand is not None:
        return
    from sparkstack.engines.release import admits, committed_releases
    from sparkstack.profiles import release_findings

    profiles = [lp.profile for lp in valid_profiles()]
    for release in committed_releases():
        checked = [p for p in profiles if p.engine == release.engine and admits(p.engine_version, release.version)]
        parts = []
        for p in checked:
            found = release_findings(p, release)
            parts.append(p.name if not found else f"{p.name} ({len(found)} finding(s))")
        defaults = "defaults recorded" if any(a.default is not None for a in release.actions) else "no defaults recorded"
        click.echo(f"{release.label:<16} {len(release.actions):>4} options, {len(release.env_vars):>4} env vars, "
                   f"{defaults}; checks: {', '.join(parts) or 'no profile admits it'}")
    uncovered = [p.name for p in profiles if not any(admits(p.engine_version, r.version)
                                                     for r in committed_releases(p.engine))]
    if uncovered:
        click.echo(f"no snapshot admitted by: {', '.join(uncovered)} (tools/snapshot_engine.py ENGINE==VERSION)")


@engines.command("diff")
@click.argument("engine")
@click.argument("old")
@click.argument("new")
def engines_diff(engine: str, old: str, new: str) -> None:
    """What changed from release OLD to NEW in the flags and env vars the profiles use (removed, values, defaults)."""
    from sparkstack.engines.diff import diff
    from sparkstack.engines.release import committed_releases

    releases = {r.version: r for r in committed_releases(engine)}
    missing = [v for v in (old, new) if v not in releases]
    if missing:
        fail(f"engines diff: no {engine} snapshot for {', '.join(missing)} (have: {', '.join(releases) or 'none'}); "
             f"make one with `python tools/snapshot_engine.py {engine}=={missing[0]}`")
    for line in diff(releases[old], releases[new], [lp.profile for lp in valid_profiles()]):
        click.echo(line)


def _complete_models(ctx, param, incomplete):
    """Shell completion: the profiles' names and aliases, and the kit's own units for `logs`."""
    try:
        words = [w for lp in load_profiles() for w in (lp.profile.name, *lp.profile.aliases)]
    except (ProfileErrors, NotARepo):
        words = []
    if ctx.command.name == "logs":
        from sparkstack.operate import SERVICE_WORDS
        words += list(SERVICE_WORDS)
    return [w for w in words if w.startswith(incomplete)]


def _complete_groups(ctx, param, incomplete):
    try:
        return [g for g in known_groups() if g.startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the shell
        return []


HOSTS_OPTIONS = [
    click.option("--limit", shell_complete=_complete_groups,
                 help="A group or host of the inventory (as pyinfra --limit; default: the groups you deploy to)."),
    click.option("--sudo", is_flag=True, help="Run the host's commands with sudo (you connect as a sudoer, DGX OS's default)."),
    click.option("--user", help="Connect as this user instead of the inventory's (as pyinfra --user)."),
]


def hosts_options(function):
    for option in reversed(HOSTS_OPTIONS):
        function = option(function)
    return function


def _hosts(limit, sudo, user):
    from sparkstack.operate import Hosts, OperateError
    from sparkstack.paths import repo_root

    try:
        return Hosts(limit, repo_root(), sudo, user)
    except OperateError as exc:
        fail(f"sparkstack: {exc}")


@main.command("status")
@hosts_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per host, as llm-switch reports it.")
def status_command(limit, sudo, user, as_json) -> None:
    """Each Spark's hot model and variant, since when, memory and the guard's floor, the door, the last verify."""
    from sparkstack.operate import describe_status, last_verify_for, parse_status, status_command as command
    from sparkstack.verify import default_history_file

    hosts = _hosts(limit, sudo, user)
    worst = 0
    try:
        for answer in hosts.run(command()):
            if not answer.ok:
                click.echo(f"{answer.host}: could not read its status: {(answer.stderr or answer.stdout).strip()[-400:]}",
                           err=True)
                worst = 1
                continue
            status = parse_status(answer.stdout)
            if as_json:
                click.echo(json.dumps({"host": answer.host, **status}))
            else:
                click.echo(describe_status(answer.host, status, last_verify_for(answer.host, default_history_file(answer.host))))
    finally:
        hosts.close()
    sys.exit(worst)


@main.command("switch")
@hosts_options
@click.argument("target", shell_complete=_complete_models, metavar="MODEL[:VARIANT]")
def switch_command(limit, sudo, user, target) -> None:
    """Make MODEL the hot model on each Spark (llm-switch, with its memory gate), showing its progress."""
    from sparkstack.operate import switch_command as command

    model, _, variant = target.partition(":")
    hosts = _hosts(limit, sudo, user)
    try:
        answers = hosts.run(command(model, variant or None), stream=True)
    finally:
        hosts.close()
    for answer in answers:
        click.echo(f"{answer.host}: {'switched to ' + model if answer.ok else 'the switch failed (see above)'}")
    sys.exit(0 if all(a.ok for a in answers) else 1)


@main.command("stop")
@hosts_options
def stop_command(limit, sudo, user) -> None:
    """Stop whatever model is hot on each Spark (llm-switch none)."""
    from sparkstack.operate import switch_command as command

    hosts = _hosts(limit, sudo, user)
    try:
        answers = hosts.run(command("none", None), stream=True)
    finally:
        hosts.close()
    sys.exit(0 if all(a.ok for a in answers) else 1)


@main.command("logs")
@hosts_options
@click.argument("what", shell_complete=_complete_models, metavar="MODEL|door|guard")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(min=1), help="How many lines.")
def logs_command(limit, sudo, user, what, follow, lines) -> None:
    """A model's unit journal (or the door's, the guard's), without knowing unit or container names."""
    from sparkstack.operate import SERVICE_WORDS, logs_command as command
    from sparkstack.profiles import find_profile

    unit = SERVICE_WORDS.get(what)
    if unit is None:
        profile = find_profile(valid_profiles(), what)
        if profile is None:
            fail(f"logs: {what!r} is no profile name or alias, nor one of {', '.join(SERVICE_WORDS)}")
        unit = profile.unit_name
    hosts = _hosts(limit, sudo, user)
    try:
        answers = hosts.run(command(unit, lines, follow), stream=True)
    except KeyboardInterrupt:
        answers = []
    finally:
        hosts.close()
    sys.exit(0 if all(a.ok for a in answers) else 1)


@main.command("monitoring")
@click.option("--group", default="spark", show_default=True, help="The group whose doors Prometheus scrapes.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("build/monitoring"),
              show_default=True, help="Where prometheus.yml and grafana-dashboard.json go.")
@click.option("--ca-file", help="The door's certificate as Prometheus will read it (TLS doors; default door.crt).")
def monitoring_command(group: str, out: Path, ca_file: str | None) -> None:
    """A Prometheus scrape configuration for the group's doors and a Grafana dashboard of their series."""
    from sparkstack.drift import InventoryProblem, inventory_hosts as hosts_of
    from sparkstack.monitoring import dashboard, scrape_config
    from sparkstack.paths import repo_root

    try:
        settings = load_group_settings(group)
    except GroupSettingsError as exc:
        fail(str(exc))
    try:
        hosts = hosts_of(group, repo_root())
    except InventoryProblem:
        hosts = {}
    out.mkdir(parents=True, exist_ok=True)
    (out / "prometheus.yml").write_text(scrape_config(group, hosts, settings, ca_file), encoding="utf-8")
    (out / "grafana-dashboard.json").write_text(dashboard(group), encoding="utf-8")
    click.echo(f"wrote {out / 'prometheus.yml'} ({len(hosts)} host(s) of group {group!r}) and "
               f"{out / 'grafana-dashboard.json'}")


@main.group("keys")
def keys_group() -> None:
    """The door's client keys (sparkstack_frontdoor_clients), kept on this machine; the hosts hold their digests."""


@keys_group.command("list")
def keys_list() -> None:
    """Each host's client keys on this machine, and where they are."""
    from sparkstack.client_keys import key_path, keys_dir, local_keys

    found = local_keys()
    if not found:
        click.echo(f"no client keys in {keys_dir()} yet: list clients in sparkstack_frontdoor_clients and deploy")
    for host, clients in found.items():
        for client in clients:
            click.echo(f"{host:<24}{client:<16}{key_path(host, client)}")


@keys_group.command("show")
@click.argument("host")
@click.argument("client")
def keys_show(host, client) -> None:
    """Print CLIENT's key for HOST (to give to that client: its Authorization: Bearer)."""
    from sparkstack.client_keys import ClientKeyError, key_path, read_key

    try:
        key = read_key(host, client)
    except ClientKeyError as exc:
        fail(f"keys: {exc}")
    if key is None:
        fail(f"keys: no key for {client!r} on {host!r} at {key_path(host, client)}; list the client in "
             "sparkstack_frontdoor_clients and deploy, which makes it")
    click.echo(key)


NODE_OPTION = click.option("--node", type=click.IntRange(1, 4), default=1, show_default=True,
                           help="Which node: 1 is the main one (the `testhost` group, a cluster's head).")


def _testhost_driver(driver: str | None) -> None:
    if driver:
        os.environ["SPARKSTACK_TESTHOST_DRIVER"] = driver


def _node_instance(node: int) -> str:
    return "" if node == 1 else str(node)


@main.group()
def testhost() -> None:
    """Test hosts: real Debian 12 systemd hosts with sshd and docker, reached by ssh like a Spark.

    The container driver (default) runs one systemd container per node at native speed; the vm driver boots
    the QEMU VM (TCG). SPARKSTACK_TESTHOST_DRIVER or --driver picks; the driver of the last `up` is remembered.
    """


DRIVER_OPTION = click.option("--driver", type=click.Choice(["container", "vm"]), default=None,
                             help="container (default) or vm; default: the driver of the last `up`.")


@testhost.command("up")
@DRIVER_OPTION
@click.option("--nodes", type=click.IntRange(1, 4), default=1, show_default=True,
              help="How many nodes (the container driver runs up to 4, the vm driver 2).")
@click.option("--release", type=click.Choice(["bookworm", "trixie"]), default=None,
              help="The container driver's Debian release (default bookworm, or SPARKSTACK_TESTHOST_RELEASE).")
@click.option("--fresh", is_flag=True, help="Replace running nodes with fresh ones.")
def testhost_up(driver: str | None, nodes: int, release: str | None, fresh: bool) -> None:
    """Build the image (once, cached) and start NODES nodes; print each one's ssh target."""
    from sparkstack import testhost as th

    os.environ["SPARKSTACK_TESTHOST_DRIVER"] = driver or th.driver_name()
    if release:
        os.environ["SPARKSTACK_TESTHOST_RELEASE"] = release
    try:
        for instance in th.instances(nodes):
            info = th.up(fresh=fresh, instance=instance)
            click.echo(f"{info['host']} (ssh -F {info['ssh_config']} {info['host']}) link {info['link_address']} "
                       f"system {info.get('system_state')}")
    except th.TestHostError as exc:
        fail(f"testhost: {exc}")


@testhost.command("down")
@DRIVER_OPTION
@click.option("--nodes", type=click.IntRange(1, 4), default=4, show_default=True, help="Stop nodes 1..NODES.")
def testhost_down(driver: str | None, nodes: int) -> None:
    """Stop the nodes that `up` started."""
    from sparkstack import testhost as th

    _testhost_driver(driver)
    stopped = [th.alias(i) for i in th.instances(min(nodes, th.max_nodes())) if th.down(i)]
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "not running")


@testhost.command("status")
@DRIVER_OPTION
@NODE_OPTION
@click.option("--json", "as_json", is_flag=True)
def testhost_status(driver: str | None, node: int, as_json: bool) -> None:
    """Whether a node runs, where, and its systemd state."""
    import json

    from sparkstack import testhost as th

    _testhost_driver(driver)
    info = th.status(_node_instance(node))
    if as_json:
        click.echo(json.dumps(info))
    elif info["running"]:
        click.echo(f"running ({info['driver']}): {info['host']}, ssh -F {info['ssh_config']}, system {info['system_state']}")
    else:
        click.echo(f"not running ({info['driver']}; image {'cached' if info['image_cached'] else 'not built yet'}: "
                   f"{info['image']})")
        sys.exit(1)


@testhost.command("ssh-config")
@DRIVER_OPTION
@NODE_OPTION
def testhost_ssh_config(driver: str | None, node: int) -> None:
    """Print an ssh_config block for a running node (for ssh, testinfra and friends)."""
    from sparkstack import testhost as th

    _testhost_driver(driver)
    instance = _node_instance(node)
    if th.inventory_entry(instance) is None:
        fail("testhost: not running; start it with `sparkstack testhost up`", 1)
    click.echo(th.ssh_config_file(instance).read_text(), nl=False)


@testhost.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@DRIVER_OPTION
@NODE_OPTION
def testhost_ssh(command: tuple[str, ...], driver: str | None, node: int) -> None:
    """Run COMMAND on a node over ssh; exits with its exit code."""
    import subprocess

    from sparkstack import testhost as th

    _testhost_driver(driver)
    instance = _node_instance(node)
    if th.inventory_entry(instance) is None:
        fail("testhost: not running; start it with `sparkstack testhost up`", 1)
    sys.exit(subprocess.call(th.ssh_command(instance) + list(command)))


@main.group(invoke_without_command=False)
def testvm() -> None:
    """The test host's vm driver: `sparkstack testhost ... --driver vm` (the QEMU VM under TCG)."""
    os.environ["SPARKSTACK_TESTHOST_DRIVER"] = "vm"


@testvm.command("up")
@click.option("--fresh", is_flag=True, help="Stop a running VM and boot a fresh one.")
@click.option("--worker", is_flag=True, help="The second VM (node 2), joined to the main one by a private link.")
@click.pass_context
def testvm_up(ctx, fresh: bool, worker: bool) -> None:
    """Build (once, cached) and boot the VM; print its ssh target."""
    from sparkstack import testhost as th

    try:
        info = th.up(fresh=fresh, instance=th.WORKER if worker else th.MAIN)
    except th.TestHostError as exc:
        fail(f"testvm: {exc}")
    click.echo(f"{info['host']} (ssh -F {info['ssh_config']} {info['host']}) system {info.get('system_state')}")


@testvm.command("down")
@click.option("--worker", is_flag=True, help="The second VM (node 2).")
def testvm_down(worker: bool) -> None:
    """Stop the VM that `up` started."""
    from sparkstack import testhost as th

    click.echo("stopped" if th.down(th.WORKER if worker else th.MAIN) else "not running")


testvm.add_command(testhost_status, "status")
testvm.add_command(testhost_ssh_config, "ssh-config")
testvm.add_command(testhost_ssh, "ssh")


if __name__ == "__main__":
    main()
