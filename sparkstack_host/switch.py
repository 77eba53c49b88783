"""llm-switch: keep exactly one sparkstack model hot on this host (or one set of models that run together).

  llm-switch <alias|name> [--variant V]   stop every other model, start this one, wait until it serves
  llm-switch <set>                         stop every other model, start the set's members in order (each
                                           waits for its room and its readiness), or none of them
  llm-switch none                          stop every model
  llm-switch status [--json]               what is hot, and how it is doing (anyone may run this)

Installed by sparkstack from files/llm-switch; the models it knows come from
/etc/sparkstack/models.json, rendered from the YAML profiles. Standard library
only: it must work on a freshly provisioned host with nothing else installed.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from sparkstack_host import contract, leftovers
from sparkstack_host.memguard import meminfo_gb  # noqa: F401 (one reader of /proc/meminfo)

REGISTRY = os.environ.get("LLM_SWITCH_REGISTRY", contract.REGISTRY_PATH)
# In a root-only directory: a lock anyone can open is a lock anyone can hold.
LOCK_DIR = contract.LOCK_DIR
LOCK_PATH = f"{LOCK_DIR}/llm-switch.lock"
VARIANT_DIR = contract.STATE_DIR
GUARD_STATE = contract.GUARD_STATE
# Written by sparkstack-cluster while this node runs a rank of a cluster model, and how the last one ended.
CLUSTER_LENT = contract.CLUSTER_LENT
CLUSTER_LAST = contract.CLUSTER_LAST
WEDGE_STATE = contract.WEDGE_STATE
STARTS_STATE = contract.STARTS_STATE
COMPILE_CACHE_ROOT = contract.COMPILE_CACHE_ROOT
GB = 1e9
MANAGED_LABEL = "io.sparkstack.managed=true"
PROGRESS_EVERY_S = 10
DROP_CACHES = "/proc/sys/vm/drop_caches"


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived during a switch."""


class SwitchError(Exception):
    """A one-line reason the switch failed; printed and turned into exit 1."""


def say(message):
    print(f"llm-switch: {message}", flush=True)


def run(*args, check=False, timeout=120):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


def load_registry():
    try:
        return contract.read_registry(REGISTRY)
    except contract.RegistryError as exc:
        raise SwitchError(str(exc)) from None


def resolve(registry, word):
    for name, model in registry["models"].items():
        if word == name or word in model["aliases"]:
            return name, model
    known = ", ".join(f"{n} ({'/'.join(m['aliases'])})" if m["aliases"] else n for n, m in registry["models"].items())
    sets = ", ".join(f"{n} ({'+'.join(s['members'])})" for n, s in (registry.get("sets") or {}).items())
    raise SwitchError(f"unknown model {word!r}; known: {known or 'none deployed'}" + (f"; sets: {sets}" if sets else ""))


# --- host state ---------------------------------------------------------

def unit_state(unit):
    out = run("systemctl", "show", unit, "--property=ActiveState,SubState,Result,NRestarts,"
              "ActiveEnterTimestampMonotonic,UnitFileState,LoadState,StartLimitBurst").stdout
    state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return state


def running_containers():
    """Managed containers running now: {container name: {model, variant, config}}; None when docker is not readable."""
    result = run("docker", "ps", "--filter", f"label={MANAGED_LABEL}", "--filter", "status=running",
                 "--format", '{{.Names}}\t{{.Label "io.sparkstack.model"}}\t{{.Label "io.sparkstack.variant"}}'
                 '\t{{.Label "io.sparkstack.config"}}')
    if result.returncode != 0:
        return None
    out = result.stdout
    found = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            found[parts[0]] = {"model": parts[1], "variant": parts[2], "config": parts[3]}
    return found


def config_hash(model):
    """What the launch script stamps on its container: the first 16 hex of sha256(script + unit)."""
    digest = hashlib.sha256()
    try:
        for path in (model["launch_script"], model["unit_path"]):
            with open(path, "rb") as handle:
                digest.update(handle.read())
    except (OSError, KeyError):
        return None
    return digest.hexdigest()[:16]


