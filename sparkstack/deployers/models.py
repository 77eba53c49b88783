"""The models deployer: launch scripts, units, registry and switch; retired units; stale running models.

Model units are installed disabled and never started here: starting a model is llm-switch's job.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindFiles
from pyinfra.facts.server import Command
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from sparkstack.deployers.helpers import put_rendered
from sparkstack.render import LAUNCH_DIR, UNIT_DIR, Rendering, config_hash

@deploy("sparkstack host files")
def install_files(rendering: Rendering) -> tuple[list, object]:
    """Directories, launch scripts, units, registry, switch and secrets file; returns the unit operations and
    the registry's (the front door reads the registry)."""
    for directory in rendering.directories:
        files.directory(name=f"Directory {directory.path}", path=directory.path,
                        user=directory.user, group=directory.group, mode=directory.mode)
    secrets = rendering.secrets_file
    # Created empty when absent; its content is never read, written or shown by the deploy.
    files.file(name=f"Secrets file {secrets.path}", path=secrets.path,
               user=secrets.user, group=secrets.group, mode=secrets.mode, touch=False)
    unit_ops = []
    registry_op = None
    for rendered in rendering.of("models"):
        op = put_rendered(rendered)
        if rendered.kind == "unit":
            unit_ops.append(op)
        elif rendered.kind == "registry":
            registry_op = op
    return unit_ops, registry_op


# Every model unit sparkstack renders starts with this comment (templates/model.service.j2).
MODEL_UNIT_MARK = "^# Rendered by sparkstack from .*[.]ya\\?ml"


@deploy("sparkstack retired models")
def remove_retired_models(rendering: Rendering) -> list:
    """Stop and delete the model units and launch scripts installed on the host but no longer rendered for
    it (profile deleted, unpinned, refused by the plan, or moved to another engine); returns the unit ops."""
    rendered = {f.path for f in rendering.files}
    unit_ops = []
    found = host.get_fact(Command, command=f"grep -l '{MODEL_UNIT_MARK}' {UNIT_DIR}/*.service 2>/dev/null || true")
    for unit_path in sorted(filter(None, (found or "").splitlines())):
        if unit_path in rendered:
            continue
        unit = PurePosixPath(unit_path).name
        systemd.service(name=f"Stop retired {unit}", service=unit, running=False, enabled=False)
        unit_ops.append(files.file(name=f"Remove retired {unit_path}", path=unit_path, present=False))
    for script in sorted(host.get_fact(FindFiles, path=LAUNCH_DIR, fname="launch-*", maxdepth=1) or []):
        if script not in rendered:
            files.file(name=f"Remove retired {script}", path=script, present=False)
    return unit_ops


@deploy("sparkstack running models")
def report_stale_models(rendering: Rendering) -> None:
    """A running model started from an older launch script or unit is drift: the deploy never restarts a
    model, so it shows up as an operation (drift reports it) until `llm-switch NAME` restarts it."""
    expected = {}
    for unit in rendering.units:
        name = PurePosixPath(unit.path).name.split("-", 1)[1].removesuffix(".service")
        script = next(f for f in rendering.files if f.kind == "launch-script" and f.path.endswith(f"/launch-{name}"))
        expected[name] = config_hash(script.content, unit.content)
    running = host.get_fact(Command, command=(
        "docker ps --filter label=io.sparkstack.managed=true --format "
        "'{{.Label \"io.sparkstack.model\"}} {{.Label \"io.sparkstack.config\"}}' 2>/dev/null || true"))
    for line in filter(None, (running or "").splitlines()):
        name, _, stamped = line.partition(" ")
        if name in expected and stamped.strip() != expected[name]:
            server.shell(name=f"Stale: {name} runs an older rendering of its launch script or unit; "
                              f"`llm-switch {name}` restarts it with the deployed one", commands=["true"])


@deploy("sparkstack model units")
def register_units(rendering: Rendering, unit_ops: list) -> None:
    """Reload systemd only when a unit changed; keep every model unit disabled and leave it stopped."""
    if unit_ops:
        systemd.daemon_reload(name="Reload systemd (a model unit changed)", _if=any_changed(*unit_ops))
    for unit in rendering.units:
        name = PurePosixPath(unit.path).name
        systemd.service(name=f"Keep {name} disabled at boot", service=name, running=None, enabled=False)
