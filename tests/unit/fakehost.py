"""A fake Spark for the host package's unit tests: systemd units, docker containers, /proc/meminfo and a clock,
all in memory, as Ansible tests its systemd_service module without a host.

The host programs run unchanged. Only what they ask of the outside lands here:
- `subprocess.run` (systemctl, docker, journalctl, the memory gate, the group switch);
- the clock (`time.monotonic`, `time.sleep`, `time.time`), so a 900-s readiness timeout takes no real time;
- `/proc/meminfo` (a file this host rewrites as models start and stop);
- the engine's HTTP probe (the stand-in's HTTP is tested in tests/unit/test_frontdoor.py and on the test hosts).
Every path of the contract points into the test's own directory.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import subprocess
import time
import types
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from sparkstack_host import cluster, fetch, leftovers, memguard, switch
from tests.unit.test_render import rendering_for

@functools.cache
def rendered_registry() -> str:
    """The spark group's models.json as the kit renders it (unpinned: the fake host pins it)."""
    return next(f for f in rendering_for("spark", pinned=False).files if f.kind == "registry").content


SWITCH_STATE_NAMES = ("LOCK_DIR", "LOCK_PATH", "VARIANT_DIR", "GUARD_STATE", "CLUSTER_LENT", "CLUSTER_LAST",
                      "WEDGE_STATE", "STARTS_STATE", "COMPILE_CACHE_ROOT")


class FakeProcess:
    def __init__(self, lines: list[str], code: int):
        self.stdout = iter(line + "\n" for line in lines)
        self.code = code

    def wait(self) -> int:
        return self.code


@dataclass
class Unit:
    active: str = "inactive"
    sub: str = "dead"
    result: str = "success"
    restarts: int = 0
    active_since: float = 0.0
    enabled: str = "disabled"


@dataclass
class Engine:
    """How a model's engine behaves here: seconds until it serves, whether it dies while loading, the memory it
    takes, and how long after its container is gone the memory comes back (engines on a Spark: 30-120 s)."""

    load_s: float = 5.0
    dies_while_loading: bool = False
    uses_gb: float | None = None
    returns_memory_after_s: float = 0.0


@dataclass
class Container:
    model: str
    variant: str
    config: str
    started: float
    uses_gb: float


