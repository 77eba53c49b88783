"""`sparkstack verify`: find what to measure (a URL, or the hot model on a host) and report on it."""

from __future__ import annotations

import json
import os
import shlex
import urllib.parse
from pathlib import Path

import click

from sparkstack import testhost
from sparkstack.profiles import ProfileErrors, find_profile, load_profiles
from sparkstack.remote import RemoteError, Tunnel, ssh_output
from sparkstack.render import REGISTRY_PATH
from sparkstack.verify import (INSTRUMENT, Check, Client, Expectations, Instrument, Report, append_history,
                               default_history_file, history_dir, history_table, run_checks)
from sparkstack_host.contract import VERIFY_HISTORY

EXIT_USAGE = 2


class UsageError(Exception):
    pass


def expectations_from_profiles(word: str | None, served: str | None, variant: str | None = None) -> Expectations | None:
    """What the profile says of the variant that runs. Without --variant, a profile with several variants
    gets no decode baseline: judging the rollback against the default's figure would be wrong."""
    try:
        loaded = load_profiles()
    except ProfileErrors:
        return None
    profile = find_profile(loaded, word) if word else next(
        (lp.profile for lp in loaded if lp.profile.served_model_name == served), None)
    if profile is None:
        return None
    if variant is not None and variant not in profile.variant_names:
        raise UsageError(f"{profile.name} has no variant {variant!r} (variants: {', '.join(profile.variant_names)})")
    known = variant or (profile.variant_names[0] if len(profile.variant_names) == 1 else None)
    resolved = profile.resolve(known or profile.effective_default_variant)
    note = None if known else (f"variant unknown over --url, so no baseline applies; pass --variant "
                               f"({', '.join(profile.variant_names)}) to judge it")
    return Expectations(profile.served_model_name, profile.vision, profile.tools is not None,
                        resolved.expected_decode_tok_s if known else None, profile.name, known, profile.image,
                        profile.engine, profile.engine_version, profile.moe_backend,
                        tokens_per_chunk_max=resolved.max_tokens_per_step if known else None, baseline_note=note)


def served_names(client: Client) -> list[str]:
    """What the endpoint serves. Through the front door (its entries say which model is hot) only the hot
    model counts: the others are cold, and a request for one would be refused or start a switch."""
    try:
        data = client.request("GET", "/v1/models").json().get("data", [])
    except (Instrument, ValueError, AttributeError):
        return []  # the readiness check will say why
    if any(isinstance(m, dict) and "hot" in m for m in data):
        hot = [m.get("id") for m in data if m.get("hot")]
        if not hot:
            raise UsageError("the endpoint is sparkstack's front door and no model is hot behind it; switch one "
                             "(llm-switch NAME on the host) or pass --model NAME")
        return hot
    return [m.get("id") for m in data if isinstance(m, dict)]


def expectations_from_host(host: str, ssh_config: Path | None, word: str | None) -> tuple[Expectations, int]:
    status = json.loads(ssh_output(host, ssh_config, "llm-switch status --json"))
    registry = json.loads(ssh_output(host, ssh_config, f"cat {REGISTRY_PATH}"))
    hot = status.get("hot")
    if hot in (None, "CONFLICT"):
        raise RemoteError(f"no single model is hot on {host} (hot: {hot}); switch one with `llm-switch NAME` first")
    if word and word != hot and word not in registry["models"][hot]["aliases"]:
        raise RemoteError(f"{word!r} is not the hot model on {host} ({hot} is); switch first")
    model = registry["models"][hot]
    variant = next(m["variant"] for m in status["models"] if m["name"] == hot) or model["default_variant"]
    expected = (model.get("expected_decode_tok_s") or {}).get(variant)
    per_step = (model.get("max_tokens_per_step") or {}).get(variant)
    command = json.loads(ssh_output(host, ssh_config, f"docker inspect --format '{{{{json .Config.Cmd}}}}' {model['container']}"))
    return Expectations(model["served_model_name"], model["vision"], model["tools"], expected, hot, variant,
                        model.get("image"), model["engine"], model.get("engine_version"), model.get("moe_backend"),
                        command, tokens_per_chunk_max=per_step, start=(status.get("starts") or {}).get(hot)), model["port"]


