"""Memory plan: which profiles fit a host's unified memory, with the numbers.

A profile fits a host when
  * what it holds once loaded plus the OS reserve is within unified memory, and
  * for every variant, memory fraction x unified memory covers the weights
    (the engine must be allowed to hold at least the weights).
A profile that does not fit is refused, with the figures and the number of
hosts it would need, and is never deployed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sparkstack.groups import GroupSettings
from sparkstack.profiles import Profile


@dataclass(frozen=True)
class Fit:
    profile: Profile
    host_gb: float
    reserve_gb: float
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def min_hosts(self) -> int:
        """Hosts of this size the weights need, each keeping its OS reserve."""
        usable = self.host_gb - self.reserve_gb
        smallest_fraction = min(self.profile.resolve(v).memory_fraction for v in self.profile.variant_names)
        per_host = min(usable, smallest_fraction * self.host_gb)
        return max(1, math.ceil(self.profile.memory.weights_gb / per_host)) if per_host > 0 else 0

    def describe(self) -> str:
        p = self.profile
        need = p.required_memory_gb + self.reserve_gb
        head = (f"{p.name:<10} {p.engine:<6} weights {_gb(p.memory.weights_gb):>6}  "
                f"resident {_gb(p.required_memory_gb):>6} + reserve {_gb(self.reserve_gb)} = {_gb(need):>6} "
                f"of {_gb(self.host_gb)}")
        if self.fits:
            return f"FITS     {head}  (headroom {_gb(self.host_gb - need)})"
        lines = [f"REFUSED  {head}"]
        lines += [f"         - {problem}" for problem in self.problems]
        if self.min_hosts > 1:
            lines.append(f"         - needs at least {self.min_hosts} hosts of {_gb(self.host_gb)}; not deployed")
        else:
            lines.append("         - not deployed")
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    group: str
    host_gb: float
    reserve_gb: float
    fits: list[Fit]

    @property
    def deployable(self) -> list[Profile]:
        return [f.profile for f in self.fits if f.fits]

    @property
    def refused(self) -> list[Fit]:
        return [f for f in self.fits if not f.fits]

    def describe(self) -> str:
        lines = [f"memory plan for group {self.group!r}: {_gb(self.host_gb)} unified memory, OS reserve {_gb(self.reserve_gb)}"]
        lines += ["  " + line for fit in self.fits for line in fit.describe().splitlines()]
        return "\n".join(lines)


class PlanError(Exception):
    pass


def _gb(value: float) -> str:
    return f"{value:g} GB"


def check_fit(profile: Profile, host_gb: float, reserve_gb: float) -> Fit:
    problems = []
    need = profile.required_memory_gb + reserve_gb
    if need > host_gb:
        what = "resident memory" if profile.memory.resident_gb else "weights (resident memory not declared)"
        problems.append(f"{what} {_gb(profile.required_memory_gb)} + OS reserve {_gb(reserve_gb)} = "
                        f"{_gb(need)} exceeds {_gb(host_gb)} of unified memory")
    for variant in profile.variant_names:
        fraction = profile.resolve(variant).memory_fraction
        budget = fraction * host_gb
        if budget < profile.memory.weights_gb:
            label = "" if variant == "default" else f" (variant {variant})"
            problems.append(f"memory fraction {fraction:g} x {_gb(host_gb)} = {_gb(round(budget, 1))} "
                            f"cannot hold {_gb(profile.memory.weights_gb)} of weights{label}")
    return Fit(profile, host_gb, reserve_gb, problems)


def make_plan(group: str, profiles: list[Profile], settings: GroupSettings, live_gb: float | None = None) -> Plan:
    """Plan a group; raise PlanError when the group pins a profile that is unknown or cannot fit."""
    host_gb = settings.planning_memory_gb(live_gb)
    by_name = {p.name: p for p in profiles}
    if settings.models is not None:
        unknown = [m for m in settings.models if m not in by_name]
        if unknown:
            raise PlanError(f"group {group!r}: sparkstack_models names unknown profiles: {', '.join(unknown)} "
                            f"(known: {', '.join(by_name)})")
        profiles = [by_name[m] for m in settings.models]
    plan = Plan(group, host_gb, settings.os_reserve_gb, [check_fit(p, host_gb, settings.os_reserve_gb) for p in profiles])
    if settings.models is not None and plan.refused:
        raise PlanError(plan.describe() + f"\ngroup {group!r} pins profiles that cannot fit; "
                        "remove them from sparkstack_models or deploy them to a larger cluster")
    return plan
