"""Per-group settings: read from group_data/*.py, the same files pyinfra loads.

`sparkstack render --group G` has no host to ask, so it runs group_data/all.py
and group_data/G.py exactly as pyinfra does (later files override earlier ones)
and keeps the `sparkstack_*` names. During a deploy the same values come from
`host.data`. Both paths end in `GroupSettings`, whose defaults below are the
single source of every setting; group files set only what differs.
"""

from __future__ import annotations

import datetime
import runpy
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, FilePath, ValidationError, model_validator

from sparkstack.cluster import RAY_CLIENT_PORT, RAY_WORKER_PORTS, ray_port_span
from sparkstack.paths import display_path, group_data_dir
from sparkstack.schema import StrictModel, error_text
from sparkstack_host.contract import DEFAULT_DOOR_PORT

PREFIX = "sparkstack_"
# A DGX Spark has 128 GB of unified memory (NVIDIA; seeds 000/001). Used when
# planning without a live host; a deploy reads the host's own figure.
SPARK_UNIFIED_MEMORY_GB = 128.0


class Waiver(StrictModel):
    until: datetime.date = Field(strict=False)
    reason: str = Field(min_length=3, max_length=500)


class GroupSettings(StrictModel):
    """Every `sparkstack_<field>` a group file may set, with its default."""

    # Unified memory to plan against, in GB. None: the host's live MemTotal during a deploy,
    # a Spark's 128 GB when planning offline.
    unified_memory_gb: float | None = Field(default=None, gt=0)
    # Memory kept free for the OS, desktop and docker. Seeds 000/001: qwen36 uses ~67 GB with
    # 53 GB headroom on a 128 GB Spark, which leaves 128 - 67 - 53 = 8 GB outside the model.
    os_reserve_gb: float = Field(default=8.0, ge=0)
    # Model containers get the GPUs (`--gpus all`); the deploy checks the NVIDIA container runtime.
    gpus: bool = True
    # `sync; echo 3 > /proc/sys/vm/drop_caches` before each model start (NVIDIA dgx-spark-playbooks).
    drop_caches: bool = False
    # None: every profile the memory plan admits. A list pins exactly these (and one that cannot fit stops the deploy).
    models: list[str] | None = None
    # engine -> image, replacing the profiles' images on this group (the test VM's stand-in engine).
    image_overrides: dict[str, str] = {}
    # Host directory mounted as the containers' Hugging Face cache.
    model_cache_dir: str = "/var/lib/sparkstack/huggingface"
    # The Hugging Face endpoint lock and deploy resolve and fetch from, as seen on the host. None: the
    # client's default (huggingface.co); a mirror or the test VM's own hub otherwise.
    hf_endpoint: str | None = None
    # Free space the artifact preflight keeps on the docker root and the model cache filesystems, beyond
    # what the fetch needs (pulls unpack layers next to the downloads; logs and the OS keep growing).
    disk_margin_gb: float = Field(default=10.0, ge=0)
    # Sparks in this group that form one cluster (one GPU each): cluster profiles are placed on them.
    cluster_nodes: int = Field(default=1, ge=1)
    # The cluster's nodes in rank order, head (rank 0) first: inventory host name -> the address the node
    # has on the cluster interconnect (NCCL, Gloo, vLLM's master port and the group switch use it).
    # Empty: cluster profiles are only planned. Cabling and addressing: NVIDIA's dgx-spark-playbooks.
    cluster_addresses: dict[str, str] = {}
    # The interconnect's network interface, the same name on every node (NCCL/Gloo/TP/UCX bind to it).
    cluster_interface: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,15}$")
    # vLLM's own default (vllm/config/parallel.py ParallelConfig.master_port = 29501).
    cluster_master_port: int = Field(default=29501, gt=0, lt=65536)
    # The Ray head's GCS port, for profiles with backend: ray (`ray start --head --port`; Ray's own default).
    cluster_ray_port: int = Field(default=6379, gt=0, lt=65536)
    # More env for every rank, for what depends on the hardware (e.g. NCCL_IB_HCA, named after the
    # node's RoCE devices): sparkstack does not guess those names.
    cluster_env: dict[str, str] = {}
    # How long a switch waits for another switch's lock.
    switch_lock_wait_s: int = Field(default=600, gt=0)
    # How long every model start (llm-switch, a hand start, systemd's restarts) waits for MemAvailable to
    # cover the model and the reserve before it is refused: engines release unified memory 30-120 s after
    # `docker stop` (community Spark stacks, ../shared/BRIEF.md), so 180 s covers the slowest report.
    memory_wait_s: int = Field(default=180, ge=0)
    # The memory guard stops the hot model when MemAvailable stays below this (absolute GB). Community Spark
    # stacks stop the model below ~10 GiB available (../shared/BRIEF.md, "freeze guards on GB10").
    memory_guard_floor_gb: float = Field(default=10.0, gt=0)
    # earlyoom, the kernel-level backstop, with absolute thresholds in KiB (SIGTERM, SIGKILL): eugr's
    # spark-vllm-docker launcher runs `earlyoom -M 524288,102400 -s 100`. A percentage (-m 6) was reported
    # to kill vLLM while it loaded its weights on a Spark.
    earlyoom_term_kib: int = Field(default=524288, gt=0)
    earlyoom_kill_kib: int = Field(default=102400, gt=0)
    # What the memory gate, the memory guard and earlyoom scale their figures by; 1.0 on a Spark.
    switch_memory_scale: float = Field(default=1.0, gt=0, le=1)
    # The front door (sparkstack-frontdoor): one OpenAI-compatible endpoint whatever model is hot, on loopback
    # unless exposed (exposed, it needs FRONTDOOR_API_KEY_ENV in the secrets file). The engines never leave
    # loopback: the door is the only way in from the network.
    # The port is sparkstack's choice, next to the models' 30000-range ports.
    frontdoor_port: int = Field(default=DEFAULT_DOOR_PORT, ge=1024, lt=65536)
    # Expose the door (0.0.0.0, its key required on every route) while the engines stay on loopback behind it.
    frontdoor_expose: bool = False
    # A request for a model that is not hot: False answers 409 naming the hot model and the switch command;
    # True switches to it through llm-switch, one switch at a time.
    frontdoor_on_demand: bool = False
    # On demand: a model stays hot at least this long, so two clients naming different models cannot make
    # the Spark flip back and forth (each load takes minutes); earlier requests get 503 with Retry-After.
    frontdoor_min_hot_s: int = Field(default=300, ge=0)
    # On demand: how long a request is held while its model loads, then 503 with Retry-After. A Spark loads
    # its biggest profiles in minutes (readiness timeouts up to 900 s), so the default holds for ten.
    frontdoor_hold_s: int = Field(default=600, gt=0)
    # Upstream timeouts: connecting to the engine on loopback, and the longest silence between two bytes of
    # its answer (a long prompt's prefill sends nothing until the first token).
    frontdoor_connect_timeout_s: float = Field(default=5.0, gt=0)
    frontdoor_read_timeout_s: float = Field(default=600.0, gt=0)
    # Browser origins allowed to call the door (e.g. "http://localhost:3000" for a local chat UI). A request
    # with any other Origin header is refused: a web page the owner visits must not use the loopback door.
    frontdoor_allowed_origins: list[Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")]] = []
    # Names clients call the door by, beyond loopback and the host's own name, name.local and addresses (which
    # the door knows): e.g. "spark.example.lan". A request with any other Host is refused (DNS rebinding).
    frontdoor_hostnames: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")]] = []
    # Requests the door handles at once, overall and per model; past either it answers 429 with Retry-After.
    # Overall bounds the memory request bodies can hold (x 32 MiB); per model keeps one busy model from
    # taking every slot. The engine batches what it gets; these are the door's bounds, not the engine's.
    frontdoor_max_requests: int = Field(default=64, ge=1, le=4096)
    frontdoor_max_requests_per_model: int = Field(default=32, ge=1, le=4096)
    # What the door shows about itself, /metrics (Prometheus) and /status (a page): "key", behind the door's key like
    # every route; "loopback", also without a key from loopback (a Prometheus or a browser on the Spark, or through
    # ssh -L), and with the key from anywhere else.
    frontdoor_monitoring: Literal["key", "loopback"] = "key"
    # On demand: requests held at once while their model loads (the queue); past it 503 with Retry-After.
    frontdoor_max_waiting: int = Field(default=16, ge=0, le=4096)
    # Named client keys (e.g. ["laptop", "ci", "phone"]): each request is attributed to its key, with usage kept on
    # the host. Each key lives on this machine (`sparkstack keys`: made by the deploy unless the owner gives one);
    # the host keeps only its SHA-256. A name taken out of this list is revoked by the next deploy.
    frontdoor_clients: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]] = []
    # Models that run together, by set name (e.g. {"coder-embed": ["qwen36", "embedder"]}): the memory plan checks
    # each set as a whole, `llm-switch SET` and the door start and stop its members as one. Without sets exactly
    # one model is hot.
    model_sets: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")], list[str]] = {}
    # TLS for the door (https). With frontdoor_tls_cert and frontdoor_tls_key (files on this machine: a
    # certificate the clients already trust, and its key), the deploy installs them. Without, it makes a
    # self-signed one on the host, once (EC P-256, for loopback, the host's names and addresses, and
    # frontdoor_hostnames), whose certificate the clients must be given to trust.
    frontdoor_tls: bool = False
    frontdoor_tls_cert: FilePath | None = Field(default=None, strict=False)  # a path or a str
    frontdoor_tls_key: FilePath | None = Field(default=None, strict=False)

    # The wedge watch (the door's; sparkstack_host/wedgewatch.py). An engine can keep answering /health with 200 while
    # it generates nothing. A hot model with requests in flight and no byte of an answer for wedge_stall_s, or idle for
    # wedge_canary_every_s, is sent a canary: a streamed chat completion of at most wedge_canary_max_tokens tokens.
    # No token within wedge_canary_timeout_s: it is wedged, and llm-switch restarts it, at most
    # wedge_max_restarts_per_hour times within an hour; the next wedge stops it. 0 turns a trigger off.
    wedge_stall_s: float = Field(default=120.0, ge=0)
    wedge_canary_every_s: float = Field(default=300.0, ge=0)
    wedge_canary_max_tokens: int = Field(default=4, ge=1, le=64)
    wedge_canary_timeout_s: float = Field(default=60.0, gt=0)
    wedge_max_restarts_per_hour: int = Field(default=3, ge=0, le=60)
    # The previous pins an upgrade kept in the lock stay on the host (fetched again after a clean install) while
    # their images and snapshots take at most this much, so `sparkstack rollback` fetches nothing. 0 keeps none.
    rollback_keep_gb: float = Field(default=150.0, ge=0)
    # Compile caches (torch.compile, Triton, FlashInfer JIT; SGLang's), per model and engine image under
    # /var/cache/sparkstack/compile: a restart with the cache skips most of the compile (a real vLLM start: 62.1 s cold, 43.1 s warm,
    # torch.compile 10.7 s against 1.1 s). Before each start llm-switch prunes the oldest caches of other images past this bound.
    compile_cache_max_gb: float = Field(default=20.0, ge=0)

    # The host baseline (sparkstack/baseline.py): known-bad entries this group deploys to anyway, each until a date
    # and with a reason, e.g. {"nvidia-590": {"until": "2027-01-31", "reason": "580 breaks our NIC; watching #12"}}.
    baseline_waivers: dict[str, Waiver] = {}
    # Packages the deploy holds with `apt-mark hold` so an update cannot move the platform under the models, e.g. the
    # driver's and the kernel's meta-packages on DGX OS (their names are the host's: `apt-mark showhold` lists them).
    baseline_holds: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+-]{1,100}$")]] = []
    # GPU facts for hosts that have no GPU (the test hosts): recorded as a fixture, never for a host with a driver.
    baseline_fixture: dict[str, str | int | None] = {}

    @model_validator(mode="before")
    @classmethod
    def _expose_is_gone(cls, values):
        if isinstance(values, dict) and "expose" in values:
            # vLLM's key guards only /v1* (its /invocations, /tokenize, /metrics answer anyone), and SGLang's
            # native routes have none: an engine on the network is an open engine.
            raise ValueError("sparkstack_expose is gone: engines listen on loopback only. Set "
                             "sparkstack_frontdoor_expose = True to reach the models from other machines through the "
                             "front door, with its key (SPARKSTACK_FRONTDOOR_API_KEY in the secrets file)")
        return values

    @model_validator(mode="after")
    def _tls_files_go_together(self):
        if (self.frontdoor_tls_cert is None) != (self.frontdoor_tls_key is None):
            raise ValueError("sparkstack_frontdoor_tls_cert and sparkstack_frontdoor_tls_key go together: give both "
                             "(the certificate and its key) or neither (the deploy makes a self-signed one)")
        if self.frontdoor_tls_cert is not None and not self.frontdoor_tls:
            raise ValueError("sparkstack_frontdoor_tls_cert is set but sparkstack_frontdoor_tls is not: set "
                             "sparkstack_frontdoor_tls = True to serve the door over TLS")
        return self

    @model_validator(mode="after")
    def _sets_and_clients_are_well_formed(self):
        for name, members in self.model_sets.items():
            if len(members) < 2 or len(set(members)) != len(members):
                raise ValueError(f"sparkstack_model_sets.{name}: a set names two or more different models, "
                                 f"not {members!r}")
        if len(set(self.frontdoor_clients)) != len(self.frontdoor_clients):
            raise ValueError("sparkstack_frontdoor_clients names a client twice")
        return self

    @model_validator(mode="after")
    def _cluster_addresses_match(self):
        if self.cluster_addresses:
            if len(self.cluster_addresses) != self.cluster_nodes:
                raise ValueError(f"sparkstack_cluster_addresses names {len(self.cluster_addresses)} nodes but "
                                 f"sparkstack_cluster_nodes is {self.cluster_nodes}; list every node once, head first")
            if self.cluster_interface is None:
                raise ValueError("sparkstack_cluster_addresses is set but sparkstack_cluster_interface is not: "
                                 "name the interconnect's interface (the same on every node)")
            if len(set(self.cluster_addresses.values())) != len(self.cluster_addresses):
                raise ValueError("sparkstack_cluster_addresses gives two nodes the same address")
        # Ray's pinned ports follow the GCS port (sparkstack/cluster.py); none may be another's.
        first, last = ray_port_span(self.cluster_ray_port)
        ray = set(range(first, last + 1))
        workers = set(range(RAY_WORKER_PORTS[0], RAY_WORKER_PORTS[1] + 1))
        if last > 65535 or ray & (workers | {RAY_CLIENT_PORT}):
            raise ValueError(f"sparkstack_cluster_ray_port {first}: Ray's ports are it and the {last - first} after "
                             f"it, below 65536 and clear of the Ray Client's {RAY_CLIENT_PORT} and the workers' "
                             f"{RAY_WORKER_PORTS[0]}-{RAY_WORKER_PORTS[1]}")
        if self.cluster_master_port in ray | workers | {RAY_CLIENT_PORT}:
            raise ValueError(f"sparkstack_cluster_master_port {self.cluster_master_port} is one of Ray's ports "
                             f"({first}-{last}, {RAY_CLIENT_PORT}, {RAY_WORKER_PORTS[0]}-{RAY_WORKER_PORTS[1]}); "
                             "choose another")
        return self

    @property
    def cluster_head(self) -> str | None:
        return next(iter(self.cluster_addresses), None)

    def memory_source(self, group: str, live_gb: float | None = None) -> tuple[str, str | None]:
        """Where planning_memory_gb's figure comes from, as the plan states it, and a note when it is assumed."""
        if self.unified_memory_gb is not None:
            live = "" if live_gb is None else f"; the host's MemTotal reads {live_gb:.1f} GiB"
            return f"sparkstack_unified_memory_gb{live}", None
        if live_gb is not None:
            return "the host's MemTotal", None
        return ("assumed offline: a Spark's nominal figure",
                f"a deploy plans against the host's MemTotal, which reads less on a Spark (about 119-120 GiB): set "
                f"sparkstack_unified_memory_gb in group_data/{group}.py to your host's figure to plan with it here")

    def planning_memory_gb(self, live_gb: float | None = None) -> float:
        if self.unified_memory_gb is not None:
            return self.unified_memory_gb
        return live_gb if live_gb is not None else SPARK_UNIFIED_MEMORY_GB

    def image_for(self, engine: str, image: str) -> str:
        return self.image_overrides.get(engine, image)