def uptime_s(state):
    started = int(state.get("ActiveEnterTimestampMonotonic") or 0)
    if not started or state.get("ActiveState") != "active":
        return None
    return max(0, int(time.monotonic() - started / 1e6))


def api_key(registry, model):
    """The model's API key from the secrets file (root only), for probing an endpoint that requires one; never printed."""
    name = model.get("api_key_env")
    if not name:
        return None
    try:
        with open(registry["secrets_file"], encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.strip().partition("=")
                if key == name and value:
                    return value
    except OSError:
        pass
    return None


def probe(model, key=None, timeout=3.0):
    """(ready, detail): /health answers 200 and /v1/models names the served model."""
    base = f"http://127.0.0.1:{model['port']}"
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as response:
            if response.status != 200:
                return False, f"/health answered {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"/health answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, str(getattr(exc, "reason", exc))
    try:
        request = urllib.request.Request(f"{base}/v1/models")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            served = [m.get("id") for m in json.load(response).get("data", [])]
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403) and key is None:
            # An exposed endpoint, asked by a user who cannot read the key: /health is the answer we can get.
            return True, "ready (/health 200; /v1/models needs the API key, which this user cannot read)"
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)
    if model["served_model_name"] not in served:
        return False, f"/v1/models lists {served}, not {model['served_model_name']!r}"
    return True, "ready"


# --- switching ----------------------------------------------------------

class Lock:
    """One lock for every switch; a second switch waits a bounded time, then fails clearly."""

    def __init__(self, wait_s):
        self.wait_s = wait_s
        self.handle = None

    def __enter__(self):
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
        os.chmod(LOCK_DIR, 0o700)
        self.handle = os.fdopen(os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600), "a+", encoding="ascii")
        deadline = time.monotonic() + self.wait_s
        announced = False
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.handle.seek(0)
                    holder = self.handle.read().strip() or "unknown"
                    raise SwitchError(f"another switch (pid {holder}) still holds {LOCK_PATH} after {self.wait_s} s; "
                                      "try again when it has finished") from None
                if not announced:
                    say("another switch is running; waiting for it")
                    announced = True
                time.sleep(0.2)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def stop_models(registry):
    """Stop every managed model unit and make sure their containers are gone."""
    for name, model in registry["models"].items():
        state = unit_state(model["unit"])
        if state.get("ActiveState") not in ("inactive", "failed") or state.get("SubState") == "auto-restart":
            say(f"stopping {name} ({model['unit']})")
        run("systemctl", "stop", model["unit"], timeout=model.get("readiness_timeout_s", 900))
        run("systemctl", "reset-failed", model["unit"])
    deadline = time.monotonic() + 60
    while True:
        running = running_containers()
        strays = list(running or {})
        if not strays:
            if running is not None:  # docker answered: every model is down, and what an engine left goes too
                leftovers.orphan_engines(say, leftovers.running_container_ids(run))
                leftovers.shm_leftovers(say)
            return
        if time.monotonic() >= deadline:
            raise SwitchError(f"containers still running after stop: {', '.join(strays)}")
        for container in strays:
            run("docker", "rm", "-f", container)
        time.sleep(1)


def wait_for_room(registry, name):
    """The same gate the model units run as ExecStartPre, shown here: wait, bounded, for memory to come back."""
    command = [registry["memguard"], "--registry", REGISTRY, "wait-for-room", name]
    result = subprocess.run(command, timeout=registry["memory_wait_s"] + 60)
    if result.returncode != 0:
        raise SwitchError(f"{name} was not started: not enough memory (see above)")
    if registry.get("drop_caches"):
        say("dropping page caches before the load")
        os.sync()
        with open(DROP_CACHES, "w", encoding="ascii") as handle:
            handle.write("3\n")


def last_logs(unit, lines=20):
    return run("journalctl", "--unit", unit, "--lines", str(lines), "--no-pager", "--output", "cat").stdout.rstrip()


