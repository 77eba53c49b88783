"""pyinfra deploys: preflight facts, host files, model units.

Each stage is a small `@deploy` function in the pyinfra-docker style. The files
come from `sparkstack.render`, the same objects `sparkstack render` writes for
review. Model units are installed disabled and never started here: starting a
model is llm-switch's job.
"""

from __future__ import annotations

from io import StringIO
from pathlib import PurePosixPath

from pyinfra import host, logger
from pyinfra.api import DeployError, deploy
from pyinfra.facts.files import FindFiles
from pyinfra.facts.hardware import Memory
from pyinfra.facts.server import Arch, Command, LinuxDistribution, Which
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from sparkstack.engines import API_KEY_ENV
from sparkstack.engines.host import EngineProbe, read_answer
from sparkstack.engines.release import admits
from sparkstack.groups import GroupSettings, GroupSettingsError, settings_from_data
from sparkstack.memory import Plan, PlanError, make_plan
from sparkstack.profiles import LoadedProfile, Profile, ProfileErrors, load_profiles, release_findings
from sparkstack.memory_guards import memory_guards
from sparkstack.paths import NotARepo
from sparkstack.render import GPU_FLAGS, LAUNCH_DIR, SECRETS_PATH, UNIT_DIR, RenderError, Rendering, config_hash, render

SUPPORTED_DISTRIBUTIONS = ("Ubuntu", "Debian")  # DGX OS is Ubuntu-based; the test VM is Debian 12
# A Spark's GB10 is an ARM64 system and the pinned engine images are arm64 builds.
GPU_ARCHITECTURES = ("aarch64",)
CPU_ONLY_ARCHITECTURES = ("aarch64", "x86_64")


def host_group() -> str:
    """The host's sparkstack group, for messages and the plan heading."""
    groups = [g for g in host.groups if g in ("spark", "testvm")]
    return groups[0] if groups else (host.groups[0] if host.groups else "all")


def load_inputs() -> tuple[list[LoadedProfile], GroupSettings]:
    """Validate profiles and group settings before anything touches the host."""
    try:
        loaded = load_profiles()
        settings = settings_from_data(host.data.dict(), f"group data of {host.name}")
    except ProfileErrors as exc:
        raise DeployError(f"invalid model profiles, nothing was changed:\n{exc}") from None
    except GroupSettingsError as exc:
        raise DeployError(f"invalid group settings, nothing was changed:\n{exc}") from None
    except NotARepo as exc:
        raise DeployError(f"{exc}; nothing was changed") from None
    return loaded, settings


@deploy("sparkstack preflight")
def preflight(settings: GroupSettings) -> float:
    """Check the host can run the stack; return its unified memory in GB."""
    distro = host.get_fact(LinuxDistribution)
    if distro.get("name") not in SUPPORTED_DISTRIBUTIONS:
        raise DeployError(f"{host.name}: {distro.get('name')} is not supported; sparkstack targets DGX OS (Ubuntu) "
                          f"and Debian ({', '.join(SUPPORTED_DISTRIBUTIONS)})")
    arch = host.get_fact(Arch)
    allowed = GPU_ARCHITECTURES if settings.gpus else CPU_ONLY_ARCHITECTURES
    if arch not in allowed:
        raise DeployError(f"{host.name}: architecture {arch} is not supported for this group "
                          f"(expected {', '.join(allowed)}; a DGX Spark is aarch64)")
    for command, advice in (("systemctl", "sparkstack needs systemd"),
                            ("docker", "install Docker (DGX OS ships it; on Debian: apt install docker.io)")):
        if not host.get_fact(Which, command=command):
            raise DeployError(f"{host.name}: `{command}` not found: {advice}")
    if settings.gpus:
        runtimes = host.get_fact(Command, command="docker info --format '{{json .Runtimes}}' 2>/dev/null || true")
        if "nvidia" not in (runtimes or ""):
            raise DeployError(f"{host.name}: docker has no `nvidia` runtime; install and configure the NVIDIA "
                              "Container Toolkit (`nvidia-ctk runtime configure --runtime=docker`), then restart docker")
    memory_mb = host.get_fact(Memory)
    if not memory_mb:
        raise DeployError(f"{host.name}: could not read the host's memory (vmstat -s)")
    return memory_mb / 1024


