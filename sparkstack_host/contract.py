"""The contract between the kit and the host: every host path and state file, and the registry's format.

The kit (sparkstack/render.py) imports these to render; the host programs import them to run. One definition
each, so the two cannot disagree. /etc/sparkstack/models.json carries REGISTRY_FORMAT; a host program refuses a
registry of another format with a line that says to deploy again (tests/unit/test_host_contract.py checks that
what render writes is what this package reads).
"""

import json

CONFIG_DIR = "/etc/sparkstack"
REGISTRY_PATH = f"{CONFIG_DIR}/models.json"
SECRETS_PATH = f"{CONFIG_DIR}/secrets.env"
# The exposed door's TLS certificate and key (root-owned; the key readable by the door's group only).
TLS_DIR = f"{CONFIG_DIR}/tls"
DOOR_CERT_PATH = f"{TLS_DIR}/door.crt"
DOOR_KEY_PATH = f"{TLS_DIR}/door.key"
# The door's named client keys, as SHA-256 digests only (root:sparkstack-door 0640); the keys stay with the owner.
DOOR_CLIENTS_PATH = f"{CONFIG_DIR}/door-clients.json"
DOOR_CLIENTS_FORMAT = 1
# What the door keeps across restarts: usage per client key (SQLite; systemd's StateDirectory= makes the directory,
# owned by the door's user, readable by anyone: the counts name clients and models, never a key).
DOOR_STATE_DIR = "/var/lib/sparkstack/door"
USAGE_DB = f"{DOOR_STATE_DIR}/usage.sqlite3"
# `sparkstack verify --host` appends each run here too (one JSON line, as on the laptop), for the status page.
VERIFY_HISTORY = f"{DOOR_STATE_DIR}/verify-history.jsonl"
LAUNCH_DIR = "/usr/local/libexec/sparkstack"
UNIT_DIR = "/etc/systemd/system"
SWITCH_PATH = "/usr/local/bin/llm-switch"
MEMGUARD_PATH = f"{LAUNCH_DIR}/sparkstack-memguard"
FETCH_PATH = f"{LAUNCH_DIR}/sparkstack-fetch"
HUB_PATH = f"{LAUNCH_DIR}/sparkstack-hub"
CLUSTER_PATH = f"{LAUNCH_DIR}/sparkstack-cluster"
FRONTDOOR_PATH = f"{LAUNCH_DIR}/sparkstack-frontdoor"
# Where the deploy installs this package (the shims in files/ add it to sys.path).
HOST_LIB = "/usr/local/lib/sparkstack"
SWITCH_SOCKET = "/run/sparkstack-switch.sock"
# The front door's port unless a group sets sparkstack_frontdoor_port (profiles may not take it).
DEFAULT_DOOR_PORT = 30080
# How often the door looks at what runs when nothing asks it (seconds).
DOOR_POLL_S = 10.0

# Runtime state: tmpfs, so a reboot forgets it, as it should (no model runs after a boot).
STATE_DIR = "/run/sparkstack"
LOCK_DIR = f"{STATE_DIR}/lock"
GUARD_STATE = f"{STATE_DIR}/memory-guard.json"
CLUSTER_LENT = f"{STATE_DIR}/cluster.json"
CLUSTER_LAST = f"{STATE_DIR}/cluster-last.json"
# The wedge watch's record (written by llm-switch as root when the door reports a wedged model): per model, the
# restarts within the last hour, the state (restarted, stopped), the reason and the last log lines.
WEDGE_STATE = f"{STATE_DIR}/wedge.json"
# How each model's last start by llm-switch went: its compile cache cold or warm, and the time to ready.
STARTS_STATE = f"{STATE_DIR}/starts.json"

# Compile caches (torch.compile, Triton, FlashInfer JIT; SGLang's), kept across starts: one directory per model and
# engine image, COMPILE_CACHE_ROOT/MODEL/IMAGE_KEY, mounted at COMPILE_CACHE_MOUNT in the model's container.
COMPILE_CACHE_ROOT = "/var/cache/sparkstack/compile"
COMPILE_CACHE_MOUNT = "/var/cache/sparkstack-compile"