def wait_ready(name, model, key):
    timeout = model["readiness_timeout_s"]
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY_S
    detail = "not probed yet"
    while True:
        elapsed = time.monotonic() - started
        state = unit_state(model["unit"])
        if state.get("ActiveState") in ("failed", "inactive") or int(state.get("NRestarts") or 0) > 0:
            # Any exit while loading fails the switch; systemd's own restarts are for a model that was serving.
            raise SwitchError(f"{model['unit']} exited while loading ({state.get('Result', 'unknown')}, "
                              f"state {state.get('ActiveState')}/{state.get('SubState')})")
        ready, detail = probe(model, key)
        if ready:
            return elapsed
        if elapsed >= timeout:
            raise SwitchError(f"{name} was not ready after {timeout} s ({detail})")
        if time.monotonic() >= next_report:
            say(f"waiting for {name}: {elapsed:.0f}/{timeout} s ({detail})")
            next_report += PROGRESS_EVERY_S
        time.sleep(1)


def variant_file(name):
    return os.path.join(VARIANT_DIR, f"{name}.variant")


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def missing_artifact(registry, model):
    """The first locked image or snapshot file this model needs that is not on the host, else None."""
    image = model["image"]
    if image.startswith("UNLOCKED:") or run("docker", "image", "inspect", image).returncode != 0:
        return f"image {image}"
    cache = registry["model_cache_dir"].rstrip("/")
    for snapshot in model.get("snapshots", []):
        base = f"{cache}/hub/models--{snapshot['repo'].replace('/', '--')}/snapshots/{snapshot['commit']}"
        for name in snapshot["files"]:
            if not os.path.exists(f"{base}/{name}"):
                return f"{snapshot['repo']}@{snapshot['commit'][:12]} (file {name})"
    return None


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def lent_to(registry):
    """(name, model) of the cluster model this node is lent to, else None: its rank runs, or the group switch
    prepared this node and is still within its start window. sparkstack-cluster removes the marker when it
    stops the model; one left behind (a head that vanished) is ignored once its rank is down and the window over."""
    lent = read_json(CLUSTER_LENT)
    if not lent or lent.get("model") not in registry["models"]:
        return None
    model = registry["models"][lent["model"]]
    if unit_state(model["unit"]).get("ActiveState") in ("active", "activating", "reloading", "deactivating"):
        return lent["model"], model
    window = registry["lock_wait_s"] + registry["memory_wait_s"] + model["readiness_timeout_s"] + 300
    if time.time() - float(lent.get("since") or 0) < window:
        return lent["model"], model
    return None


def release_cluster(registry):
    """Before a local model starts (or `none`): on the head, stop the cluster model on every node; on a worker,
    refuse, naming the head. Called under the switch lock."""
    lent = lent_to(registry)
    if lent is None:
        return
    name, model = lent
    cluster = model["cluster"]
    if cluster["rank"] != 0:
        raise SwitchError(f"this node is lent to cluster model {name} (rank {cluster['rank']}; head {cluster['head']} "
                          f"at {cluster['head_address']}); stop it there with `llm-switch none` first")
    try:
        result = subprocess.run([registry["cluster_switch"], "stop"],
                                timeout=(model.get("stop_timeout_s", 60) + 120) * len(cluster["nodes"]))
    except subprocess.TimeoutExpired:
        raise SwitchError(f"cluster model {name} did not stop on every node in time; nothing else was started") from None
    if result.returncode != 0:
        raise SwitchError(f"cluster model {name} did not stop on every node (see above); nothing else was started")


def resolve_target(registry, word):
    """(set name, its members) when `word` names a set of models that run together, else None."""
    sets = registry.get("sets") or {}
    return (word, sets[word]["members"]) if word in sets else None


def switch_to(registry, word, variant):
    target = resolve_target(registry, word)
    if target is not None:
        if variant:
            raise SwitchError(f"{word} is a set of models; its members start with their default variants")
        return switch_set(registry, *target)
    name, model = resolve(registry, word)
    if model.get("cluster"):
        # One rank per node: the group switch starts every rank from the head (files/sparkstack-cluster).
        command = [registry["cluster_switch"], "start", name] + (["--variant", variant] if variant else [])
        os.execv(command[0], command)
    variant = variant or model["default_variant"]
    if variant not in model["variants"]:
        raise SwitchError(f"{name} has no variant {variant!r} (variants: {', '.join(model['variants'])})")
    return start_models(registry, [(name, model, variant)], name)