def plan_for_host(loaded: list[LoadedProfile], settings: GroupSettings, live_gb: float) -> Plan:
    try:
        plan = make_plan(host_group(), [lp.profile for lp in loaded], settings, live_gb=live_gb)
    except PlanError as exc:
        raise DeployError(str(exc)) from None
    for fit in plan.refused:
        logger.warning(f"{host.name}: not deploying {fit.profile.name}:\n{fit.describe()}")
    return plan


def check_api_key(settings: GroupSettings) -> None:
    """An exposed endpoint needs its API key in the secrets file; count the line, never read it out."""
    if not settings.expose:
        return
    for env_name in sorted(set(API_KEY_ENV.values())):
        count = host.get_fact(Command, command=f"grep -c '^{env_name}=..*' {SECRETS_PATH} 2>/dev/null || true")
        if str(count).strip() in ("", "0"):
            raise DeployError(f"{host.name}: this group exposes its endpoints, so {SECRETS_PATH} must set "
                              f"{env_name}=<key> (root-only file); add it on the host and deploy again")


@deploy("sparkstack engine releases")
def check_engine_releases(profiles: list[Profile], settings: GroupSettings) -> None:
    """Ask each pinned image which engine release it carries and what it accepts; refuse, before any
    file changes, a release outside the profile's engine_version or anything it would refuse or ignore."""
    problems: list[str] = []
    gpu_flags = tuple(GPU_FLAGS) if settings.gpus else ()
    for profile in profiles:
        image = settings.image_for(profile.engine, profile.image)
        output = host.get_fact(EngineProbe, engine=profile.engine, image=image, gpu_flags=gpu_flags)
        answer = read_answer(profile.engine, image, output)
        if answer.release is None:
            problems.append(f"{profile.name}: {answer.problem}")
            continue
        release = answer.release
        if not admits(profile.engine_version, release.version):
            problems.append(f"{profile.name}: engine_version: image {image} carries {release.label}, but the profile "
                            f"declares {profile.engine_version!r}; declare the release the image carries (and snapshot "
                            "it with tools/snapshot_engine.py) or pin the image that carries the declared one")
            continue
        found = release_findings(profile, release)
        problems += [f"{subject}: {f.where}: {release.label} in image {image} {f.says}" for subject, f in found]
        if not found:
            logger.info(f"{host.name}: {profile.name}: image {image} carries {release.label}; "
                        "it accepts every flag and env var sparkstack renders")
    if problems:
        raise DeployError(f"{host.name}: the engine in the pinned image refuses or ignores what sparkstack would "
                          "render; nothing was changed:\n" + "\n".join(f"  {line}" for line in problems))


@deploy("sparkstack host files")
def install_files(rendering: Rendering) -> list:
    """Directories, launch scripts, units, registry, switch and secrets file; returns the unit operations."""
    for directory in rendering.directories:
        files.directory(name=f"Directory {directory.path}", path=directory.path,
                        user=directory.user, group=directory.group, mode=directory.mode)
    secrets = rendering.secrets_file
    # Created empty when absent; its content is never read, written or shown by the deploy.
    files.file(name=f"Secrets file {secrets.path}", path=secrets.path,
               user=secrets.user, group=secrets.group, mode=secrets.mode, touch=False)
    unit_ops = []
    for rendered in rendering.of("models"):
        op = files.put(name=f"{rendered.kind.capitalize()} {rendered.path}", src=StringIO(rendered.content),
                       dest=rendered.path, user=rendered.user, group=rendered.group, mode=rendered.mode)
        if rendered.kind == "unit":
            unit_ops.append(op)
    return unit_ops


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


def deploy_sparkstack() -> None:
    loaded, settings = load_inputs()
    live_gb = preflight(settings)
    plan = plan_for_host(loaded, settings, live_gb)
    check_api_key(settings)
    check_engine_releases(plan.deployable, settings)
    try:
        rendering = render(host_group(), loaded, settings, plan)
    except RenderError as exc:
        raise DeployError(str(exc)) from None
    retired_ops = remove_retired_models(rendering)
    unit_ops = install_files(rendering)
    register_units(rendering, retired_ops + unit_ops)
    memory_guards(rendering)
    report_stale_models(rendering)
