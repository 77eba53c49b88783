"""Day-2 operations from the laptop: status, switch, stop and logs on the inventory's Sparks.

They run over the connection pyinfra itself makes for a deploy: the same inventory.py, the same ssh settings
(aliases from ~/.ssh/config, users, keys, ports), and --sudo as in `pyinfra ... --sudo`, for an owner who
connects as a sudoer (DGX OS's default user) rather than as root. What runs on the host is the host's own
tooling: `llm-switch` (status, a switch, none) and `journalctl` for a unit the laptop names from the profiles,
so nobody needs to know unit or container names.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from sparkstack.drift import InventoryProblem, inventory_hosts
from sparkstack.render import FRONTDOOR_UNIT, MEMORY_GUARD_UNIT
from sparkstack_host.contract import FRONTDOOR_PATH, REGISTRY_PATH, SWITCH_PATH

# `logs` takes a model (name or alias) or one of these words for the kit's own units.
SERVICE_WORDS = {"door": FRONTDOOR_UNIT, "guard": MEMORY_GUARD_UNIT}


class OperateError(Exception):
    pass


@dataclass
class Answer:
    host: str
    ok: bool
    stdout: str
    stderr: str


class Hosts:
    """The inventory hosts a --limit names, connected as pyinfra connects them for a deploy."""

    def __init__(self, limit: str | None, cwd: Path, sudo: bool, user: str | None = None):
        from pyinfra.api import Config, Inventory, State
        from pyinfra.api.output import set_echo

        # pyinfra's own log lines (a host key it has not seen) are not this command's output; failures are reported.
        logging.getLogger("pyinfra").setLevel(logging.ERROR)

        # pyinfra prints a streamed command's lines through its echo, which does nothing until set (its CLI sets it).
        # The host's lines are the command's output (journal lines to pipe into grep): stdout, whichever stream.
        set_echo(lambda message=None, **_: print(message, flush=True))

        try:
            found = inventory_hosts(limit, cwd)
        except InventoryProblem as exc:
            raise OperateError(str(exc)) from None
        if not found:
            raise OperateError(f"no inventory host matches {limit!r}" if limit else
                               "no Spark in the inventory: set SPARKSTACK_SPARK_HOSTS (see inventory.py), or name a "
                               "test host with --limit testhost")
        self.names = list(found)
        self.sudo = sudo
        # The hosts as inventory.py gives them to pyinfra; --user overrides the ssh user, as pyinfra's --user does.
        inventory = Inventory((list(found.items()), {}), override_data={"ssh_user": user} if user else None)
        self.state = State(inventory, Config(SUDO=sudo))
        self.hosts = [inventory.get_host(name) for name in self.names]

    def run(self, command: str, stream: bool = False) -> list[Answer]:
        """`command` on each host in turn; with `stream`, its lines printed as they come (a switch's progress)."""
        from pyinfra.api.command import StringCommand

        answers = []
        for host in self.hosts:
            if not host.connected:
                host.connect(show_errors=False)
            if not host.connected:
                answers.append(Answer(host.name, False, "", "could not connect (see `pyinfra inventory.py debug-inventory`)"))
                continue
            ok, output = host.run_shell_command(StringCommand(command), _sudo=self.sudo, print_output=stream,
                                                print_input=False)
            answers.append(Answer(host.name, ok, output.stdout, output.stderr))
        return answers

    def close(self) -> None:
        for host in self.hosts:
            if host.connected:
                host.disconnect()


def status_command() -> str:
    """One round trip: llm-switch's status, the door's unit and address (from the registry, which any user may read),
    and the door's usage per client key (its database is readable by anyone; it holds no key)."""
    door = shlex.quote(FRONTDOOR_UNIT)
    return (f"{SWITCH_PATH} status --json; echo '--- door'; systemctl is-active {door} || true; "
            f"python3 -c 'import json,sys; d=json.load(open(sys.argv[1])).get(\"frontdoor\") or {{}}; "
            f"print(json.dumps({{\"bind\": d.get(\"bind\"), \"port\": d.get(\"port\")}}))' {shlex.quote(REGISTRY_PATH)}; "
            f"echo '--- usage'; {FRONTDOOR_PATH} usage --json 2>/dev/null || echo null")


def parse_status(stdout: str) -> dict:
    switch, _, rest = stdout.partition("--- door")
    door, _, usage = rest.partition("--- usage")
    status = json.loads(switch)
    lines = [line for line in door.strip().splitlines() if line.strip()]
    status["door"] = {"state": lines[0] if lines else "unknown", **(json.loads(lines[1]) if len(lines) > 1 else {})}
    try:
        status["usage"] = json.loads(usage) if usage.strip() else None
    except ValueError:
        status["usage"] = None
    return status


def _since(seconds) -> str:
    if seconds is None:
        return "?"
    minutes = int(seconds) // 60
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {int(seconds) % 60} s"


def describe_status(host: str, status: dict, last_verify: dict | None) -> str:
    lines = [f"{host}:"]
    hot = status.get("hot")
    models = {m["name"]: m for m in status.get("models", [])}
    if hot == "CONFLICT":
        lines.append(f"  hot: CONFLICT, more than one model runs: {', '.join(status.get('hot_models', []))}")
    elif hot:
        if hot in (status.get("sets") or {}):
            lines.append(f"  hot: set {hot}")
        for name in status.get("hot_models") or [hot]:
            m = models[name]
            state = "ready" if m.get("ready") else f"loading ({m.get('readiness')})"
            lines.append(f"  {'hot: ' if name == hot else '  '}{name} (variant {m.get('variant')}), {state}, "
                         f"up {_since(m.get('uptime_s'))}" + (", started from an older config" if m.get("config") == "stale" else ""))
    else:
        failed = [n for n, m in models.items() if m.get("unit_state") == "failed"]
        lines.append("  hot: none" + (f" (failed: {', '.join(failed)})" if failed else ""))
    memory = status.get("memory", {})
    guard = status.get("memory_guard") or {}
    floor = guard.get("floor_gb")
    lines.append(f"  memory: {memory.get('available_gb')} GB available of {memory.get('total_gb')} GB"
                 + (f"; the guard stops the hot model below {floor:g} GB" if isinstance(floor, (int, float)) else ""))
    action = guard.get("last_action")
    if action:
        lines.append(f"  guard's last action: {action if isinstance(action, str) else json.dumps(action)}")
    door = status.get("door", {})
    lines.append(f"  door: {door.get('state')} on {door.get('bind')}:{door.get('port')}")
    if status.get("cluster"):
        c = status["cluster"]
        lines.append(f"  lent to cluster model {c['model']} (rank {c['rank']}; head {c['head']})")
    for client, used in (status.get("usage") or {}).items():
        lines.append(f"  client {client}: {used['requests']} requests, {used['prompt_tokens']} prompt + "
                     f"{used['completion_tokens']} completion tokens, {used['errors']} errors")
    if last_verify:
        lines.append(f"  last verify: {last_verify}")
    return "\n".join(lines)


def last_verify_for(host: str, history: Path) -> str | None:
    """The newest run in the laptop's verify history that measured this host."""
    if not history.is_file():
        return None
    last = None
    for line in history.read_text(encoding="utf-8").splitlines():
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if run.get("host") == host or str(run.get("url", "")).startswith(host):
            last = run
    if last is None:
        return None
    results = ", ".join(f"{name} {status}" for name, status in (last.get("results") or {}).items())
    tok = f", {last['decode_tok_s']:.1f} tok/s" if last.get("decode_tok_s") else ""
    return f"{last.get('time', '?')} {last.get('model') or '?'} ({last.get('variant') or '?'}){tok}: {results}"


def switch_command(model: str, variant: str | None) -> str:
    command = f"{SWITCH_PATH} {shlex.quote(model)}"
    return command + (f" --variant {shlex.quote(variant)}" if variant else "")


def logs_command(unit: str, lines: int, follow: bool) -> str:
    return f"journalctl --no-pager --output=short-iso -u {shlex.quote(unit)} -n {int(lines)}" + (" -f" if follow else "")