@dataclass
class FakeHost:
    root: Path
    monkeypatch: object
    total_gb: float = 119.7
    os_used_gb: float = 6.0
    now: float = 1000.0
    units: dict[str, Unit] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    engines: dict[str, Engine] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    # The environment a streamed command (Popen) was given, by its index in `commands`.
    environments: dict[int, dict | None] = field(default_factory=dict)
    # (when, GB) of memory an engine still holds after its container went away
    late_memory: list[tuple[float, float]] = field(default_factory=list)
    extra_used_gb: float = 0.0
    # Shared memory an engine left resident, which this host's MemAvailable leaves in (the gate takes it out).
    shmem_gb: float = 0.0
    # The registry and the hub, as the fetcher meets them: the next N pulls fail; the hub's exit code.
    pulls_fail: int = 0
    image_files: str = ""
    hub_exit: int = 0

    def __post_init__(self):
        self.registry_path = self.root / "models.json"
        self.registry = self._registry()
        self.registry_path.write_text(json.dumps(self.registry))
        for name, model in self.registry["models"].items():
            self.units[model["unit"]] = Unit()
            self.engines[name] = Engine()
        self._patch()
        self.write_meminfo()

    # --- what the host has ---------------------------------------------------

    def _registry(self) -> dict:
        registry = json.loads(rendered_registry())
        registry.update(model_cache_dir=str(self.root / "cache"), secrets_file=str(self.root / "secrets.env"),
                        memguard="/fake/sparkstack-memguard", cluster_switch="/fake/sparkstack-cluster")
        (self.root / "secrets.env").write_text("")
        for name, model in registry["models"].items():
            # A deployed host has its images pulled and its snapshots fetched (the deploy's job, not the switch's).
            model["image"] = f"fake-registry/{name}-engine@pinned"
            self.images.add(model["image"])
            model["compile_cache"] = str(self.root / "compile" / name / model["compile_cache"].rsplit("/", 1)[1])
            for kind in ("launch_script", "unit_path"):
                path = self.root / "rendered" / Path(model[kind]).name
                path.parent.mkdir(exist_ok=True)
                path.write_text(f"{kind} of {name}\n")
                model[kind] = str(path)
            for number, snapshot in enumerate(model["snapshots"]):
                # What the lock would pin: a commit and the files the deploy fetched.
                snapshot.update(commit=f"{number:x}" * 40, files=["config.json", "model.safetensors"])
                base = self.snapshot_dir(registry, snapshot)
                for file_name in snapshot["files"]:
                    (base / file_name).parent.mkdir(parents=True, exist_ok=True)
                    (base / file_name).write_bytes(b"weights")
        return registry

    def snapshot_dir(self, registry: dict, snapshot: dict) -> Path:
        repo = snapshot["repo"].replace("/", "--")
        return Path(registry["model_cache_dir"]) / "hub" / f"models--{repo}" / "snapshots" / snapshot["commit"]

    def model(self, name: str) -> dict:
        return self.registry["models"][name]

    def rewrite_registry(self) -> None:
        self.registry_path.write_text(json.dumps(self.registry))

    # --- memory ----------------------------------------------------------------

    def available_gb(self) -> float:
        late = sum(gb for until, gb in self.late_memory if until > self.now)
        used = self.os_used_gb + self.extra_used_gb + late + sum(c.uses_gb for c in self.containers.values())
        return max(0.0, self.total_gb - used)

    def write_meminfo(self) -> None:
        kib = 1024 * 1024
        self.meminfo.write_text(f"MemTotal:       {int(self.total_gb * kib)} kB\n"
                                f"MemFree:        {int(self.available_gb() * kib * 0.9)} kB\n"
                                f"MemAvailable:   {int(self.available_gb() * kib)} kB\n"
                                f"AnonPages:      {int((self.total_gb - self.available_gb()) * kib)} kB\n"
                                f"Shmem:          {int(self.shmem_gb * kib)} kB\n")

    # --- the clock -------------------------------------------------------------

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self._tick()

    def _tick(self) -> None:
        for container_name, container in list(self.containers.items()):
            model = self.model(container.model)
            if self.engines[container.model].dies_while_loading and self.now - container.started >= 1:
                self._container_exits(container_name, model, "exit-code")
        self.write_meminfo()

    # --- the engine's HTTP --------------------------------------------------------

    def probe(self, model: dict, key=None, timeout=3.0) -> tuple[bool, str]:
        container = self.containers.get(model["container"])
        if container is None:
            return False, "[Errno 111] Connection refused"
        name = container.model
        if self.now - container.started < self.engines[name].load_s:
            return False, "/health answered 503"
        return True, "ready"

    # --- commands --------------------------------------------------------------

    def run(self, args, capture_output=False, text=False, check=False, timeout=None, **_):
        args = [str(a) for a in args]
        self.commands.append(args)
        out, code = self._dispatch(args)
        self.write_meminfo()
        if check and code:
            raise subprocess.CalledProcessError(code, args, out)
        return subprocess.CompletedProcess(args, code, out, "")

    def _dispatch(self, args: list[str]) -> tuple[str, int]:
        program, rest = args[0], args[1:]
        if program == "systemctl":
            return self._systemctl(rest)
        if program == "docker":
            return self._docker(rest)
        if program == "journalctl":
            return "engine: loading weights\nengine: exiting\n", 0
        if program == self.registry["memguard"]:
            # The real gate, on this host: the switch and every unit's ExecStartPre run it.
            captured = io.StringIO()
            with redirect_stdout(captured):
                code = memguard.main(rest)
            print(captured.getvalue(), end="")
            return captured.getvalue(), code
        if program == self.registry["cluster_switch"]:
            return "", 0
        raise AssertionError(f"the fake host does not know {args}")

    def _systemctl(self, args: list[str]) -> tuple[str, int]:
        verb, unit_name = args[0], args[1]
        unit = self.units.get(unit_name)
        if verb == "show":
            if unit is None:
                return "LoadState=not-found\nActiveState=inactive\n", 0
            values = {"ActiveState": unit.active, "SubState": unit.sub, "Result": unit.result,
                      "NRestarts": str(unit.restarts), "ActiveEnterTimestampMonotonic": str(int(unit.active_since * 1e6)),
                      "UnitFileState": unit.enabled, "LoadState": "loaded", "StartLimitBurst": "3"}
            wanted = next(a for a in args if a.startswith("--property=")).split("=", 1)[1].split(",")
            if "--value" in args:
                return "\n".join(values[w] for w in wanted) + "\n", 0
            return "".join(f"{w}={values[w]}\n" for w in wanted), 0
        if verb == "is-active":
            return f"{unit.active if unit else 'inactive'}\n", 0 if unit and unit.active == "active" else 3
        name, model = next((n, m) for n, m in self.registry["models"].items() if m["unit"] == unit_name)
        if verb == "start":
            return self._start(name, model, unit)
        if verb == "restart":
            self._systemctl(["stop", unit_name])
            return self._start(name, model, unit)
        if verb == "stop":
            if model["container"] in self.containers:
                self._container_exits(model["container"], model, "success", stopped=True)
            unit.active, unit.sub = "inactive", "dead"
            return "", 0
        if verb == "reset-failed":
            if unit.active == "failed":
                unit.active, unit.sub, unit.result = "inactive", "dead", "success"
            unit.restarts = 0
            return "", 0
        raise AssertionError(f"the fake host does not know systemctl {args}")

    def _start(self, name: str, model: dict, unit: Unit) -> tuple[str, int]:
        if unit.active == "active":
            return "", 0
        # ExecStartPre: the memory gate, with the registry's bound.
        out, code = self._dispatch([self.registry["memguard"], "--registry", str(self.registry_path),
                                    "wait-for-room", name])
        if code:
            unit.active, unit.sub, unit.result = "failed", "failed", "exit-code"
            return "", 1
        variant_file = Path(switch.VARIANT_DIR) / f"{name}.variant"
        variant = (variant_file.read_text().strip().split("=", 1)[1] if variant_file.exists()
                   else model["default_variant"])
        config = hashlib.sha256(Path(model["launch_script"]).read_bytes() + Path(model["unit_path"]).read_bytes())
        engine = self.engines[name]
        self.containers[model["container"]] = Container(name, variant, config.hexdigest()[:16], self.now,
                                                        engine.uses_gb if engine.uses_gb is not None
                                                        else model["required_memory_gb"])
        unit.active, unit.sub, unit.result, unit.active_since = "active", "running", "success", self.now
        return "", 0

    def _container_exits(self, container_name: str, model: dict, result: str, stopped: bool = False) -> None:
        container = self.containers.pop(container_name)
        engine = self.engines[container.model]
        if engine.returns_memory_after_s:
            self.late_memory.append((self.now + engine.returns_memory_after_s, container.uses_gb))
        if not stopped:
            unit = self.units[model["unit"]]
            unit.active, unit.sub, unit.result = "failed", "failed", result

    def _docker(self, args: list[str]) -> tuple[str, int]:
        if args[0] == "ps":
            form = args[args.index("--format") + 1]
            if form.startswith("{{.ID}}"):
                return "".join(f"{hashlib.sha256(n.encode()).hexdigest()} {n}\n" for n in self.containers), 0
            return "".join(f"{n}\t{c.model}\t{c.variant}\t{c.config}\n" for n, c in self.containers.items()), 0
        if args[0] == "rm":
            self.containers.pop(args[-1], None)
            return "", 0
        if args[0] == "kill":
            model = next((m for m in self.registry["models"].values() if m["container"] == args[-1]), None)
            if model is not None and args[-1] in self.containers:
                self._container_exits(args[-1], model, "signal")
            return "", 0
        if args[0] == "run" and "--entrypoint" in args:
            # An image asked what it carries (the NCCL probe): the fake images carry what `image_files` says.
            return self.image_files, 0
        if args[:2] == ["image", "inspect"]:
            ref = args[-1]
            if ref not in self.images:
                return "", 1
            if "--format" in args:
                return json.dumps({"RepoDigests": [f"{ref.split(':')[0]}@sha256:{'d' * 64}"], "Size": 188_000_000,
                                   "Os": "linux", "Architecture": "arm64"}), 0
            return "[]", 0
        raise AssertionError(f"the fake host does not know docker {args}")

    def popen(self, args, stdout=None, stderr=None, text=None, env=None, **_):
        """`docker pull` and the hub in its container: the streams the fetcher reads line by line."""
        args = [str(a) for a in args]
        self.commands.append(args)
        self.environments[len(self.commands) - 1] = env
        if args[:2] == ["docker", "pull"]:
            if self.pulls_fail:
                self.pulls_fail -= 1
                self.now += 7
                return FakeProcess(["0123456789ab: Pulling fs layer",
                                    "error pulling image configuration: connection reset by peer"], 1)
            self.images.add(args[2])
            return FakeProcess(["0123456789ab: Pulling fs layer", "0123456789ab: Pull complete",
                                f"Status: Downloaded newer image for {args[2]}"], 0)
        if args[:2] == ["docker", "run"]:
            verb, spec = args[-2], json.loads(args[-1])
            if self.hub_exit:
                return FakeProcess([f"sparkstack-hub: {spec['repo']}: 401 Unauthorized"], self.hub_exit)
            answer = {"commit": "c" * 40, "files": {"config.json": 120}} if verb == "resolve" else {"fetched": 1}
            return FakeProcess([f"sparkstack-hub: {verb} {spec['repo']}", fetch.HUB_MARK + json.dumps(answer)], 0)
        raise AssertionError(f"the fake host does not stream {args}")

    # --- wiring ---------------------------------------------------------------------

    def _patch(self) -> None:
        patch = self.monkeypatch.setattr
        self.meminfo = self.root / "meminfo"
        state = self.root / "run"
        state.mkdir(exist_ok=True)
        paths = {"LOCK_DIR": state / "lock", "LOCK_PATH": state / "lock" / "llm-switch.lock", "VARIANT_DIR": state,
                 "GUARD_STATE": state / "memory-guard.json", "CLUSTER_LENT": state / "cluster.json",
                 "CLUSTER_LAST": state / "cluster-last.json", "WEDGE_STATE": state / "wedge.json",
                 "STARTS_STATE": state / "starts.json", "COMPILE_CACHE_ROOT": self.root / "compile"}
        for name in SWITCH_STATE_NAMES:
            patch(switch, name, str(paths[name]))
        patch(switch, "REGISTRY", str(self.registry_path))
        # What an engine leaves behind: this host's own /proc, cgroups and /dev/shm (empty unless a test fills them).
        for name, folder in (("PROC", "proc"), ("CGROUP_ROOT", "cgroup"), ("DEV_SHM", "shm")):
            (self.root / folder).mkdir(exist_ok=True)
            patch(leftovers, name, str(self.root / folder))
        patch(switch, "DROP_CACHES", str(self.root / "drop_caches"))
        patch(switch.os, "sync", lambda: None)
        patch(memguard, "MEMINFO", str(self.meminfo))
        patch(memguard, "GUARD_STATE", str(paths["GUARD_STATE"]))
        fake_subprocess = types.SimpleNamespace(run=self.run, TimeoutExpired=subprocess.TimeoutExpired,
                                                SubprocessError=subprocess.SubprocessError,
                                                CalledProcessError=subprocess.CalledProcessError,
                                                Popen=self.popen, PIPE=subprocess.PIPE, STDOUT=subprocess.STDOUT)
        fake_time = types.SimpleNamespace(monotonic=self.monotonic, sleep=self.sleep, time=lambda: 1.7e9 + self.now,
                                          strftime=time.strftime, localtime=time.localtime)
        patch(fetch, "SECRETS", str(self.root / "secrets.env"))
        for module in (switch, memguard, cluster, fetch):
            patch(module, "subprocess", fake_subprocess)
            patch(module, "time", fake_time)
        patch(switch, "probe", self.probe)

    def hot(self) -> list[str]:
        return sorted(c.model for c in self.containers.values())