def switch_set(registry, set_name, members):
    return start_models(registry, [(m, registry["models"][m], registry["models"][m]["default_variant"]) for m in members],
                        f"set {set_name}")


def start_models(registry, wanted, label):
    """Make exactly `wanted` [(name, model, variant)] hot, in order: one model, or a set's members."""
    for name, model, _ in wanted:
        # Checked before anything stops: a unit started without its artifacts would download inside its
        # readiness timeout (or, offline, fail after the other model was already stopped).
        absent = missing_artifact(registry, model)
        if absent:
            raise SwitchError(f"{name} cannot start: {absent} is not on this host; fetch it with the deploy "
                              "(`pyinfra inventory.py deploy.py --limit HOST`), then switch again")
    keys = {name: api_key(registry, model) for name, model, _ in wanted}
    with Lock(registry["lock_wait_s"]):
        release_cluster(registry)
        containers = running_containers() or {}
        current = [containers.get(model["container"]) for _, model, _ in wanted]
        if len(containers) == len(wanted) and all(
                c and c["variant"] == variant and probe(model, keys[name])[0]
                for c, (name, model, variant) in zip(current, wanted)):
            if all(c["config"] and c["config"] == config_hash(model) for c, (_, model, _) in zip(current, wanted)):
                variant = wanted[0][2] if len(wanted) == 1 else "default"
                say(f"{label} (variant {variant}) is already hot" + (
                    f" on 127.0.0.1:{wanted[0][1]['port']}" if len(wanted) == 1 else ""))
                return 0
            say(f"{label} runs an older rendering of its launch script or unit; restarting it")
        stop_models(registry)
        started = []
        try:
            for name, model, variant in wanted:
                wait_for_room(registry, name)  # each member's own gate, with the members before it loaded
                os.makedirs(VARIANT_DIR, exist_ok=True)
                with open(variant_file(name), "w", encoding="ascii") as handle:
                    handle.write(f"SPARKSTACK_VARIANT={variant}\n")
                cache = prepare_compile_cache(registry, name, model)
                say(f"starting {name} (variant {variant}) via {model['unit']}" + (f", its compile cache {cache}" if cache else ""))
                started.append((name, model))
                result = run("systemctl", "start", model["unit"], timeout=registry["memory_wait_s"] + 300)
                if result.returncode != 0:
                    raise SwitchError(f"systemctl start {model['unit']} failed: {result.stderr.strip()}")
                elapsed = wait_ready(name, model, keys[name])
                say(f"{name} (variant {variant}) is hot on 127.0.0.1:{model['port']}, ready after {elapsed:.0f} s")
                record_start(name, model, variant, cache, elapsed)
        except (SwitchError, Interrupted) as exc:
            # The cleanup itself must not be cut short by a second signal.
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            if started:
                unit = started[-1][1]["unit"]
                logs = last_logs(unit)
                if logs and isinstance(exc, SwitchError):
                    print(f"--- last log lines of {unit} ---\n{logs}\n---", file=sys.stderr)
            # Nothing half-started is left behind: every unit started is stopped and reset, its variant forgotten.
            for name, model in reversed(started):
                run("systemctl", "stop", model["unit"], timeout=model.get("stop_timeout_s", 60) + 60)
                run("systemctl", "reset-failed", model["unit"])
            for name, _, _ in wanted:
                try:
                    os.remove(variant_file(name))
                except FileNotFoundError:
                    pass
            if isinstance(exc, Interrupted):
                what = ", ".join(n for n, _ in started) or "nothing"
                raise SwitchError(f"interrupted by {exc}: stopped the half-started {what}; no model is hot") from None
            raise
        if len(wanted) > 1:
            say(f"{label} is hot: {', '.join(n for n, _, _ in wanted)}")
    return 0


# --- compile caches ------------------------------------------------------

def tree_size(path):
    total = 0
    for top, _, files in os.walk(path):
        for each in files:
            try:
                total += os.lstat(os.path.join(top, each)).st_size
            except OSError:
                pass
    return total


