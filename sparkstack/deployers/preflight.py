"""Preflight: is this a host sparkstack can run on, and what may it get? Nothing here changes the host.

Facts only (distribution, architecture, systemd, docker and its nvidia runtime, memory, the
API key's presence, the secrets file's rule); every refusal is a `DeployError` that tells the user what to do.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import DeployError, deploy
from pyinfra.facts.deb import DebPackage
from pyinfra.facts.hardware import Memory
from pyinfra.facts.server import Arch, Command, LinuxDistribution, Which
from pyinfra.operations import server

from sparkstack import baseline

from sparkstack.groups import GroupSettings, GroupSettingsError, settings_from_data
from sparkstack.lockfile import Lock, LockError, load_lock, locked_model_sizes
from sparkstack.memory import Plan, PlanError, make_plan
from sparkstack.paths import NotARepo
from sparkstack.profiles import LoadedProfile, ProfileErrors, load_profiles
from sparkstack.deployers.helpers import secret_is_set, secrets_rule_command
from sparkstack.render import FRONTDOOR_API_KEY_ENV, SECRETS_PATH

SUPPORTED_DISTRIBUTIONS = ("Ubuntu", "Debian")  # DGX OS is Ubuntu-based; the test VM is Debian 12
# A Spark's GB10 is an ARM64 system and the pinned engine images are arm64 builds.
GPU_ARCHITECTURES = ("aarch64",)
CPU_ONLY_ARCHITECTURES = ("aarch64", "x86_64")


def host_group() -> str:
    """The host's sparkstack group, for messages and the plan heading."""
    groups = [g for g in host.groups if g in ("spark", "testhost")]
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
                            ("docker", "install Docker (DGX OS ships it; on Debian 12: apt install docker.io; on Debian 13 "
                                       "also docker-cli, which holds the command there)")):
        if not host.get_fact(Which, command=command):
            raise DeployError(f"{host.name}: `{command}` not found: {advice}")
    if settings.gpus:
        runtimes = host.get_fact(Command, command="docker info --format '{{json .Runtimes}}' 2>/dev/null || true")
        if "nvidia" not in (runtimes or ""):
            raise DeployError(f"{host.name}: docker has no `nvidia` runtime; install and configure the NVIDIA "
                              "Container Toolkit (`nvidia-ctk runtime configure --runtime=docker`), then restart docker")
    check_baseline(settings)
    memory_mb = host.get_fact(Memory)
    if not memory_mb:
        raise DeployError(f"{host.name}: could not read the host's memory (vmstat -s)")
    return memory_mb / 1024


def check_baseline(settings: GroupSettings) -> None:
    """The host's platform against the known-bad list (sparkstack/known_bad.yaml): a match refuses the host before
    anything changes on it, unless the group waives that entry until a date."""
    interfaces = [settings.cluster_interface] if settings.cluster_interface and settings.cluster_addresses else []
    output = host.get_fact(Command, command=baseline.collect_command(interfaces))
    facts = baseline.with_fixture(baseline.parse(str(output)), dict(settings.baseline_fixture))
    refusals, waived = baseline.findings(facts, settings.baseline_waivers)
    for line in waived:
        logger.warning(f"{host.name}: {line}")
    try:
        locked = (load_lock(host_group()) or Lock(group=host_group())).hosts.get(host.name)
    except LockError:
        locked = None  # plan_for_host says what is wrong with the lock
    # What the deploy cannot fix, said where drift reads it (sparkstack/drift.py): a changed kernel, driver, docker...
    for change in baseline.changes(locked, facts) if locked else []:
        logger.warning(f"{host.name}: {baseline.DRIFT_MARK} {change}")
    if refusals:
        raise DeployError(f"{host.name}: the host's platform is known to break models here; nothing was changed:\n  "
                          + "\n  ".join(refusals))


def plan_for_host(loaded: list[LoadedProfile], settings: GroupSettings, live_gb: float) -> Plan:
    profiles = [lp.profile for lp in loaded]
    try:
        locked = locked_model_sizes(load_lock(host_group()), profiles)
        plan = make_plan(host_group(), profiles, settings, live_gb=live_gb, locked=locked)
    except (PlanError, LockError) as exc:
        raise DeployError(str(exc)) from None
    if settings.unified_memory_gb is not None and abs(settings.unified_memory_gb - live_gb) > 0.02 * live_gb:
        logger.warning(f"{host.name}: the plan counts {settings.unified_memory_gb:g} GB (sparkstack_unified_memory_gb); "
                       f"this host's MemTotal reads {live_gb:.1f} GiB")
    for fit in plan.refused:
        logger.warning(f"{host.name}: not deploying {fit.profile.name}:\n{fit.describe()}")
    return plan


def check_secrets_rule() -> None:
    """The secrets file keeps the one rule its readers share (sparkstack_host/secrets.py): that module's own
    source runs on the host, so the rule has one definition. Only line numbers and names come back."""
    found = host.get_fact(Command, command=secrets_rule_command("check", SECRETS_PATH, tolerate_failure=True))
    if found and str(found).strip():
        raise DeployError(f"{host.name}: {SECRETS_PATH} breaks the secrets rule, which systemd and sparkstack "
                          f"read alike: {'; '.join(str(found).strip().splitlines())}. Write each line as NAME=VALUE "
                          "with the value bare, then deploy again")


def check_api_key(settings: GroupSettings) -> None:
    """An exposed endpoint needs its API key in the secrets file; count the line, never read it out."""
    needed = {FRONTDOOR_API_KEY_ENV} if settings.frontdoor_expose else set()
    for env_name in sorted(needed):
        if not secret_is_set(env_name):
            raise DeployError(f"{host.name}: this group exposes its endpoints, so {SECRETS_PATH} must set "
                              f"{env_name}=<key> (root-only file); add it on the host and deploy again")




def hold_packages(settings: GroupSettings) -> None:
    """apt-mark hold of the group's baseline_holds that are installed and not held yet (idempotent)."""
    if not settings.baseline_holds:
        return
    held = set(str(host.get_fact(Command, command="apt-mark showhold") or "").split())
    installed = [p for p in settings.baseline_holds if host.get_fact(DebPackage, package=p)]
    missing = [p for p in settings.baseline_holds if p not in installed]
    if missing:
        logger.warning(f"{host.name}: sparkstack_baseline_holds names packages not installed here: {', '.join(missing)}")
    wanted = [p for p in installed if p not in held]
    if wanted:
        server.shell(name=f"Hold {', '.join(wanted)} (sparkstack_baseline_holds: an update must not move the platform)",
                     commands=[f"apt-mark hold {' '.join(shlex.quote(p) for p in wanted)}"])
