"""Memory plan: which profiles fit a host's unified memory, with the numbers.

The engine's claim is what it will take: the memory fraction its launch script passes it
(vLLM's --gpu-memory-utilization, SGLang's --mem-fraction-static) times unified memory, or
what the profile says it holds once loaded (resident_gb, else the weights), whichever is
larger; the largest over the profile's variants. A profile fits a host when
  * the claim plus the OS reserve leaves at least the memory guard's floor available
    (sparkstack_memory_guard_floor_gb: a model the guard would stop does not fit), and
  * for every variant, memory fraction x unified memory covers the weights
    (the engine must be allowed to hold at least the weights).
A profile that does not fit is refused, with the figures and the number of
hosts it would need, and is never deployed. Where the fraction's figure and resident_gb
disagree by more than CLAIM_DISAGREEMENT, the plan says so: one of them is wrong.

A set of models that run together (sparkstack_model_sets) fits when each member fits alone and every
member's claim plus one OS reserve still leaves the guard's floor available; a set that does not fit stops
the deploy, with the figures (the owner declared it, as with sparkstack_models).

A cluster profile (`cluster:` in its YAML) is placed on a cluster group of at least its
tensor x pipeline nodes; each node holds its share of the weights and of the resident memory
and keeps its own OS reserve, and the checks above apply to that share on every node.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from sparkstack.groups import GroupSettings
from sparkstack.profiles import Profile


@dataclass(frozen=True)
class Claim:
    """What the engine takes on one node, and the two figures it is the larger of."""

    fraction: float  # the largest memory fraction among the variants
    told_gb: float  # fraction x unified memory: what the launch script lets the engine take
    resident_gb: float  # what the profile says one node holds once loaded (its share, on a cluster)

    @property
    def gb(self) -> float:
        return max(self.told_gb, self.resident_gb)

    def describe(self, host_gb: float, resident_declared: bool) -> str:
        told = f"{self.fraction:g} x {_gb(host_gb)} = {_gb(self.told_gb)}"
        held = "resident" if resident_declared else "weights"
        if self.told_gb >= self.resident_gb:
            return f"claim {_gb(self.gb)} ({told} >= {held} {_gb(self.resident_gb)})"
        return f"claim {_gb(self.gb)} ({held} {_gb(self.resident_gb)} > {told})"

    def disagreement(self) -> float:
        return abs(self.told_gb - self.resident_gb) / self.resident_gb


@dataclass(frozen=True)
class Fit:
    profile: Profile
    host_gb: float
    reserve_gb: float
    problems: list[str] = field(default_factory=list)
    nodes: int = 1  # the nodes the profile is spread over (its cluster's tensor x pipeline)
    floor_gb: float = 0.0  # the memory guard's floor: what must stay available with the model loaded
    claim: Claim | None = None

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def min_hosts(self) -> int:
        """Hosts of this size the weights need, each keeping its OS reserve (at least the declared cluster)."""
        usable = self.host_gb - self.reserve_gb
        smallest_fraction = min(self.profile.resolve(v).memory_fraction for v in self.profile.variant_names)
        per_host = min(usable, smallest_fraction * self.host_gb)
        by_memory = max(1, math.ceil(self.profile.memory.weights_gb / per_host)) if per_host > 0 else 0
        declared = self.profile.cluster.nodes if self.profile.cluster else 1
        return max(by_memory, declared)

    @property
    def claim_gb(self) -> float:
        return self.claim.gb if self.claim else node_share(self.profile, self.nodes)

    @property
    def notes(self) -> list[str]:
        """Where the two figures behind the claim disagree enough that one of them is probably wrong."""
        c = self.claim
        if c is None or self.profile.memory.resident_gb is None or c.disagreement() <= CLAIM_DISAGREEMENT:
            return []
        if c.told_gb > c.resident_gb:
            fits_resident = math.floor(c.resident_gb / self.host_gb * 100) / 100
            return [f"memory.fraction {c.fraction:g} lets the engine take {_gb(c.told_gb)}, {_gb(round(c.told_gb - c.resident_gb, 2))} "
                    f"more than memory.resident_gb {_gb(c.resident_gb)}; the plan counts {_gb(c.gb)} (a fraction of "
                    f"about {fits_resident:g} matches resident_gb)"]
        return [f"memory.resident_gb {_gb(c.resident_gb)} is {_gb(round(c.resident_gb - c.told_gb, 2))} more than "
                f"memory.fraction {c.fraction:g} lets the engine take ({_gb(c.told_gb)}); the plan counts {_gb(c.gb)}"]

    def describe(self) -> str:
        p = self.profile
        need = round(self.claim_gb + self.reserve_gb, 2)
        per = "" if self.nodes == 1 else f" per node of {self.nodes}"
        claim = self.claim.describe(self.host_gb, p.memory.resident_gb is not None) if self.claim else \
            f"resident {_gb(self.claim_gb)}"
        head = (f"{p.name:<10} {p.engine:<6} weights {_gb(_share(p.memory.weights_gb, self.nodes))}{per}  "
                f"{claim} + reserve {_gb(self.reserve_gb)} = {_gb(need)} of {_gb(self.host_gb)}")
        if self.fits:
            where = "" if self.nodes == 1 else f"; placed on {self.nodes} nodes, {self.profile.cluster.backend} multi-node"
            lines = [f"FITS     {head}  (headroom {_gb(round(self.host_gb - need, 2))} >= guard floor "
                     f"{_gb(self.floor_gb)}{where})"]
            lines += [f"         note: {note}" for note in self.notes]
            return "\n".join(lines)
        lines = [f"REFUSED  {head}"]
        lines += [f"         - {problem}" for problem in self.problems]
        if self.min_hosts > 1:
            lines.append(f"         - needs at least {self.min_hosts} hosts of {_gb(self.host_gb)}; not deployed")
        else:
            lines.append("         - not deployed")
        return "\n".join(lines)


@dataclass(frozen=True)
class SetFit:
    """A set of models run together on one host: each member's claim, one OS reserve, the guard's floor left."""

    name: str
    members: list[Fit]
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def claim_gb(self) -> float:
        return round(sum(m.claim_gb for m in self.members), 2)

    def describe(self) -> str:
        first = self.members[0]
        need = round(self.claim_gb + first.reserve_gb, 2)
        parts = " + ".join(f"{m.profile.name} {_gb(m.claim_gb)}" for m in self.members)
        head = f"set {self.name}: {parts} + reserve {_gb(first.reserve_gb)} = {_gb(need)} of {_gb(first.host_gb)}"
        if self.fits:
            return (f"FITS     {head}  (headroom {_gb(round(first.host_gb - need, 2))} >= guard floor "
                    f"{_gb(first.floor_gb)})")
        return "\n".join([f"REFUSED  {head}"] + [f"         - {problem}" for problem in self.problems])


def check_set(name: str, members: list[Fit]) -> SetFit:
    problems = [f"{m.profile.name} does not fit alone" for m in members if not m.fits]
    problems += [f"{m.profile.name} is a cluster model; a set runs on one host" for m in members if m.profile.cluster]
    first = members[0]
    left = round(first.host_gb - sum(m.claim_gb for m in members) - first.reserve_gb, 2)
    if left < first.floor_gb:
        problems.append(f"together they leave {_gb(left)} of {_gb(first.host_gb)}, below the memory guard's floor "
                        f"{_gb(first.floor_gb)} (sparkstack_memory_guard_floor_gb)")
    return SetFit(name, members, problems)


@dataclass(frozen=True)
class Plan:
    group: str
    host_gb: float
    reserve_gb: float
    fits: list[Fit]
    # The group names its nodes and interconnect (sparkstack_cluster_addresses): placed cluster profiles deploy.
    cluster_ready: bool = False
    memory_source: str = ""  # where host_gb comes from (a setting, the host, or the assumption offline)
    memory_note: str | None = None
    sets: list[SetFit] = field(default_factory=list)

    @property
    def deployable(self) -> list[Profile]:
        """What a deploy installs on each host of the group: the single-node profiles that fit, and the placed
        cluster profiles when the group names its nodes (each node gets its rank's files)."""
        return [f.profile for f in self.fits if f.fits and (f.profile.cluster is None or self.cluster_ready)]

    @property
    def placed_clusters(self) -> list[Fit]:
        """Cluster profiles that fit the group's nodes."""
        return [f for f in self.fits if f.fits and f.profile.cluster is not None]

    def claim_gb(self, profile: Profile) -> float:
        """What the profile's engine takes on one node (the whole model on a single node): the figure the memory gate
        waits for before a start."""
        return next(f for f in self.fits if f.profile.name == profile.name).claim_gb

    @property
    def refused(self) -> list[Fit]:
        return [f for f in self.fits if not f.fits]

    def describe(self) -> str:
        source = f" ({self.memory_source})" if self.memory_source else ""
        lines = [f"memory plan for group {self.group!r}: {_gb(self.host_gb)} unified memory{source}, "
                 f"OS reserve {_gb(self.reserve_gb)}"]
        lines += ["  " + line for fit in self.fits for line in fit.describe().splitlines()]
        lines += ["  " + line for fit in self.sets for line in fit.describe().splitlines()]
        if self.memory_note:
            lines.append(f"  note: {self.memory_note}")
        if not self.cluster_ready:
            for fit in self.placed_clusters:
                lines.append(f"  note: {fit.profile.name} is placed but not deployed: the group names no nodes "
                             "(set sparkstack_cluster_addresses and sparkstack_cluster_interface)")
        return "\n".join(lines)


class PlanError(Exception):
    pass


def _gb(value: float) -> str:
    return f"{value:g} GB"


def _share(total_gb: float, nodes: int) -> float:
    return round(total_gb / nodes, 2)


def node_share(profile: Profile, nodes: int) -> float:
    """What one of `nodes` nodes holds of the profile once loaded, with what a cluster backend adds on every node."""
    extra = profile.cluster.per_node_extra_gb if profile.cluster else 0.0
    return round(profile.required_memory_gb / nodes + extra, 2)


# How far the fraction's figure and resident_gb may differ (relative to resident_gb) before the plan says so.
CLAIM_DISAGREEMENT = 0.10

# How far below the lock's recorded size a profile's weights_gb may be (the files the engine loads include configs
# and tokenizers; rounding in a profile is fine, a figure from another quantisation is not).
LOCKED_WEIGHTS_MARGIN = 0.10


def claim_of(profile: Profile, host_gb: float, nodes: int) -> Claim:
    fraction = max(profile.resolve(v).memory_fraction for v in profile.variant_names)
    return Claim(fraction, round(fraction * host_gb, 2), node_share(profile, nodes))


def check_fit(profile: Profile, host_gb: float, reserve_gb: float, cluster_nodes: int = 1,
              locked: tuple[str, float] | None = None, *, floor_gb: float) -> Fit:
    """Does the profile fit this group's hosts? A cluster profile is checked per node, on a group of enough nodes.
    `locked` is (repo, GB) of the model's files as the group's lock records them; `floor_gb` is the memory guard's
    floor, what must stay available with the model loaded."""
    problems = []
    if locked and profile.memory.weights_gb < locked[1] * (1 - LOCKED_WEIGHTS_MARGIN):
        problems.append(f"memory.weights_gb {_gb(profile.memory.weights_gb)} is more than "
                        f"{LOCKED_WEIGHTS_MARGIN:.0%} below the {_gb(round(locked[1], 2))} the lock records for "
                        f"{locked[0]}; set memory.weights_gb to at least {_gb(round(locked[1], 1))}")
    nodes = profile.cluster.nodes if profile.cluster else 1
    if nodes > cluster_nodes:
        c = profile.cluster
        problems.append(f"cluster: tensor_parallel {c.tensor_parallel} x pipeline_parallel {c.pipeline_parallel} = "
                        f"{nodes} nodes, but this group has {cluster_nodes} (sparkstack_cluster_nodes)")
    # On too few nodes the figures are those of the nodes there are, so the numbers show why.
    nodes = min(nodes, cluster_nodes)
    per = "" if nodes == 1 else f" per node of {nodes}"
    claim = claim_of(profile, host_gb, nodes)
    weights = _share(profile.memory.weights_gb, nodes)
    need = round(claim.gb + reserve_gb, 2)
    left = round(host_gb - need, 2)
    if need > host_gb:
        problems.append(f"{claim.describe(host_gb, profile.memory.resident_gb is not None)}{per} + OS reserve "
                        f"{_gb(reserve_gb)} = {_gb(need)} exceeds {_gb(host_gb)} of unified memory")
    elif left < floor_gb:
        problems.append(f"{claim.describe(host_gb, profile.memory.resident_gb is not None)}{per} + OS reserve "
                        f"{_gb(reserve_gb)} = {_gb(need)} leaves {_gb(left)} of {_gb(host_gb)}, below the memory "
                        f"guard's floor of {_gb(floor_gb)} (sparkstack_memory_guard_floor_gb): the guard would stop it")
    if left < floor_gb and claim.told_gb >= claim.resident_gb:
        most = math.floor((host_gb - reserve_gb - floor_gb) / host_gb * 100) / 100
        if most * host_gb >= weights and most > 0:
            problems.append(f"memory.fraction {claim.fraction:g}: at most {most:g} leaves the guard's floor here")
    for variant in profile.variant_names:
        fraction = profile.resolve(variant).memory_fraction
        budget = fraction * host_gb
        if budget < weights:
            label = "" if variant == "default" else f" (variant {variant})"
            problems.append(f"memory fraction {fraction:g} x {_gb(host_gb)} = {_gb(round(budget, 1))} "
                            f"cannot hold {_gb(weights)} of weights{per}{label}")
    return Fit(profile, host_gb, reserve_gb, problems, nodes, floor_gb, claim)


def make_plan(group: str, profiles: list[Profile], settings: GroupSettings, live_gb: float | None = None,
              locked: dict[str, tuple[str, float]] | None = None) -> Plan:
    """Plan a group; raise PlanError when the group pins a profile that is unknown or cannot fit. `locked` maps a
    profile name to its model repo and the GB the group's lock records for it."""
    host_gb = settings.planning_memory_gb(live_gb)
    by_name = {p.name: p for p in profiles}
    if settings.models is not None:
        unknown = [m for m in settings.models if m not in by_name]
        if unknown:
            raise PlanError(f"group {group!r}: sparkstack_models names unknown profiles: {', '.join(unknown)} "
                            f"(known: {', '.join(by_name)})")
        profiles = [by_name[m] for m in settings.models]
    source, note = settings.memory_source(group, live_gb)
    plan = Plan(group, host_gb, settings.os_reserve_gb,
                [check_fit(p, host_gb, settings.os_reserve_gb, settings.cluster_nodes, (locked or {}).get(p.name),
                           floor_gb=settings.memory_guard_floor_gb)
                 for p in profiles],
                cluster_ready=bool(settings.cluster_addresses), memory_source=source, memory_note=note)
    if settings.models is not None and plan.refused:
        raise PlanError(plan.describe() + f"\ngroup {group!r} pins profiles that cannot fit; "
                        "remove them from sparkstack_models or deploy them to a larger cluster")
    if settings.model_sets:
        plan = plan_sets(group, plan, settings)
    return plan


# Words llm-switch takes for itself: no set may be called so.
SWITCH_WORDS = ("none", "status", "serve-request")


def plan_sets(group: str, plan: Plan, settings: GroupSettings) -> Plan:
    """The plan with the group's sets checked as a whole; PlanError naming the set when one is unknown or does
    not fit (the owner declared it, so a deploy without it would not be what they asked for)."""
    fits = {f.profile.name: f for f in plan.fits}
    words = {alias for f in plan.fits for alias in (f.profile.name, *f.profile.aliases)}
    sets = []
    for name, members in settings.model_sets.items():
        where = f"group {group!r}: sparkstack_model_sets.{name}"
        if name in words or name in SWITCH_WORDS:
            raise PlanError(f"{where}: the set's name is taken by a model, an alias or llm-switch's own word; "
                            "name the set otherwise")
        unknown = [m for m in members if m not in fits]
        if unknown:
            raise PlanError(f"{where} names models this group does not plan: {', '.join(unknown)} "
                            f"(planned: {', '.join(fits)})")
        sets.append(check_set(name, [fits[m] for m in members]))
    plan = dataclasses.replace(plan, sets=sets)
    refused = [s for s in sets if not s.fits]
    if refused:
        raise PlanError(plan.describe() + f"\ngroup {group!r}: the set(s) {', '.join(s.name for s in refused)} in "
                        "sparkstack_model_sets cannot run together here; take them out, or lower a member's "
                        "memory.fraction")
    return plan