def prepare_compile_cache(registry, name, model):
    """cold or warm: whether the model's compile cache for its image holds anything yet (None: it has none, or it
    could not be read). Makes the directory, then prunes the caches no deployed image uses, oldest first, while all
    of them together are over compile_cache_max_gb: a previous image's cache stays within the bound, for a rollback.
    Bookkeeping: a failure here is said and the start goes on (docker makes a missing mount directory itself)."""
    path = model.get("compile_cache")
    if not path:
        return None
    try:
        warm = os.path.isdir(path) and any(os.scandir(path))
        os.makedirs(path, mode=0o755, exist_ok=True)
        prune_compile_caches(registry)
    except OSError as exc:
        say(f"{name}: its compile cache {path} could not be prepared ({exc}); starting without that check")
        return None
    return "warm" if warm else "cold"


def prune_compile_caches(registry):
    root = COMPILE_CACHE_ROOT
    keep = {m["compile_cache"] for m in registry["models"].values() if m.get("compile_cache")}
    found = []
    for model_dir in (os.scandir(root) if os.path.isdir(root) else []):
        if not model_dir.is_dir(follow_symlinks=False):
            continue
        for key_dir in os.scandir(model_dir.path):
            if key_dir.is_dir(follow_symlinks=False):
                found.append((key_dir.stat(follow_symlinks=False).st_mtime, key_dir.path, tree_size(key_dir.path)))
    total = sum(size for _, _, size in found)
    bound = float(registry.get("compile_cache_max_gb", 20)) * GB
    for _, path, size in sorted(found):
        if total <= bound:
            break
        if path in keep:
            continue
        shutil.rmtree(path, ignore_errors=True)
        total -= size
        say(f"pruned the compile cache {path} ({size / GB:.1f} GB): the caches were over "
            f"{bound / GB:g} GB and no deployed image uses it")


def record_start(name, model, variant, cache, ready_s):
    """How the model's last start by llm-switch went, for status and verify: cold or warm, and the time to ready."""
    starts = contract.read_state(STARTS_STATE)
    starts[name] = {"at": time.time(), "variant": variant, "compile_cache": cache, "ready_s": round(ready_s, 1),
                    "image_key": os.path.basename(model["compile_cache"]) if model.get("compile_cache") else None}
    try:
        contract.write_state(STARTS_STATE, starts)
    except OSError as exc:  # bookkeeping: the model is hot all the same
        say(f"{name}: its start was not recorded in {STARTS_STATE} ({exc})")


# --- wedges ---------------------------------------------------------------

