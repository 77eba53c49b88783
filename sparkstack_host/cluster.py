"""sparkstack-cluster: the group switch for a model that runs as one rank per node of a cluster group.

On the head (rank 0), through llm-switch:
  sparkstack-cluster start NAME [--variant V]   stop every local model on every node, check that every node
                                                holds the same image and snapshot, start the ranks (native:
                                                workers first; Ray: the head's Ray first, then the workers),
                                                wait for the head's /v1/models; on any failure stop
                                                every rank on every node and print the failing node's log
  sparkstack-cluster stop [--reason TEXT]       stop every rank on every node
  sparkstack-cluster watch NAME                 (a transient unit) a rank that ends takes the model down everywhere

On a worker, only as the forced command of the head's key (authorized_keys: restrict,from=HEAD,command=...):
  sparkstack-cluster member    runs what SSH_ORIGINAL_COMMAND asks: prepare NAME | start NAME VARIANT |
                               stop NAME REASON | state NAME | logs NAME | release NAME MESSAGE

Why a forced command: the head needs to start and stop one unit on each worker and read its state; a key
that can run only this program (and only from the head's interconnect address) gives it exactly that, where
root ssh between nodes would give the head every worker. Installed by sparkstack from files/sparkstack-cluster.
"""

import argparse
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time

from sparkstack_host import contract, secrets
from sparkstack_host import switch as sw

# This node's part in a running cluster model; llm-switch refuses local models while it exists.
LENT_PATH = contract.CLUSTER_LENT
# How the last cluster model on this node ended (status shows it).
LAST_PATH = contract.CLUSTER_LAST
WATCH_UNIT = "sparkstack-cluster-watch.service"
WATCH_EVERY_S = 2
PROGRESS_EVERY_S = 10
SSH_TIMEOUT_S = 30
# A Ray token is Ray's own (a hex string); a line longer than this is not one.
RAY_TOKEN_MAX = 4096


SwitchError = sw.SwitchError


def say(message):
    print(f"llm-switch: {message}", flush=True)


write_json = contract.write_state


read_json = sw.read_json


def cluster_models(registry):
    return {name: m for name, m in registry["models"].items() if m.get("cluster")}


def artifacts_fingerprint(model):
    """What every node must hold alike: the pinned image and every locked snapshot file."""
    document = {"image": model["image"], "snapshots": model.get("snapshots", [])}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def image_id(image):
    result = sw.run("docker", "image", "inspect", "--format", "{{.Id}}", image)
    return result.stdout.strip() if result.returncode == 0 else None


# --- the member side (every node; on workers reached through the forced command) -------------------

def member_prepare(registry, name):
    """Stop every local model (each node's memory gate applies at start), check the artifacts, lend the node."""
    model = cluster_model(registry, name)
    absent = sw.missing_artifact(registry, model)
    if absent:
        raise SwitchError(f"{absent} is not on this node; run the deploy for the whole group")
    with sw.Lock(registry["lock_wait_s"]):
        sw.stop_models(registry)
        cluster = model["cluster"]
        write_json(LENT_PATH, {"model": name, "rank": cluster["rank"], "head": cluster["head"],
                               "head_address": cluster["head_address"], "since": time.time()})
    return {"fingerprint": artifacts_fingerprint(model), "image_id": image_id(model["image"])}


def cluster_model(registry, name):
    model = registry["models"].get(name)
    if not model or not model.get("cluster"):
        raise SwitchError(f"{name} is not a cluster model on this node; deploy the group first")
    return model


def member_start(registry, name, variant, ray_token=None):
    """Start this node's rank. Over Ray a worker is handed the group's Ray token first (on ssh's stdin, never an
    argument), into its secrets file, where its unit reads it like any secret."""
    model = cluster_model(registry, name)
    if variant not in model["variants"]:
        raise SwitchError(f"{name} has no variant {variant!r}")
    if ray_token:
        if model["cluster"].get("backend") != "ray":
            raise SwitchError(f"{name} does not run over Ray; it takes no Ray token")
        try:
            secrets.set_value(registry["secrets_file"], contract.RAY_TOKEN_ENV, ray_token)
        except secrets.SecretsError as exc:
            raise SwitchError(f"the Ray token from the head: {exc}") from None
    lent = read_json(LENT_PATH)
    if not lent or lent.get("model") != name:
        raise SwitchError(f"this node was not prepared for {name}; the head prepares every node first")
    os.makedirs(sw.VARIANT_DIR, exist_ok=True)
    with open(sw.variant_file(name), "w", encoding="ascii") as handle:
        handle.write(f"SPARKSTACK_VARIANT={variant}\n")
    # Returns once the memory gate has passed and the launch script runs (Type=exec).
    result = sw.run("systemctl", "start", model["unit"], timeout=registry["memory_wait_s"] + 300)
    if result.returncode != 0:
        raise SwitchError(f"systemctl start {model['unit']} failed: {result.stderr.strip()}")
    return {"started": True}