# A Ray cluster group's shared token (Ray's token auth, RAY_AUTH_MODE=token): a line of the secrets file on every
# node. The deploy makes it on the head; the head's group switch hands it to each worker as the ranks start.
RAY_TOKEN_ENV = "RAY_AUTH_TOKEN"
# A cluster group's port fence (nftables): its rules, its table, and the unit that loads them before any rank runs.
CLUSTER_FENCE_PATH = f"{CONFIG_DIR}/cluster-fence.nft"
CLUSTER_FENCE_TABLE = "sparkstack_cluster"
CLUSTER_FENCE_UNIT = "sparkstack-cluster-fence.service"
# Bump when a key below changes meaning or goes away; the deploy rewrites the registry and restarts the door.
REGISTRY_FORMAT = 1
REGISTRY_KEYS = frozenset({
    "format", "os_reserve_gb", "drop_caches", "lock_wait_s", "memory_wait_s", "memory_guard_floor_gb", "memguard",
    "cluster_switch", "model_cache_dir", "secrets_file", "models", "sets", "frontdoor", "wedge", "compile_cache_max_gb",
})
MODEL_KEYS = frozenset({
    "aliases", "engine", "engine_version", "moe_backend", "image", "snapshots", "api_key_env", "unit", "container",
    "port", "served_model_name", "variants", "default_variant", "readiness_timeout_s", "required_memory_gb",
    "cluster", "vision", "language_model_only", "context_length", "request_fixes", "tools", "expected_decode_tok_s",
    "max_tokens_per_step", "launch_script", "unit_path", "stop_timeout_s", "version_path", "idle_ttl_s",
    "compile_cache",
})
FRONTDOOR_KEYS = frozenset({
    "bind", "port", "api_key_env", "on_demand", "min_hot_s", "hold_s", "connect_timeout_s", "read_timeout_s",
    "switch_socket", "allowed_origins", "hostnames", "max_requests", "max_requests_per_model", "tls",
    "max_waiting", "clients_file", "usage_db", "monitoring",
})


def set_running(sets: dict, names: list) -> str | None:
    """The set whose members are exactly `names` (what runs), else None. One rule for llm-switch and the door."""
    return next((name for name, members in sets.items() if sorted(members) == sorted(names)), None)


def read_state(path: str) -> dict:
    """A state file a host program keeps as JSON (the guard's, the wedge record, the starts): {} when absent or torn."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(path: str, document: dict) -> None:
    """A state file written whole or not at all (a reader never sees half of it), readable by anyone."""
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    os.chmod(partial, 0o644)
    os.replace(partial, path)


def restarts_within_hour(record: dict, now: float | None = None) -> list:
    """The restarts of a wedge record (WEDGE_STATE) within the last hour: what the bound counts."""
    import time

    now = time.time() if now is None else now
    return [t for t in record.get("restarts", []) if now - float(t) < 3600]


def wedge_watch_on(wedge: dict | None) -> bool:
    """Whether the door's wedge watch runs (sparkstack_host/wedgewatch.py): either trigger set."""
    return bool(wedge and (wedge.get("stall_s") or wedge.get("canary_every_s")))


def switch_socket_listens(registry: dict) -> bool:
    """The switch socket serves the door's on-demand switches and the wedge watch's recoveries; off when neither."""
    return bool(registry["frontdoor"]["on_demand"]) or wedge_watch_on(registry.get("wedge"))


class RegistryError(Exception):
    pass


def read_registry(path: str = REGISTRY_PATH) -> dict:
    """The deployed registry, or RegistryError with one line that says what to do."""
    try:
        with open(path, encoding="utf-8") as handle:
            registry = json.load(handle)
    except FileNotFoundError:
        raise RegistryError(f"{path} is missing; run the sparkstack deploy for this host") from None
    except ValueError as exc:
        raise RegistryError(f"{path} is not valid JSON ({exc}); run the sparkstack deploy for this host") from None
    found = registry.get("format") if isinstance(registry, dict) else None
    if found != REGISTRY_FORMAT:
        raise RegistryError(f"{path} has format {found!r}, these programs read format {REGISTRY_FORMAT}; "
                            "run the sparkstack deploy for this host")
    return registry


def key_digest(key: str) -> str:
    """How a client key is kept on the host: its SHA-256. The keys are 32 random bytes or more (a key given by the
    owner is refused when shorter), so a digest cannot be walked back, and the door compares digests in constant time."""
    import hashlib
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def read_clients(path: str = DOOR_CLIENTS_PATH) -> dict:
    """client name -> key digest; {} when the file is absent (no named clients)."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return {}
    if not isinstance(document, dict) or document.get("format") != DOOR_CLIENTS_FORMAT:
        raise RegistryError(f"{path} is not format {DOOR_CLIENTS_FORMAT}; run the sparkstack deploy for this host")
    return dict(document.get("clients") or {})