def recover_wedged(registry, name, reason, start=None):
    """The door found `name` wedged (no token from a canary): restart it, at most max_restarts_per_hour times within
    an hour; past that, stop it. The state, the reason and the last log lines go to WEDGE_STATE and the journal.
    (ok, message); ok means the model serves again."""
    model = registry["models"].get(name)
    if model is None or model.get("cluster"):
        return False, f"{name!r} is not a single-node model of this host"
    bound = registry["wedge"]["max_restarts_per_hour"]
    reason = printable(reason)[:400]
    with Lock(registry["lock_wait_s"]):
        state = unit_state(model["unit"])
        if state.get("ActiveState") != "active":
            return False, f"{name} is not running (stopped meanwhile); nothing to recover"
        if start and start != state.get("ActiveEnterTimestampMonotonic"):
            return False, f"{name} was started again since the wedge was seen; nothing to recover"
        now = time.time()
        state = contract.read_state(WEDGE_STATE)
        record = state.get(name) if isinstance(state.get(name), dict) else {}
        restarts = contract.restarts_within_hour(record, now)
        logs = last_logs(model["unit"]).splitlines()
        record = {"at": now, "reason": reason, "last_logs": logs, "restarts": restarts,
                  "wedges": int(record.get("wedges", 0)) + 1}
        # stdout answers the door; stderr is this request's journal (sparkstack-switch-request@.service).
        print(f"llm-switch: {name} is wedged: {reason}", file=sys.stderr, flush=True)
        if logs:
            print(f"--- last log lines of {model['unit']} ---\n" + "\n".join(logs) + "\n---", file=sys.stderr, flush=True)
        # A wedged engine does not shut down when asked: its container is killed first (every process of it, by
        # docker, which also takes a frozen one), so the stop or restart does not wait out its stop timeout.
        run("docker", "kill", model["container"], timeout=60)
        leftovers.shm_leftovers(say)  # what the killed engine leaves in /dev/shm (those in use stay)
        if len(restarts) >= bound:
            run("systemctl", "stop", model["unit"], timeout=model.get("stop_timeout_s", 60) + 60)
            record["state"] = "stopped"
            message = (f"{name} wedged again after {len(restarts)} restart(s) within the hour: stopped it; "
                       f"`llm-switch {name}` starts it again")
        else:
            restarts.append(now)
            record["state"] = "restarting"
            state[name] = record
            contract.write_state(WEDGE_STATE, state)
            say(f"restarting {name} (restart {len(restarts)} of {bound} within the hour)")
            result = run("systemctl", "restart", model["unit"], timeout=registry["memory_wait_s"] + 300)
            try:
                if result.returncode != 0:
                    raise SwitchError(f"systemctl restart {model['unit']} failed: {result.stderr.strip()}")
                elapsed = wait_ready(name, model, api_key(registry, model))
                record["state"] = "restarted"
                message = f"{name} restarted after a wedge and is hot again, ready after {elapsed:.0f} s"
            except SwitchError as exc:
                run("systemctl", "stop", model["unit"], timeout=model.get("stop_timeout_s", 60) + 60)
                record["state"] = "stopped"
                message = f"{name} did not come back after its restart ({exc}): stopped it"
        record["message"] = message
        state[name] = record
        contract.write_state(WEDGE_STATE, state)
    print(f"llm-switch: {message}", file=sys.stderr, flush=True)
    return record["state"] == "restarted", message


def switch_none(registry):
    with Lock(registry["lock_wait_s"]):
        release_cluster(registry)
        stop_models(registry)
    say("no model is hot")
    return 0


# --- status -------------------------------------------------------------

def variant_in_use(name):
    try:
        with open(os.path.join(VARIANT_DIR, f"{name}.variant"), encoding="ascii") as handle:
            return handle.read().strip().split("=", 1)[1]
    except (OSError, IndexError):
        return None


def guard_status():
    """The memory guard's service state and its last action (from its state file)."""
    active = run("systemctl", "is-active", "sparkstack-memory-guard.service").stdout.strip() or "unknown"
    state = contract.read_state(GUARD_STATE)
    return {"service": active, "floor_gb": state.get("floor_gb"), "last_action": state.get("last_action")}


def collect_status(registry):
    containers = running_containers()
    docker_readable = containers is not None
    total, available = meminfo_gb()
    models = []
    for name, model in registry["models"].items():
        state = unit_state(model["unit"])
        if docker_readable:
            container = containers.get(model["container"])
        else:
            # Without access to docker (not root), the unit's state stands in for the container's.
            container = {"variant": variant_in_use(name) or model["default_variant"]} if state.get("ActiveState") == "active" else None
        if container and model.get("cluster") and model["cluster"]["rank"] != 0:
            # A headless worker rank serves no API; the head's /v1/models is the group's readiness.
            ready, detail = state.get("ActiveState") == "active", f"headless rank {model['cluster']['rank']}; the API is on the head"
        else:
            ready, detail = probe(model, api_key(registry, model), timeout=2.0) if container else (False, "no container")
        # systemd 252 keeps Result=exit-code when it refuses a restart, so count the restarts as well.
        restarts = int(state.get("NRestarts") or 0)
        start_limit_hit = state.get("ActiveState") == "failed" and (
            state.get("Result") == "start-limit-hit" or restarts >= int(state.get("StartLimitBurst") or 1 << 30))
        models.append({
            "name": name,
            "unit": model["unit"],
            "unit_state": state.get("ActiveState", "unknown"),
            "unit_substate": state.get("SubState", "unknown"),
            "enabled": state.get("UnitFileState", "unknown"),
            "restarts": restarts,
            "start_limit_hit": start_limit_hit,
            "container": model["container"] if container else None,
            "container_source": "docker" if docker_readable else "systemd (docker not readable)",
            "variant": container["variant"] if container else None,
            "port": model["port"],
            "uptime_s": uptime_s(state),
            "ready": ready,
            "readiness": detail,
            # Whether the running container was started from the launch script and unit now on disk.
            "config": (None if not container or not docker_readable else
                       "current" if container.get("config") and container["config"] == config_hash(model) else "stale"),
        })
    hot = [m for m in models if m["container"]]
    lent = lent_to(registry) if docker_readable else None
    cluster = None
    if lent:
        name, model = lent
        cluster = {"model": name, "rank": model["cluster"]["rank"], "head": model["cluster"]["head"],
                   "head_address": model["cluster"]["head_address"], "nodes": model["cluster"]["nodes"]}
    return {
        "cluster": cluster,
        "cluster_last": read_json(CLUSTER_LAST),
        "hot": hot_label(registry, [m["name"] for m in hot]),
        "hot_models": [m["name"] for m in hot],
        "sets": {name: s["members"] for name, s in (registry.get("sets") or {}).items()},
        "memory": {"total_gb": round(total, 1), "available_gb": round(available, 1), "used_gb": round(total - available, 1)},
        "memory_guard": guard_status(),
        "models": models,
        "wedges": contract.read_state(WEDGE_STATE),
        "starts": contract.read_state(STARTS_STATE),
    }