def member_state(registry, name):
    model = cluster_model(registry, name)
    state = sw.unit_state(model["unit"])
    # docker knows at once that a container died; the unit follows only when `docker run` has noticed.
    running = sw.run("docker", "inspect", "--format", "{{.State.Running}}", model["container"]).stdout.strip() == "true"
    return {"active": state.get("ActiveState"), "sub": state.get("SubState"), "result": state.get("Result"),
            "container_running": running}


def member_logs(registry, name):
    return {"logs": sw.last_logs(cluster_model(registry, name)["unit"])}


def member_stop(registry, name, reason):
    model = cluster_model(registry, name)
    if model:
        sw.run("systemctl", "stop", model["unit"], timeout=model.get("stop_timeout_s", 60) + 60)
        sw.run("systemctl", "reset-failed", model["unit"])
        try:
            os.remove(sw.variant_file(name))
        except FileNotFoundError:
            pass
    if reason:
        write_json(LAST_PATH, {"model": name, "message": reason, "at": time.time()})
    lent = read_json(LENT_PATH)
    if lent and lent.get("model") == name:
        try:
            os.remove(LENT_PATH)
        except FileNotFoundError:  # llm-switch drops a marker whose rank no longer runs
            pass
    return {"stopped": True}


MEMBER_VERBS = {
    "prepare": lambda r, a: member_prepare(r, a[0]),
    "start": lambda r, a, token=None: member_start(r, a[0], a[1], token),
    "state": lambda r, a: member_state(r, a[0]),
    "logs": lambda r, a: member_logs(r, a[0]),
    "stop": lambda r, a: member_stop(r, a[0], " ".join(a[1:])),
}


def member(words, stdin=None):
    """One verb, answered as one JSON line: {"ok": true, ...} or {"ok": false, "error": ...}. `start` reads the
    group's Ray token from stdin (one line, empty for the native backend)."""
    registry = sw.load_registry()
    try:
        words = shlex.split(words)
    except ValueError as exc:
        raise SwitchError(f"member: unreadable request: {exc}") from None
    if not words or words[0] not in MEMBER_VERBS:
        raise SwitchError(f"member: unknown request {' '.join(words)!r} (known: {', '.join(MEMBER_VERBS)})")
    try:
        if words[0] == "start" and stdin is not None:
            answer = MEMBER_VERBS["start"](registry, words[1:], stdin.readline(RAY_TOKEN_MAX).strip() or None)
        else:
            answer = MEMBER_VERBS[words[0]](registry, words[1:])
    except (IndexError, KeyError) as exc:
        raise SwitchError(f"member: bad request {' '.join(words)!r}: {exc}") from None
    print(json.dumps({"ok": True, **answer}), flush=True)


# --- the head side ----------------------------------------------------------------------------------