def history_host(host: str | None, url: str | None) -> str | None:
    """Whose history a run belongs to: the inventory host, or the URL's host:port."""
    return host or (urllib.parse.urlsplit(url).netloc if url else None)


def show_history(host, url, model, history_file, plot, regression_share) -> int:
    from sparkstack.history import load_history, regressions

    files = [history_file] if history_file else (
        [default_history_file(history_host(host, url))] if host or url else sorted(history_dir().glob("*.jsonl")))
    entries = [e for e in load_history(files) if not model or e.get("model") == model]
    for path in files:
        click.echo(history_table(path))
    found = regressions(entries, regression_share)
    for line in found:
        click.echo(f"REGRESSION {line}")
    if plot:
        try:
            from sparkstack.history import plot_history
        except ImportError:
            click.echo("verify: --plot needs matplotlib: pip install -e '.[plot]'", err=True)
            return EXIT_USAGE
        click.echo(plot_history(entries, plot, regression_share))
    return 0


def record_on_host(host: str, ssh_config: Path | None, line: str) -> None:
    """The run's line appended to the host's copy of its history too, for the door's status page (as root, or
    with sudo -n for a sudoer); a host that refuses it is said, and the run's result stands."""
    command = (f"line={shlex.quote(line)}; dir=$(dirname {VERIFY_HISTORY}); if [ \"$(id -u)\" = 0 ]; then sudo=; "
               f"else sudo='sudo -n'; fi; [ -d \"$dir\" ] && printf '%s\\n' \"$line\" | $sudo tee -a {VERIFY_HISTORY} >/dev/null")
    try:
        ssh_output(host, ssh_config, command)
    except RemoteError as exc:
        click.echo(f"verify: the run was not recorded on {host} for its status page: {exc}", err=True)


def run_verify(host, url, model, ssh_config, runs, max_tokens, read_timeout, regression_share, api_key_env,
               as_json, history, history_file, variant=None, plot=None) -> int:
    if history or plot:
        return show_history(host, url, model, history_file, plot, regression_share)
    history_file = history_file or default_history_file(history_host(host, url))
    how = {"runs": runs, "max_tokens": max_tokens, "regression_share": regression_share,
           "route": "ssh tunnel to the engine's loopback port" if host else f"the URL {url}"}
    if bool(host) == bool(url):
        click.echo("verify: give exactly one of --host HOST or --url URL", err=True)
        return EXIT_USAGE
    api_key = os.environ.get(api_key_env) or None
    if url:
        client = Client(url, api_key, read_timeout)
        names: list[str] = []
        try:
            e = expectations_from_profiles(model, None, variant) if model else None
            if e is None:
                names = served_names(client)
                e = expectations_from_profiles(None, names[0], variant) if names else None
        except UsageError as exc:
            click.echo(f"verify: {exc}", err=True)
            return EXIT_USAGE
        # A --model that names no profile is the served name to measure, never the first one listed.
        e = e or Expectations(model or (names[0] if names else "unknown"), tokens_per_chunk_max=None)
        report = run_checks(client, e, runs, max_tokens, regression_share)
    else:
        if ssh_config is None and host == testhost.HOST_ALIAS and testhost.ssh_config_file().is_file():
            ssh_config = testhost.ssh_config_file()
        try:
            e, port = expectations_from_host(host, ssh_config, model)
            with Tunnel(host, ssh_config, port) as tunnel:
                report = run_checks(Client(tunnel.url, api_key, read_timeout), e, runs, max_tokens, regression_share)
                report.url = f"{host}:127.0.0.1:{port} (via ssh tunnel)"
        except RemoteError as exc:
            click.echo(f"verify: INSTRUMENT: {exc}", err=True)
            # Recorded like every other run that measured nothing.
            failed = Report(f"{host} (via ssh)", Expectations(model or "unknown"), [Check("readiness", INSTRUMENT, "-", str(exc))])
            append_history(failed, history_file, history_host(host, url), how)
            return EXIT_USAGE
    line = append_history(report, history_file, history_host(host, url), how)
    if host:
        record_on_host(host, ssh_config, line)
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.table())
    return report.exit_code
