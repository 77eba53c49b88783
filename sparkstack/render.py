"""Rendering: profiles + group settings -> the exact files a host of that group gets.

`sparkstack render` writes these files into a review tree and `deploy.py` puts
the very same `RenderedFile` objects on the host, so review and deploy cannot
disagree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2

from sparkstack.artifacts import UNLOCKED, Pins, unpinned
from sparkstack.cluster import RAY_CLIENT_PORT, ClusterError, ClusterNode, cluster_node, registry_entry
from sparkstack.engines import API_KEY_ENV, adapter_for, engine_args
from sparkstack.groups import GroupSettings
from sparkstack.memory import Plan
from sparkstack.paths import display_path, files_dir, repo_root, templates_dir
from sparkstack.profiles import LoadedProfile, Profile

from sparkstack_host.contract import (  # noqa: E402 (the host paths: one definition, shared with the host)
    CLUSTER_FENCE_PATH,
    CLUSTER_FENCE_TABLE,
    CLUSTER_FENCE_UNIT,
    CLUSTER_PATH,
    COMPILE_CACHE_MOUNT,
    COMPILE_CACHE_ROOT,
    CONFIG_DIR,
    DOOR_CERT_PATH,
    DOOR_CLIENTS_PATH,
    DOOR_KEY_PATH,
    DOOR_STATE_DIR,
    FETCH_PATH,
    FRONTDOOR_PATH,
    HOST_LIB,
    HUB_PATH,
    LAUNCH_DIR,
    MEMGUARD_PATH,
    RAY_TOKEN_ENV,
    REGISTRY_FORMAT,
    REGISTRY_PATH,
    SECRETS_PATH,
    SWITCH_PATH,
    SWITCH_SOCKET,
    UNIT_DIR,
    USAGE_DB,
)

MEMORY_GUARD_UNIT = "sparkstack-memory-guard.service"
# Debian's and Ubuntu's nftables package puts it here.
NFT_PATH = "/usr/sbin/nft"
EARLYOOM_DROPIN = f"{UNIT_DIR}/earlyoom.service.d/sparkstack.conf"
# earlyoom picks these first: the engine processes that hold the model, by their 15-character process
# names. vLLM names them VLLM::<role> (vllm/utils/system_utils.py set_process_title) and its CLI is
# `vllm`; SGLang names them sglang::<role> (srt/managers/scheduler.py). A bare `python3` is not
# preferred: a user's script must not go before the engine. It spares these (remote access, the container runtime, init, sparkstack's own
# guard and switch, the desktop).
EARLYOOM_PREFER = r"^(vllm|VLLM::.*|sglang::.*)$"
EARLYOOM_AVOID = (r"^(sshd|dockerd|containerd.*|systemd.*|earlyoom|sparkstack-memg.*|llm-switch"
                  r"|Xorg|Xwayland|gnome-shell|gdm.*|sddm.*|plasmashell)$")
# The front door: one endpoint whatever model is hot (files/sparkstack-frontdoor), run as its own user; it
# asks for on-demand switches on a root-owned socket that runs only `llm-switch serve-request`.
FRONTDOOR_UNIT = "sparkstack-frontdoor.service"
FRONTDOOR_USER = "sparkstack-door"
SWITCH_SOCKET_UNIT = "sparkstack-switch-request.socket"
SWITCH_REQUEST_UNIT = "sparkstack-switch-request@.service"
# Set in the secrets file when the group is exposed: the key clients present at the door.
FRONTDOOR_API_KEY_ENV = "SPARKSTACK_FRONTDOOR_API_KEY"
WATCHTOWER_DISABLE_LABEL = "com.centurylinklabs.watchtower.enable=false"
# The docker runtime flags a GPU model container needs on a Spark: all GPUs
# (NVIDIA dgx-spark-playbooks, vllm and sglang READMEs) and the host IPC
# namespace for the engines' shared memory (vLLM Qwen3.5/3.6 recipe).
GPU_FLAGS = ("--gpus all",)
COMMON_RUNTIME_FLAGS = ("--ipc=host",)
# Restart bounds: a crash loop stops after this many starts in the interval.
START_LIMIT_BURST = 3
RESTART_SEC = 10
# TimeoutStartSec beyond the wait for room: `docker rm` of a stray container and the exec of the script.
START_SLACK_S = 120


@dataclass(frozen=True)
class RenderedFile:
    path: str
    content: str
    mode: str
    user: str = "root"
    group: str = "root"
    kind: str = "file"
    component: str = "models"   # the deployer that installs it: models, memory-guards, artifacts


@dataclass(frozen=True)
class Rendering:
    group: str
    files: list[RenderedFile]
    directories: list[RenderedFile]
    secrets_file: RenderedFile
    node: ClusterNode | None = None  # this host's place in a cluster group that deploys a cluster profile

    @property
    def units(self) -> list[RenderedFile]:
        return [f for f in self.files if f.kind == "unit"]

    def of(self, component: str) -> list[RenderedFile]:
        return [f for f in self.files if f.component == component]

    @property
    def registry(self) -> dict:
        """models.json as rendered for this host."""
        return json.loads(next(f for f in self.files if f.kind == "registry").content)

    def write_tree(self, out: Path) -> list[Path]:
        """Write the files under `out` as they would sit on the host, plus a manifest."""
        written = []
        for rendered in self.files:
            target = out / rendered.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rendered.content, encoding="utf-8")
            target.chmod(int(rendered.mode, 8))
            written.append(target)
        manifest = out / "MANIFEST"
        manifest.write_text(self.manifest(), encoding="utf-8")
        return written

    def manifest(self) -> str:
        where = "" if self.node is None else f", node {self.node.name!r} (rank {self.node.rank} of {self.node.nodes})"
        lines = [f"{MANIFEST_HEADER}{self.group!r}{where}: path mode owner:group what"]
        for d in self.directories:
            lines.append(f"{d.path}/ {d.mode} {d.user}:{d.group} directory")
        for f in self.files:
            lines.append(f"{f.path} {f.mode} {f.user}:{f.group} {f.kind}")
        s = self.secrets_file
        touched = ("a cluster head's RAY_AUTH_TOKEN is added if absent, nothing else touched"
                   if self.node is not None and self.node.is_head else "content never touched")
        lines.append(f"{s.path} {s.mode} {s.user}:{s.group} secrets (created empty if absent; {touched})")
        return "\n".join(lines) + "\n"


class RenderError(Exception):
    pass


# The first line of every MANIFEST a render writes: how `render --out` knows a tree it may replace.
MANIFEST_HEADER = "# sparkstack render for group "


def _rendered_before(directory: Path) -> bool:
    """A tree a render wrote: its MANIFEST, or (a cluster group's) one per node directory and nothing else."""
    def marked(path: Path) -> bool:
        try:
            return (path / "MANIFEST").read_text(encoding="utf-8").startswith(MANIFEST_HEADER)
        except OSError:
            return False
    entries = list(directory.iterdir())
    return marked(directory) or bool(entries) and all(e.is_dir() and not e.is_symlink() and marked(e) for e in entries)


def claim_output_dir(out: Path, given: str) -> None:
    """Make `out` ready for a render, or raise RenderError before anything is written: never the filesystem's
    root, the current directory, the checkout or a directory above it, nor a non-empty directory a render did not
    write. A tree rendered before is removed first, so what is left equals what a host gets (no stale files)."""
    import shutil

    resolved = out.resolve()
    checkout = repo_root().resolve()
    if given.strip() in ("", "."):
        raise RenderError(f"--out {given!r}: that is the current directory; give the tree a directory of its own "
                          "(e.g. build/render/GROUP)")
    if resolved == Path(resolved.anchor):
        raise RenderError(f"--out {given!r}: that is the root of this machine's filesystem; the render would write "
                          "units and llm-switch into the live system")
    if resolved == checkout or resolved in checkout.parents:
        raise RenderError(f"--out {given!r}: that is the checkout{'' if resolved == checkout else ' or a directory above it'}; "
                          "give the tree a directory of its own (e.g. build/render/GROUP)")
    if not resolved.exists():
        return
    if not any(resolved.iterdir()):
        return
    if not _rendered_before(resolved):
        raise RenderError(f"--out {given!r}: {display_path(resolved)} is not empty and holds no sparkstack MANIFEST; a "
                          "render writes only into an empty directory or over a tree it rendered before")
    shutil.rmtree(resolved)


def comment_text(text) -> str:
    """Free text for a `#` comment line: control characters (a newline above all) become spaces. Profiles are
    validated to one printable line already; this holds even for a value that skipped validation."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(text))


def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["comment"] = comment_text
    return env


def _arg_lines(args: list[str]) -> list[str]:
    """Group an argument list into readable lines: the command, then one flag (and its value) per line."""
    lines: list[str] = []
    i = 0
    while i < len(args) and not args[i].startswith("--"):
        i += 1
    lines.append(" ".join(shlex.quote(a) for a in args[:i]))
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--") and "=" not in args[i]:
            lines.append(f"{shlex.quote(args[i])} {shlex.quote(args[i + 1])}")
            i += 2
        else:
            lines.append(shlex.quote(args[i]))
            i += 1
    return lines


def config_hash(launch_script: str, unit: str) -> str:
    """What a launch script stamps on its container (`cat SCRIPT UNIT | sha256sum`, first 16 hex)."""
    return hashlib.sha256(launch_script.encode() + unit.encode()).hexdigest()[:16]


def launch_path(profile: Profile) -> str:
    return f"{LAUNCH_DIR}/launch-{profile.name}"


def image_key(image_ref: str) -> str:
    """An engine image's key for its compile caches: the first 16 hex digits of its digest (a pinned reference), else
    of the reference's own hash. A changed image starts a new cache: compiled kernels belong to one build."""
    _, _, digest = image_ref.partition("@sha256:")
    return (digest or hashlib.sha256(image_ref.encode()).hexdigest())[:16]


def compile_cache_dir(profile: Profile, image_ref: str) -> str:
    return f"{COMPILE_CACHE_ROOT}/{profile.name}/{image_key(image_ref)}"


def _launch_script(env: jinja2.Environment, lp: LoadedProfile, settings: GroupSettings, pins: Pins,
                   node: ClusterNode | None) -> str:
    p = lp.profile
    # The profile's ranks: the first tensor x pipeline nodes of the group, head first.
    node = dataclasses.replace(node, nodes=p.cluster.nodes) if p.cluster and node else None
    variants = []
    for name in p.variant_names:
        resolved = p.resolve(name)
        variants.append({"name": name, "description": resolved.description,
                         "arg_lines": _arg_lines(engine_args(p, resolved, pins, node))})
    image_refs, repos = pins.intents.of_profile(p.name)
    unlocked_values = [f"image {ref}" for ref in image_refs if ref not in pins.images]
    unlocked_values += [f"revision of {repo}" for repo in repos if repo not in pins.revisions]
    runtime_flags = (list(GPU_FLAGS) if settings.gpus else []) + list(COMMON_RUNTIME_FLAGS)
    bind = "127.0.0.1"  # engines never leave loopback; the door is the way in
    labels = [WATCHTOWER_DISABLE_LABEL, f"io.sparkstack.model={p.name}", "io.sparkstack.managed=true"]
    container_env = dict(p.env)
    image = pins.image(settings.image_for(p.engine, p.image))
    # The compile caches live on the host, per model and image, so a restart is warm.
    container_env |= {name: f"{COMPILE_CACHE_MOUNT}/{sub}".rstrip("/")
                      for name, sub in adapter_for(p.engine).compile_cache_env.items()}
    # A Ray rank's token, by name like every secret (sparkstack_host/cluster.py puts it in each node's file).
    ray_token = RAY_TOKEN_ENV if node is not None and p.cluster and p.cluster.backend == "ray" else None
    if node is not None:
        # A rank talks to its peers on the interconnect (NCCL, Gloo, the master port): the host's network.
        runtime_flags.append("--network host")
        labels.append(f"io.sparkstack.rank={node.rank}")
        container_env |= adapter_for(p.engine).cluster_environment(p, node)
    return env.get_template("launch.sh.j2").render(
        profile=p,
        source=_source(lp),
        variants=variants,
        labels=labels,
        node=node,
        runtime_flags=runtime_flags,
        # The container's secrets by name only: systemd read the secrets file into the script's environment, and
        # docker copies just these from it. An engine needs its own API key and nothing else of the file.
        secret_names=[name for name in (API_KEY_ENV.get(p.engine), ray_token) if name],
        env=[shlex.quote(f"{k}={v}") for k, v in sorted(container_env.items())],
        publish=None if node is not None else f"{bind}:{p.port}:{p.port}",
        cache_volume=f"{settings.model_cache_dir}:/root/.cache/huggingface",
        compile_cache_volume=f"{compile_cache_dir(p, image)}:{COMPILE_CACHE_MOUNT}",
        image=shlex.quote(image),
        unit_path=f"{UNIT_DIR}/{p.unit_name}",
        unlocked_marker=UNLOCKED,
        unlocked_values=unlocked_values,
    )


def set_partners(name: str, settings: GroupSettings) -> set[str]:
    """The models that share a set with `name`."""
    return {m for members in settings.model_sets.values() if name in members for m in members if m != name}


def _unit(env: jinja2.Environment, lp: LoadedProfile, units: dict[str, str], settings: GroupSettings) -> str:
    p = lp.profile
    all_units = list(units.values())
    partners = {units[m] for m in set_partners(p.name, settings) if m in units}
    return env.get_template("model.service.j2").render(
        profile=p,
        source=_source(lp),
        launch_path=launch_path(p),
        memguard_path=MEMGUARD_PATH,
        secrets_path=SECRETS_PATH,
        start_limit_burst=START_LIMIT_BURST,
        # Long enough to hold the bursts of a model that crashes while loading.
        start_limit_interval_s=START_LIMIT_BURST * (RESTART_SEC + settings.memory_wait_s + p.readiness_timeout_s),
        restart_sec=RESTART_SEC,
        # A model conflicts with every other, except the members of a set it runs in (sparkstack_model_sets).
        conflicts=[u for u in all_units if u != p.unit_name and u not in partners],
        # One total order over the model units (any order will do: systemd runs the stop of a unit it
        # is ordered against before the start, whichever way the ordering points) and no cycles.
        ordered_after=[u for u in sorted(all_units) if u < p.unit_name],
        start_timeout_s=settings.memory_wait_s + START_SLACK_S,
        # The ranks of a cluster model live and die together: the group switch restarts them all, systemd none.
        restart=not p.cluster,
        # A rank never runs unfenced: its unit pulls the fence in and starts after it.
        fence_unit=CLUSTER_FENCE_UNIT if p.cluster else None,
    )


def _source(lp: LoadedProfile) -> str:
    try:
        return str(lp.source.resolve().relative_to(repo_root()))
    except ValueError:
        return lp.source.name


def registry(profiles: list[Profile], settings: GroupSettings, pins: Pins, plan: Plan | None = None,
             node: ClusterNode | None = None) -> str:
    """What llm-switch knows about the models on this host; JSON so the switch needs no YAML parser."""
    models = {}
    for p in profiles:
        models[p.name] = {
            "aliases": p.aliases,
            "engine": p.engine,
            "engine_version": p.engine_version,
            "moe_backend": p.moe_backend,
            "image": pins.image(settings.image_for(p.engine, p.image)),
            # What must be on the host before the model may start (llm-switch checks; the deploy fetches).
            "snapshots": pins.snapshots(p.name),
            "api_key_env": API_KEY_ENV.get(p.engine),
            "unit": p.unit_name,
            "container": p.container_name,
            "port": p.port,
            "served_model_name": p.served_model_name,
            "variants": p.variant_names,
            "default_variant": p.effective_default_variant,
            "readiness_timeout_s": p.readiness_timeout_s,
            # What the engine takes on this host (a cluster model: per node), as the plan counts it.
            "required_memory_gb": round((plan.claim_gb(p) if plan else p.required_memory_gb)
                                        * settings.switch_memory_scale, 3),
            "cluster": registry_entry(node, settings, p.cluster.nodes, p.cluster.backend) if p.cluster and node else None,
            "vision": p.vision,
            "language_model_only": p.language_model_only,
            "context_length": p.context_length,
            "request_fixes": p.request_fixes,
            "tools": p.tools is not None,
            "expected_decode_tok_s": {v: p.resolve(v).expected_decode_tok_s for v in p.variant_names},
            "max_tokens_per_step": {v: p.resolve(v).max_tokens_per_step for v in p.variant_names},
            "launch_script": launch_path(p),
            "unit_path": f"{UNIT_DIR}/{p.unit_name}",
            "stop_timeout_s": p.stop_timeout_s,
            "idle_ttl_s": p.idle_ttl_s,
            "compile_cache": compile_cache_dir(p, pins.image(settings.image_for(p.engine, p.image))),
            # Where the engine says its version (the door passes it through on /version).
            "version_path": adapter_for(p.engine).version_path,
        }
    document = {
        "format": REGISTRY_FORMAT,
        "os_reserve_gb": round(settings.os_reserve_gb * settings.switch_memory_scale, 3),
        "drop_caches": settings.drop_caches,
        "lock_wait_s": settings.switch_lock_wait_s,
        "memory_wait_s": settings.memory_wait_s,
        "memory_guard_floor_gb": round(settings.memory_guard_floor_gb * settings.switch_memory_scale, 3),
        "memguard": MEMGUARD_PATH,
        "cluster_switch": CLUSTER_PATH,
        "model_cache_dir": settings.model_cache_dir,
        "secrets_file": SECRETS_PATH,
        "models": models,
        "compile_cache_max_gb": settings.compile_cache_max_gb,
        "wedge": {"stall_s": settings.wedge_stall_s, "canary_every_s": settings.wedge_canary_every_s,
                  "canary_max_tokens": settings.wedge_canary_max_tokens,
                  "canary_timeout_s": settings.wedge_canary_timeout_s,
                  "max_restarts_per_hour": settings.wedge_max_restarts_per_hour},
        # Models that run together: llm-switch and the door start and stop each set as one. required_memory_gb is
        # the plan's figure for the whole set (its members' claims), scaled as the models' are.
        "sets": {s.name: {"members": [m.profile.name for m in s.members],
                          "required_memory_gb": round(s.claim_gb * settings.switch_memory_scale, 3)}
                 for s in (plan.sets if plan else []) if all(m.profile.name in models for m in s.members)},
        "frontdoor": {
            "bind": "0.0.0.0" if settings.frontdoor_expose else "127.0.0.1",
            "port": settings.frontdoor_port,
            "api_key_env": FRONTDOOR_API_KEY_ENV if settings.frontdoor_expose else None,
            "on_demand": settings.frontdoor_on_demand,
            "min_hot_s": settings.frontdoor_min_hot_s,
            "hold_s": settings.frontdoor_hold_s,
            "connect_timeout_s": settings.frontdoor_connect_timeout_s,
            "read_timeout_s": settings.frontdoor_read_timeout_s,
            "switch_socket": SWITCH_SOCKET,
            "allowed_origins": list(settings.frontdoor_allowed_origins),
            "hostnames": list(settings.frontdoor_hostnames),
            "max_requests": settings.frontdoor_max_requests,
            "max_requests_per_model": settings.frontdoor_max_requests_per_model,
            "max_waiting": settings.frontdoor_max_waiting,
            "monitoring": settings.frontdoor_monitoring,
            "clients_file": DOOR_CLIENTS_PATH,
            "usage_db": USAGE_DB,
            "tls": {"cert": DOOR_CERT_PATH, "key": DOOR_KEY_PATH} if settings.frontdoor_tls else None,
        },
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def memory_guard_files(env: jinja2.Environment, settings: GroupSettings) -> list[RenderedFile]:
    """The memory gate and guard (one program), the guard's service, and earlyoom's configuration."""
    scale = settings.switch_memory_scale
    earlyoom = env.get_template("earlyoom.conf.j2").render(
        term_kib=max(1, round(settings.earlyoom_term_kib * scale)),
        kill_kib=max(1, round(settings.earlyoom_kill_kib * scale)),
        prefer=EARLYOOM_PREFER.replace("$", "$$"),
        avoid=EARLYOOM_AVOID.replace("$", "$$"),
    )
    guard_unit = env.get_template("memory-guard.service.j2").render(memguard_path=MEMGUARD_PATH)
    return [
        RenderedFile(MEMGUARD_PATH, (files_dir() / "sparkstack-memguard").read_text(encoding="utf-8"), "0755",
                     kind="memguard", component="memory-guards"),
        RenderedFile(f"{UNIT_DIR}/{MEMORY_GUARD_UNIT}", guard_unit, "0644", kind="guard-unit", component="memory-guards"),
        RenderedFile(EARLYOOM_DROPIN, earlyoom, "0644", kind="earlyoom-config", component="memory-guards"),
    ]


def cluster_fence_files(env: jinja2.Environment, node: ClusterNode) -> list[RenderedFile]:
    """A cluster node's port fence: the nftables rules and the unit that loads them (sparkstack/cluster.py names
    the ports)."""
    names = {"unit_name": CLUSTER_FENCE_UNIT, "table": CLUSTER_FENCE_TABLE, "interface": node.interface}
    rules = env.get_template("cluster-fence.nft.j2").render(
        **names, node_name=node.name, peers=node.peers, ray_client_port=RAY_CLIENT_PORT,
        ports=[str(low) if low == high else f"{low}-{high}" for low, high in node.fenced_ports()])
    unit = env.get_template("cluster-fence.service.j2").render(**names, nft=NFT_PATH, rules_path=CLUSTER_FENCE_PATH)
    return [
        RenderedFile(CLUSTER_FENCE_PATH, rules, "0644", kind="cluster-fence-rules", component="cluster"),
        RenderedFile(f"{UNIT_DIR}/{CLUSTER_FENCE_UNIT}", unit, "0644", kind="cluster-fence-unit", component="cluster"),
    ]


def frontdoor_files(env: jinja2.Environment) -> list[RenderedFile]:
    """The front door (a service, enabled), and the switch socket it asks for on-demand switches on."""
    unit = env.get_template("frontdoor.service.j2").render(
        frontdoor_path=FRONTDOOR_PATH, user=FRONTDOOR_USER, secrets_path=SECRETS_PATH, registry_path=REGISTRY_PATH,
        state_directory=DOOR_STATE_DIR.removeprefix("/var/lib/"))
    socket_unit = env.get_template("switch-request.socket.j2").render(socket=SWITCH_SOCKET, group=FRONTDOOR_USER,
                                                                      service=SWITCH_REQUEST_UNIT)
    request_unit = env.get_template("switch-request@.service.j2").render(switch_path=SWITCH_PATH)
    return [
        RenderedFile(FRONTDOOR_PATH, (files_dir() / "sparkstack-frontdoor").read_text(encoding="utf-8"), "0755",
                     kind="frontdoor", component="frontdoor"),
        RenderedFile(f"{UNIT_DIR}/{FRONTDOOR_UNIT}", unit, "0644", kind="frontdoor-unit", component="frontdoor"),
        RenderedFile(f"{UNIT_DIR}/{SWITCH_SOCKET_UNIT}", socket_unit, "0644", kind="switch-socket", component="frontdoor"),
        RenderedFile(f"{UNIT_DIR}/{SWITCH_REQUEST_UNIT}", request_unit, "0644", kind="switch-request-unit",
                     component="frontdoor"),
    ]


def check_frontdoor_port(profiles: list[Profile], settings: GroupSettings, group: str) -> None:
    taken = [p.name for p in profiles if p.port == settings.frontdoor_port]
    if taken:
        # Either may move: the profile's port, or the group's door.
        raise RenderError(f"group {group!r}: profile {', '.join(taken)} uses port {settings.frontdoor_port}, where this "
                          f"group's front door listens (sparkstack_frontdoor_port); give the profile another `port`, "
                          f"or the door another sparkstack_frontdoor_port in group_data/{group}.py")


def host_package_files() -> list[RenderedFile]:
    """sparkstack_host, byte for byte, under HOST_LIB: what the shims in files/ run."""
    package = repo_root() / "sparkstack_host"
    return [RenderedFile(f"{HOST_LIB}/sparkstack_host/{module.name}", module.read_text(encoding="utf-8"), "0644",
                         kind=f"host-package:{module.stem}", component="host-package")
            for module in sorted(package.glob("*.py"))]


def artifact_files() -> list[RenderedFile]:
    return [
        RenderedFile(FETCH_PATH, (files_dir() / "sparkstack-fetch").read_text(encoding="utf-8"), "0755",
                     kind="fetch", component="artifacts"),
        RenderedFile(HUB_PATH, (files_dir() / "sparkstack-hub").read_text(encoding="utf-8"), "0644",
                     kind="hub", component="artifacts"),
    ]


def render(group: str, loaded: list[LoadedProfile], settings: GroupSettings, plan: Plan,
           pins: Pins | None = None, node: str | None = None) -> Rendering:
    """Render every file for the profiles the plan admits on this group, with the lock's pins
    (values without one are written as UNLOCKED:<intent>, which no deploy accepts). A group that deploys a
    cluster profile is rendered per node: `node` is the inventory host name."""
    admitted = {p.name for p in plan.deployable}
    chosen = [lp for lp in loaded if lp.profile.name in admitted]
    pins = pins or unpinned([lp.profile for lp in chosen], settings)
    check_frontdoor_port([lp.profile for lp in chosen], settings, group)
    place = None
    if any(lp.profile.cluster for lp in chosen):
        if node is None:
            raise RenderError(f"group {group!r} deploys a cluster model: render it per node "
                              f"({', '.join(settings.cluster_addresses)})")
        try:
            place = cluster_node(settings, node, group)
        except ClusterError as exc:
            raise RenderError(str(exc)) from None
        # A profile spread over fewer nodes than the group has runs on the first ones; the rest do not get it.
        chosen = [lp for lp in chosen if not lp.profile.cluster or place.rank < lp.profile.cluster.nodes]
        if not any(lp.profile.cluster for lp in chosen):
            place = None
    env = _jinja()
    files: list[RenderedFile] = []
    units = {lp.profile.name: lp.profile.unit_name for lp in chosen}
    for lp in chosen:
        p = lp.profile
        files.append(RenderedFile(launch_path(p), _launch_script(env, lp, settings, pins, place), "0755", kind="launch-script"))
        files.append(RenderedFile(f"{UNIT_DIR}/{p.unit_name}", _unit(env, lp, units, settings), "0644", kind="unit"))
    files.append(RenderedFile(REGISTRY_PATH, registry([lp.profile for lp in chosen], settings, pins, plan, place), "0644",
                              kind="registry"))
    files.append(RenderedFile(SWITCH_PATH, (files_dir() / "llm-switch").read_text(encoding="utf-8"), "0755", kind="switch"))
    if place is not None:
        files.append(RenderedFile(CLUSTER_PATH, (files_dir() / "sparkstack-cluster").read_text(encoding="utf-8"), "0755",
                                  kind="cluster-switch", component="cluster"))
        files += cluster_fence_files(env, place)
    files += memory_guard_files(env, settings)
    files += frontdoor_files(env)
    files += artifact_files()
    files += host_package_files()
    directories = [
        RenderedFile(CONFIG_DIR, "", "0755", kind="directory"),
        RenderedFile(LAUNCH_DIR, "", "0755", kind="directory"),
        RenderedFile(f"{UNIT_DIR}/earlyoom.service.d", "", "0755", kind="directory"),
        RenderedFile(settings.model_cache_dir, "", "0755", kind="directory"),
    ]
    secrets = RenderedFile(SECRETS_PATH, "", "0600", kind="secrets")
    return Rendering(group, files, directories, secrets, place)