class Node:
    def __init__(self, entry, cluster, local):
        self.name, self.rank, self.address = entry["name"], entry["rank"], entry["address"]
        self.local = local
        self.cluster = cluster

    def ask(self, registry, *words, timeout=SSH_TIMEOUT_S, stdin=""):
        """Run a member verb here or on the worker (through the forced command); the parsed answer. `stdin` goes to
        the worker's command (never this process's own stdin, which may be a terminal)."""
        if self.local:
            try:
                return {"ok": True, **MEMBER_VERBS[words[0]](registry, list(words[1:]))}
            except SwitchError as exc:
                return {"ok": False, "error": exc.args[0]}
            except (OSError, subprocess.SubprocessError) as exc:
                return {"ok": False, "error": f"{self.name}: {type(exc).__name__}: {exc}"}
        command = ["ssh", "-i", self.cluster["key"], "-o", f"UserKnownHostsFile={self.cluster['known_hosts']}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                   "-o", "LogLevel=ERROR", f"root@{self.address}", shlex.join(words)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=stdin)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"no answer from {self.name} ({self.address}) within {timeout} s"}
        lines = result.stdout.strip().splitlines()
        if result.returncode == 0 and lines:
            try:
                return json.loads(lines[-1])
            except ValueError:
                pass
        error = (result.stderr.strip().splitlines() or lines or [f"exit {result.returncode}"])[-1]
        return {"ok": False, "error": f"{self.name} ({self.address}): {error.removeprefix('llm-switch: ')}"}

    def __str__(self):
        return f"{self.name} (rank {self.rank}, {self.address})"


def nodes_of(model):
    cluster = model["cluster"]
    return [Node(entry, cluster, entry["rank"] == cluster["rank"]) for entry in cluster["nodes"]]


def require_head(name, model):
    cluster = model["cluster"]
    if cluster["rank"] != 0:
        raise SwitchError(f"{name} is a cluster model: switch it on its head, {cluster['head']} "
                          f"({cluster['head_address']}), with `llm-switch {name}`")


def stop_everywhere(registry, name, model, reason):
    """Stop every rank on every node (workers first, the head last), whatever state each is in."""
    failures = []
    for node in sorted(nodes_of(model), key=lambda n: -n.rank):
        answer = node.ask(registry, "stop", name, reason or "", timeout=model.get("stop_timeout_s", 60) + 90)
        if not answer.get("ok"):
            failures.append(f"{node}: {answer.get('error')}")
    return failures


def ended_ranks(registry, name, model, started=False, nodes=None):
    """[(node, problem)] for every rank that is not running (or whose node does not answer), in rank order;
    once `started`, a rank whose container is gone has ended too. When one rank dies its peers follow within
    moments, so by the time anyone looks several may have ended. `nodes`: only these (default: every node)."""
    ended = []
    for node in nodes if nodes is not None else nodes_of(model):
        answer = node.ask(registry, "state", name)
        if not answer.get("ok"):
            ended.append((node, answer.get("error")))
        elif answer.get("active") not in ("active", "activating", "reloading"):
            ended.append((node, f"{answer.get('active')}/{answer.get('sub')}, {answer.get('result')}"))
        elif started and not answer.get("container_running"):
            ended.append((node, "its container is gone"))
    return ended


def failing_logs(registry, name, node):
    answer = node.ask(registry, "logs", name)
    return answer.get("logs") if answer.get("ok") else None


def ray_token(registry):
    """The group's Ray token from the head's secrets file (the deploy made it), or SwitchError saying so."""
    try:
        token = secrets.read(registry["secrets_file"], [contract.RAY_TOKEN_ENV]).get(contract.RAY_TOKEN_ENV)
    except secrets.SecretsError as exc:
        raise SwitchError(str(exc)) from None
    if not token:
        raise SwitchError(f"{registry['secrets_file']} has no {contract.RAY_TOKEN_ENV}, which a Ray cluster needs; "
                          "deploy the group again (the deploy makes it on the head)")
    return token


def start(registry, name, variant):
    model = registry["models"][name]
    require_head(name, model)
    variant = variant or model["default_variant"]
    if variant not in model["variants"]:
        raise SwitchError(f"{name} has no variant {variant!r} (variants: {', '.join(model['variants'])})")
    nodes = nodes_of(model)
    key = sw.api_key(registry, model)
    if (running_cluster_model(registry) == name and sw.variant_in_use(name) == variant
            and not ended_ranks(registry, name, model, started=True) and sw.probe(model, key)[0]):
        if sw.run("systemctl", "is-active", WATCH_UNIT).stdout.strip() != "active":
            start_watch(name)
        say(f"{name} (variant {variant}) is already hot on {len(nodes)} nodes, API on the head port {model['port']}")
        return 0
    sw.run("systemctl", "stop", WATCH_UNIT)
    say(f"starting cluster model {name} (variant {variant}) on {len(nodes)} nodes: "
        + ", ".join(str(n) for n in nodes))
    started_at = time.monotonic()
    try:
        # Every node stops its local models and checks its artifacts before any rank starts.
        fingerprints = {}
        for node in nodes:
            answer = node.ask(registry, "prepare", name, timeout=registry["lock_wait_s"] + 300)
            if not answer.get("ok"):
                raise SwitchError(f"{node} cannot take part: {answer.get('error')}")
            fingerprints[node.name] = (answer["fingerprint"], answer["image_id"])
        if len(set(fingerprints.values())) != 1 or None in {i for _, i in fingerprints.values()}:
            detail = "; ".join(f"{n}: artifacts {f}, image {i}" for n, (f, i) in fingerprints.items())
            raise SwitchError(f"the nodes do not hold the same image and snapshot ({detail}); "
                              "deploy the group with one lock")
        say(f"every node holds image {(next(iter(fingerprints.values()))[1] or '?')[:19]} and the same snapshot; "
            "local models stopped")
        # vLLM's native rank 0 waits for the others at its master port, so the workers go first; over Ray the
        # head starts the Ray cluster that the workers then join.
        ray = model["cluster"].get("backend") == "ray"
        token = ray_token(registry) if ray else ""
        for node in sorted(nodes, key=lambda n: n.rank if ray else -n.rank):
            asked_at = time.time()
            answer = node.ask(registry, "start", name, variant, timeout=registry["memory_wait_s"] + 330,
                              stdin=token + "\n")
            if not answer.get("ok"):
                raise SwitchError(f"rank {node.rank} did not start on {node}: {answer.get('error')}", [node])
            say(f"rank {node.rank} started on {node.name}")
            if ray and node.rank == 0:
                wait_for_ray_head(registry, name, model, asked_at)
        wait_ready(registry, name, model, key)
    except (SwitchError, sw.Interrupted) as exc:
        failing = exc.args[1] if isinstance(exc, SwitchError) and len(exc.args) > 1 else []
        message = exc.args[0] if isinstance(exc, SwitchError) else f"interrupted by {exc}"
        for signum in (sw.signal.SIGINT, sw.signal.SIGTERM, sw.signal.SIGHUP):
            sw.signal.signal(signum, sw.signal.SIG_IGN)
        for node in failing:
            logs = failing_logs(registry, name, node)
            if logs:
                print(f"--- last log lines of {model['unit']} on {node} ---\n{logs}\n---", file=sys.stderr)
        say(f"stopping every rank of {name} on every node")
        problems = stop_everywhere(registry, name, model, f"start failed: {message}")
        if problems:
            message += "; and the stop did not finish: " + "; ".join(problems)
        raise SwitchError(f"{name} did not start: {message}; no cluster model is running") from None
    elapsed = time.monotonic() - started_at
    start_watch(name)
    say(f"{name} (variant {variant}) is hot on {len(nodes)} nodes, API on the head {model['cluster']['head']} "
        f"port {model['port']}, ready after {elapsed:.0f} s")
    return 0


def start_watch(name):
    watch = sw.run("systemd-run", f"--unit={WATCH_UNIT}", "--collect", "--quiet",
                   "--description=sparkstack: a rank that ends takes the cluster model down everywhere",
                   sys.executable, os.path.abspath(sys.argv[0]), "watch", name)
    if watch.returncode != 0:
        say(f"warning: the watch did not start ({watch.stderr.strip()}); a rank that ends will not stop the others")


# What `ray start` prints once its node has registered (ray/scripts/scripts.py, Ray 2.x).
RAY_STARTED = "Ray runtime started."
# Without that line (another Ray's wording), the workers go this long after the head's port opened.
RAY_HEAD_SETTLE_S = 60


def ray_head_started(unit, since):
    log = sw.run("journalctl", "--unit", unit, "--since", f"@{int(since)}", "--no-pager", "--output", "cat").stdout
    return RAY_STARTED in log


def wait_for_ray_head(registry, name, model, since):
    """Until the head's Ray is up: its port answers and its `ray start` has finished (the head's raylet has
    registered). A worker's `ray start --address` gives up on a head that is not there yet, and a worker that
    starts while the head still starts its own processes may miss Ray's 30 s registration window on a busy
    node. Bounded by the readiness timeout; fails at once if the head's rank ends."""
    cluster = model["cluster"]
    address = (cluster["head_address"], cluster["ray_port"])
    timeout = model["readiness_timeout_s"]
    head = next(n for n in nodes_of(model) if n.rank == 0)
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY_S
    listening_since = None
    while True:
        try:
            socket.create_connection(address, timeout=2).close()
            listening_since = listening_since or time.monotonic()
            if ray_head_started(model["unit"], since):
                say(f"the head's Ray is up at {address[0]}:{address[1]} after {time.monotonic() - started:.0f} s")
                return
            if time.monotonic() - listening_since >= RAY_HEAD_SETTLE_S:
                say(f"the head's Ray listens at {address[0]}:{address[1]}; its log never said {RAY_STARTED!r}, so "
                    f"the workers go {RAY_HEAD_SETTLE_S} s after its port opened")
                return
            detail = "its port answers, `ray start` has not finished"
        except OSError as exc:
            detail = str(exc)
        ended = ended_ranks(registry, name, model, nodes=[head])
        if ended:
            raise SwitchError(f"rank 0 on {ended[0][0].name} ended ({ended[0][1]}) while starting Ray",
                              [node for node, _ in ended])
        elapsed = time.monotonic() - started
        if elapsed >= timeout:
            raise SwitchError(f"the head's Ray was not up at {address[0]}:{address[1]} after {timeout} s ({detail})",
                              [head])
        if time.monotonic() >= next_report:
            say(f"waiting for the head's Ray at {address[0]}:{address[1]}: {elapsed:.0f}/{timeout} s ({detail})")
            next_report += PROGRESS_EVERY_S
        time.sleep(1)


def wait_ready(registry, name, model, key):
    timeout = model["readiness_timeout_s"]
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY_S
    next_ranks = started
    detail = "not probed yet"
    while True:
        elapsed = time.monotonic() - started
        if time.monotonic() >= next_ranks:
            ended = ended_ranks(registry, name, model)
            if ended:
                what = "; ".join(f"rank {node.rank} on {node.name} ended ({problem})" for node, problem in ended)
                # Every ended rank's logs: a peer that lost the failing rank ends too, and either may be seen first.
                raise SwitchError(f"{what} while loading", [node for node, _ in ended])
            next_ranks = time.monotonic() + 3
        ready, detail = sw.probe(model, key)
        if ready:
            return elapsed
        if elapsed >= timeout:
            head = next(n for n in nodes_of(model) if n.rank == 0)
            raise SwitchError(f"the head's /v1/models did not list {model['served_model_name']} after {timeout} s "
                              f"({detail})", [head])
        if time.monotonic() >= next_report:
            say(f"waiting for {name} on {len(model['cluster']['nodes'])} nodes: {elapsed:.0f}/{timeout} s ({detail})")
            next_report += PROGRESS_EVERY_S
        time.sleep(1)


def running_cluster_model(registry):
    """The cluster model this node is lent to, from the lent marker, else None."""
    lent = read_json(LENT_PATH)
    if lent and lent.get("model") in registry["models"]:
        return lent["model"]
    return None


def stop(registry, reason=None):
    name = running_cluster_model(registry)
    if name is None:
        return 0
    model = registry["models"][name]
    require_head(name, model)
    sw.run("systemctl", "stop", WATCH_UNIT)
    say(f"stopping cluster model {name} on every node")
    problems = stop_everywhere(registry, name, model, reason or f"stopped with llm-switch on {model['cluster']['head']}")
    if problems:
        raise SwitchError("the stop did not finish: " + "; ".join(problems))
    return 0


def watch(registry, name):
    """Runs while the cluster model is hot: any rank that ends (crash, OOM kill, memory guard, a node gone)
    takes every rank down, so no rank is left holding memory without serving."""
    model = registry["models"][name]
    seen = set()
    while True:
        time.sleep(WATCH_EVERY_S)
        ended = ended_ranks(registry, name, model, started=True)
        # Seen twice in a row: one ssh answer lost on a busy interconnect must not take a serving model down.
        confirmed = [(node, problem) for node, problem in ended if node.rank in seen]
        seen = {node.rank for node, _ in ended}
        if not confirmed:
            continue
        reason = "; ".join(f"rank {node.rank} on {node.name} ended ({problem})" for node, problem in ended)
        reason += "; every rank was stopped"
        say(f"{name}: {reason}")
        for node, _ in ended:
            logs = failing_logs(registry, name, node)
            if logs:
                print(f"--- last log lines of {model['unit']} on {node} ---\n{logs}\n---", flush=True)
        try:
            with sw.Lock(registry["lock_wait_s"]):
                stop_everywhere(registry, name, model, reason)
        except SwitchError:  # a switch that holds the lock that long must not keep dead ranks' peers alive
            stop_everywhere(registry, name, model, reason)
        return 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="sparkstack-cluster", description="The group switch for cluster models.")
    parser.add_argument("verb", choices=("start", "stop", "watch", "member"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("--variant")
    parser.add_argument("--reason")
    args = parser.parse_args(argv)
    try:
        if args.verb == "member":
            # Only what the forced command passes on: never a shell.
            return member(os.environ.get("SSH_ORIGINAL_COMMAND", ""), sys.stdin)
        registry = sw.load_registry()
        for signum in (sw.signal.SIGINT, sw.signal.SIGTERM, sw.signal.SIGHUP):
            sw.signal.signal(signum, sw.on_signal)
        if args.verb == "stop":
            return stop(registry, args.reason)
        name, _ = sw.resolve(registry, args.name or "")
        if args.verb == "watch":
            return watch(registry, name)
        return start(registry, name, args.variant)
    except SwitchError as exc:
        if args.verb == "member":
            print(json.dumps({"ok": False, "error": exc.args[0]}), flush=True)
            return 1
        print(f"llm-switch: {exc.args[0]}", file=sys.stderr)
        return 1
    except sw.Interrupted as exc:
        print(f"llm-switch: interrupted by {exc}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
