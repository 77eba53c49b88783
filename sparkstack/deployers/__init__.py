"""pyinfra deployers, one per host component, called in order by `deploy_sparkstack` (deploy.py).

  preflight        facts and refusals; nothing changes        sparkstack/deployers/preflight.py
  artifacts        the lock; images and snapshots fetched     sparkstack/deployers/artifacts.py
  engine releases  the pinned images asked what they accept   sparkstack/deployers/engine_releases.py
  models           scripts, units, registry, switch           sparkstack/deployers/models.py
  cluster          the group switch's key, forced command      sparkstack/deployers/cluster.py
  memory guards    the gate, the watchdog, earlyoom            sparkstack/deployers/memory_guards.py
  front door       one endpoint, whatever model is hot         sparkstack/deployers/frontdoor.py

Each is a small `@deploy` in the pyinfra-docker style. The files come from `sparkstack.render`,
the same objects `sparkstack render` writes for review.
"""

from __future__ import annotations

import sys

from pyinfra import host
from pyinfra.api import DeployError

from sparkstack.deployers.artifacts import fetch_snapshots, locked_pins, provision_artifacts
from sparkstack.deployers.cluster import cluster_access, cluster_preflight
from sparkstack.deployers.engine_releases import check_engine_releases
from sparkstack.deployers.frontdoor import frontdoor
from sparkstack.deployers.host_package import host_package
from sparkstack.deployers.memory_guards import memory_guards
from sparkstack.deployers.models import install_files, register_units, remove_retired_models, report_stale_models
from sparkstack.deployers.preflight import (check_api_key, check_secrets_rule, hold_packages, host_group, load_inputs, plan_for_host,
                                            preflight)
from sparkstack.render import RenderError, render


def deploy_sparkstack() -> None:
    """The deploy; a refusal (raised while pyinfra prepares the operations, so before any ran) is said as one,
    without pyinfra's "pyinfra error in FILE line N" prefix, which reads as a crash."""
    try:
        _deploy_sparkstack()
    except DeployError as exc:
        print(f"sparkstack: the deploy was refused before any change:\n{exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def uninstall_sparkstack() -> None:
    """uninstall.py: take back what the deploy put on the host (sparkstack/deployers/uninstall.py)."""
    from sparkstack.deployers.uninstall import uninstall

    try:
        _, settings = load_inputs()
        uninstall(settings)
    except (DeployError, ValueError) as exc:
        print(f"sparkstack: the uninstall was refused before any change:\n{exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def _deploy_sparkstack() -> None:
    loaded, settings = load_inputs()
    live_gb = preflight(settings)
    plan = plan_for_host(loaded, settings, live_gb)
    check_secrets_rule()
    check_api_key(settings)
    hold_packages(settings)
    lock, needed, pins = locked_pins(host_group(), plan.deployable, settings)
    try:
        rendering = render(host_group(), loaded, settings, plan, pins, host.name)
    except RenderError as exc:
        raise DeployError(str(exc)) from None
    cluster_preflight(rendering, settings)
    package_ops = host_package(rendering)
    missing = provision_artifacts(rendering, lock, needed, settings)
    images = {p.name: pins.image(settings.image_for(p.engine, p.image)) for p in plan.deployable}
    check_engine_releases(plan.deployable, settings, images, set(missing.images))
    fetch_snapshots(lock, needed, settings, missing)
    retired_ops = remove_retired_models(rendering)
    unit_ops, registry_op = install_files(rendering)
    register_units(rendering, retired_ops + unit_ops)
    cluster_access(rendering, settings)
    memory_guards(rendering, package_ops)
    frontdoor(rendering, settings, registry_op, package_ops)
    report_stale_models(rendering)