def hot_label(registry, names):
    """What is hot: one model's name, a set's name when exactly its members run, None, or CONFLICT."""
    if len(names) <= 1:
        return names[0] if names else None
    sets = {name: s["members"] for name, s in (registry.get("sets") or {}).items()}
    return contract.set_running(sets, names) or "CONFLICT"


def printable(text):
    """TEXT without control characters: what another node wrote (the cluster's names and messages) must not
    drive this terminal (escape sequences, carriage returns)."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def print_status(status):
    memory = status["memory"]
    if status["hot"] == "CONFLICT":
        print(f"hot: CONFLICT, more than one model is running: {', '.join(status['hot_models'])}")
    elif status["hot"]:
        if status["hot"] in status.get("sets", {}):
            print(f"hot: set {status['hot']} ({', '.join(status['hot_models'])})")
        for m in status["models"]:
            if m["name"] not in status["hot_models"]:
                continue
            up = f"up {m['uptime_s']} s" if m["uptime_s"] is not None else "not active"
            print(f"{'  ' if len(status['hot_models']) > 1 else 'hot: '}{m['name']} (variant {m['variant']}) on "
                  f"127.0.0.1:{m['port']}, {'ready' if m['ready'] else 'NOT ready: ' + m['readiness']}, {up}")
    else:
        print("hot: none")
    for m in status["models"]:
        if m["start_limit_hit"]:
            print(f"failed: {m['name']} kept crashing and hit its restart limit after {m['restarts']} restarts; "
                  f"see `journalctl -u {m['unit']}`, then `llm-switch {m['name']}` to try again")
        if m["config"] == "stale":
            print(f"stale: {m['name']} runs an older rendering of its launch script or unit; "
                  f"`llm-switch {m['name']}` restarts it with the deployed one")
    cluster = status.get("cluster")
    if cluster:
        others = ", ".join(f"{n['name']} ({n['address']})" for n in cluster["nodes"])
        role = "the head" if cluster["rank"] == 0 else f"rank {cluster['rank']}, lent to the head {cluster['head']} ({cluster['head_address']})"
        print(printable(f"cluster: {cluster['model']} runs on {len(cluster['nodes'])} nodes: {others}; this node is {role}"))
    elif status.get("cluster_last"):
        last = status["cluster_last"]
        print(printable(f"cluster: {last['model']} is not running: {last['message']}") +
              f" ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last['at']))})")
    print(f"memory: {memory['used_gb']} GB used, {memory['available_gb']} GB available of {memory['total_gb']} GB")
    guard = status["memory_guard"]
    floor = f", stops the hot model below {guard['floor_gb']:g} GB" if guard["floor_gb"] is not None else ""
    print(f"memory guard: {guard['service']}{floor}")
    if guard["last_action"]:
        print(f"last action: {guard['last_action']['model']} {guard['last_action']['message']}")
    for name, wedge in sorted((status.get("wedges") or {}).items()):
        recent = len(contract.restarts_within_hour(wedge))
        print(printable(f"wedge: {name} {wedge.get('state')} "
                        f"({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(wedge.get('at') or 0))}, "
                        f"{recent} restart(s) within the hour): {wedge.get('reason')}"))
    for name, start in sorted((status.get("starts") or {}).items()):
        if start.get("compile_cache"):
            print(f"last start: {name} {start['compile_cache']} (compile cache {start.get('image_key')}), "
                  f"ready after {start.get('ready_s')} s")
    print(f"{'MODEL':<12}{'UNIT':<28}{'STATE':<25}{'RESTARTS':<10}{'CONTAINER':<24}READY")
    for m in status["models"]:
        state = f"{m['unit_state']}/{m['unit_substate']}"
        if m["start_limit_hit"]:
            state = "failed/start-limit-hit"
        print(f"{m['name']:<12}{m['unit']:<28}{state:<25}{m['restarts']:<10}{m['container'] or '-':<24}"
              f"{'yes' if m['ready'] else '-'}")


def serve_request(registry):
    """One switch request from the front door, on the switch socket (sparkstack-switch-request.socket, which
    only the door's group may open): a model name or alias on stdin, the switch's progress on stdout, then a
    JSON line {"ok", "model", "message"}. A deployed model, or `none` (the door's /unload and idle TTL); never a
    variant or a flag."""
    word = sys.stdin.readline(256).strip()
    if word.startswith("wedged "):
        # `wedged NAME [START]`: START, the unit start the door saw it wedged in (0: it could not read it); the reason
        # on the next line, which cannot move START whatever it holds.
        _, name, *start = word.split(" ", 2)
        start = start[0] if start and start[0] != "0" else None
        reason = sys.stdin.readline(1024).strip() or "no reason given"
        ok, message = recover_wedged(registry, name, reason, start)
        print(json.dumps({"ok": ok, "model": name, "message": message}), flush=True)
        return 0 if ok else 1
    if not registry["frontdoor"]["on_demand"]:
        # The socket listens for the wedge watch alone: the door switches nothing else.
        print(json.dumps({"ok": False, "model": word[:64], "message": "on-demand switching is off on this host "
                          "(sparkstack_frontdoor_on_demand)"}), flush=True)
        return 1
    if word == "none":
        say("stop of the hot model asked by the front door")
        code = switch_none(registry)
        print(json.dumps({"ok": code == 0, "model": None, "message": "no model is hot" if code == 0 else f"exit {code}"}),
              flush=True)
        return code
    try:
        name = word if resolve_target(registry, word) else resolve(registry, word)[0]
        say(f"switch to {name} asked by the front door")
        code = switch_to(registry, name, None)
        result = {"ok": code == 0, "model": name, "message": f"{name} is hot" if code == 0 else f"exit {code}"}
    except (SwitchError, Interrupted) as exc:
        print(f"llm-switch: {exc}", file=sys.stderr, flush=True)
        result = {"ok": False, "model": word, "message": str(exc)}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="llm-switch", description="Keep exactly one model (or one set) hot.")
    parser.add_argument("target", help="a model name or alias, a set, 'none', 'status', or 'serve-request' (the front door's socket)")
    parser.add_argument("--variant", help="launch variant (default: the profile's default)")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    args = parser.parse_args(argv)
    try:
        registry = load_registry()
        if args.target == "status":
            status = collect_status(registry)
            if args.json:
                print(json.dumps(status, indent=2))
            else:
                print_status(status)
            return 0
        if os.geteuid() != 0:
            raise SwitchError("switching models needs root; run it with sudo (anyone may run 'llm-switch status')")
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, on_signal)
        if args.target == "serve-request":
            return serve_request(registry)
        if args.target == "none":
            return switch_none(registry)
        return switch_to(registry, args.target, args.variant)
    except Interrupted as exc:
        print(f"llm-switch: interrupted by {exc} before any model was started", file=sys.stderr)
        return 130
    except SwitchError as exc:
        print(f"llm-switch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llm-switch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