class GroupSettingsError(Exception):
    pass


def settings_from_data(data: Mapping[str, Any], source: str) -> GroupSettings:
    values = {k[len(PREFIX):]: v for k, v in data.items() if k.startswith(PREFIX)}
    try:
        return GroupSettings.model_validate(values)
    except ValidationError as exc:
        lines = [f"{source}: {PREFIX}{'.'.join(map(str, e['loc']))}: {error_text(e)}" if e["loc"] else f"{source}: {error_text(e)}"
                 for e in exc.errors()]
        raise GroupSettingsError("\n".join(lines)) from None


# The groups the kit's own tests use; `plan` and `drift` leave them out unless asked.
TEST_GROUPS = ("testcluster", "testhost")
# The groups an owner deploys to (inventory.py): `drift` checks these when no --limit is given.
DEPLOYED_GROUPS = ("spark", "cluster")


def known_groups(root: Path | None = None) -> list[str]:
    root = root or group_data_dir()
    return sorted(p.stem for p in root.glob("*.py") if p.stem != "all")


def inventory_hosts(group: str) -> list[str] | None:
    """The host names inventory.py gives GROUP now (it reads the environment and the running test hosts), or
    None when the inventory configures no host at all (it then exits with its guidance)."""
    import contextlib
    import io

    from sparkstack.paths import repo_root

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            namespace = runpy.run_path(str(repo_root() / "inventory.py"))
    except SystemExit:
        return None
    entry = namespace.get(group)
    if not isinstance(entry, tuple) or not entry:
        return []
    return [host[0] if isinstance(host, tuple) else host for host in entry[0]]


def load_group_settings(group: str, root: Path | None = None) -> GroupSettings:
    root = root or group_data_dir()
    if not (root / f"{group}.py").is_file():
        raise GroupSettingsError(f"unknown group {group!r}: no {display_path(root / (group + '.py'))} "
                                 f"(known: {', '.join(known_groups(root))})")
    files = [f for f in (root / "all.py", root / f"{group}.py") if f.is_file()]
    data: dict[str, Any] = {}
    for path in files:
        data.update(runpy.run_path(str(path)))
    return settings_from_data(data, " + ".join(display_path(p) for p in files))
