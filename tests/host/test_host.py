"""The deployed host, read as it is: files, units, containers, the switch."""

from __future__ import annotations

import hashlib
import json
import shlex
import time

import pytest

from sparkstack.engines import adapter_for, engine_args
from tests.host.conftest import DEPLOYED, RENDERING
from sparkstack_host.leftovers import ENGINE_COMM
from sparkstack.cluster import CLUSTER_KEY, CLUSTER_KNOWN_HOSTS, cluster_nodes
from sparkstack_host.contract import CLUSTER_FENCE_TABLE, CLUSTER_FENCE_UNIT, COMPILE_CACHE_MOUNT, REGISTRY_PATH, switch_socket_listens
from sparkstack.render import CLUSTER_PATH, SECRETS_PATH, SWITCH_PATH, WATCHTOWER_DISABLE_LABEL, launch_path


def managed_containers(host) -> list[str]:
    out = host.check_output("docker ps --filter label=io.sparkstack.managed=true --format '{{.Names}}'")
    return sorted(filter(None, out.splitlines()))


@pytest.fixture(scope="module")
def files_on_host(host, rendering) -> dict[str, tuple[str, str, str, str]]:
    """(owner, group, octal mode, sha256) of every rendered file that exists, read in two commands: a
    round trip per file attribute was most of these checks' time on the test VM."""
    paths = " ".join(shlex.quote(f.path) for f in rendering.files)
    stats = {}
    for line in host.run(f"stat -c '%U %G %a %n' -- {paths} 2>/dev/null").stdout.splitlines():
        user, group, mode, path = line.split(" ", 3)
        stats[path] = (user, group, mode)
    sums = {}
    for line in host.run(f"sha256sum -- {paths} 2>/dev/null").stdout.splitlines():
        digest, path = line.split("  ", 1)
        sums[path] = digest
    return {path: (*stats[path], sums.get(path, "")) for path in stats}


def test_every_rendered_file_is_on_the_host_as_rendered(host, rendered, files_on_host):
    assert rendered.path in files_on_host, f"{rendered.path} is missing"
    user, group, mode, digest = files_on_host[rendered.path]
    assert (user, group) == (rendered.user, rendered.group), rendered.path
    assert int(mode, 8) == int(rendered.mode, 8), f"{rendered.path}: mode {mode}"
    if digest != hashlib.sha256(rendered.content.encode()).hexdigest():
        # Read it only now, so the failure shows the difference.
        assert host.file(rendered.path).content_string == rendered.content, f"{rendered.path} differs from what sparkstack renders"


def test_model_unit_is_installed_but_not_enabled(host, profile):
    service = host.service(profile.unit_name)
    assert host.file(f"/etc/systemd/system/{profile.unit_name}").exists
    assert not service.is_enabled, f"{profile.unit_name} is enabled at boot"


def test_model_unit_verifies_on_the_host(host, profile):
    result = host.run(f"systemd-analyze verify /etc/systemd/system/{profile.unit_name}")
    assert result.rc == 0 and not result.stderr.strip(), result.stderr


def test_launch_script_carries_label_and_pinned_env(host, profile):
    script = host.file(launch_path(profile)).content_string
    assert f"--label {WATCHTOWER_DISABLE_LABEL}" in script
    for key, value in profile.env.items():
        assert f"--env {key}={value}" in script


def test_the_platform_is_not_known_to_break_models_unless_waived(host):
    """The host's baseline (kernel, NVIDIA driver, ...) against sparkstack/known_bad.yaml and the group's waivers,
    as the deploy's preflight checks it: a host that drifted onto a known-bad kernel or driver fails here."""
    from sparkstack import baseline
    from tests.host.conftest import SETTINGS

    facts = baseline.with_fixture(baseline.parse(host.check_output(baseline.collect_command())),
                                  dict(SETTINGS.baseline_fixture))
    refusals, _ = baseline.findings(facts, SETTINGS.baseline_waivers)
    assert refusals == [], refusals


def test_secrets_file_is_root_only(host):
    secrets = host.file(SECRETS_PATH)
    assert secrets.exists and secrets.is_file
    assert (secrets.user, secrets.group, secrets.mode) == ("root", "root", 0o600)


def test_llm_switch_is_installed_on_path(host):
    assert host.exists("llm-switch")
    assert host.file(SWITCH_PATH).mode == 0o755
    status = json.loads(host.check_output("llm-switch status --json"))
    assert sorted(m["name"] for m in status["models"]) == sorted(DEPLOYED)


@pytest.mark.switching
def test_switching_to_a_model_leaves_exactly_it_running(host, profile, pins):
    if profile.cluster:
        pytest.skip("a cluster model starts on every node from the head (tests/hosts/test_9_cluster.py drives it)")
    alias = profile.aliases[0] if profile.aliases else profile.name
    result = host.run(f"llm-switch {alias}")
    assert result.rc == 0, result.stdout + result.stderr
    assert managed_containers(host) == [profile.container_name]
    models = json.loads(host.check_output(f"curl -fsS --max-time 5 http://127.0.0.1:{profile.port}/v1/models"))
    assert [m["id"] for m in models["data"]] == [profile.served_model_name]
    inspect = json.loads(host.check_output(f"docker inspect {profile.container_name}"))[0]
    labels = inspect["Config"]["Labels"]
    assert labels["com.centurylinklabs.watchtower.enable"] == "false"
    assert labels["io.sparkstack.variant"] == profile.effective_default_variant
    # Only the profile's own keys are compared (and so shown on failure): the container's
    # environment also holds its engine's API key, when the secrets file sets one.
    pinned = dict(item.split("=", 1) for item in inspect["Config"]["Env"] or [] if item.split("=", 1)[0] in profile.env)
    assert pinned == profile.env
    expected = engine_args(profile, profile.resolve(profile.effective_default_variant), pins)
    assert inspect["Config"]["Cmd"] == expected
    assert inspect["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
    status = json.loads(host.check_output("llm-switch status --json"))
    assert status["hot"] == profile.name
    # Its compile caches are on the host, for this model and image, and the engine keeps them there.
    cache = json.loads(host.file(REGISTRY_PATH).content_string)["models"][profile.name]["compile_cache"]
    mounts = {m["Destination"]: m["Source"] for m in inspect["Mounts"]}
    assert mounts.get(COMPILE_CACHE_MOUNT) == cache and host.file(cache).is_directory
    env = dict(item.partition("=")[::2] for item in inspect["Config"]["Env"] or [])  # a bare NAME: docker's --env NAME
    assert all(env.get(name, "").startswith(COMPILE_CACHE_MOUNT) for name in adapter_for(profile.engine).compile_cache_env)
    assert status["starts"][profile.name]["compile_cache"] in ("cold", "warm")


@pytest.mark.switching
def test_switching_to_none_leaves_nothing_running(host):
    result = host.run("llm-switch none")
    assert result.rc == 0, result.stderr
    assert managed_containers(host) == []
    assert json.loads(host.check_output("llm-switch status --json"))["hot"] is None
    # No engine process outlives its stop, and none left shared memory behind (sparkstack_host/leftovers.py).
    engines = host.run(f"pgrep -a '{ENGINE_COMM.pattern}' || true").stdout.strip()  # by process name, as earlyoom
    assert engines == "", engines
    assert host.run("ls /dev/shm | grep -E '^psm_' || true").stdout.strip() == ""


@pytest.mark.parametrize("service", ["sparkstack-memory-guard.service", "earlyoom.service"])
def test_memory_guards_run_and_start_at_boot(host, service):
    unit = host.service(service)
    assert unit.is_running and unit.is_enabled, service


def test_earlyoom_runs_with_the_rendered_absolute_thresholds(host, rendering):
    dropin = next(f for f in rendering.files if f.kind == "earlyoom-config")
    wanted = next(line for line in dropin.content.splitlines() if line.startswith("ExecStart=/"))
    # A node that has just been under memory pressure (the cluster tests' four Ray nodes) may find earlyoom
    # between two runs of its Restart=; give systemd a few seconds before calling it gone.
    for _ in range(20):
        result = host.run("ps -o args= -C earlyoom")
        if result.rc == 0:
            break
        time.sleep(0.5)
    assert result.rc == 0, f"earlyoom is not running: {host.run('systemctl status earlyoom --no-pager').stdout[-1500:]}"
    running = result.stdout.strip()
    # systemd unescapes $$ and drops the quotes the drop-in needs; compare what earlyoom was given.
    assert running == wanted.removeprefix("ExecStart=").replace("$$", "$").replace('"', ""), running
    assert " -m " not in running and " -M " in running


def test_the_front_door_runs_unprivileged_enabled_and_bound_as_rendered(host, rendering):
    unit = host.service("sparkstack-frontdoor.service")
    assert unit.is_running and unit.is_enabled
    door = json.loads(next(f for f in rendering.files if f.kind == "registry").content)["frontdoor"]
    assert host.socket(f"tcp://{door['bind']}:{door['port']}").is_listening
    user = host.check_output("ps -o user= -p $(systemctl show -p MainPID --value sparkstack-frontdoor.service)")
    assert user.strip() == "sparkstack-door"
    # The file limit the unit renders is the one the running door has (slowloris needs files to fail), up to what
    # the host allows at all (PID 1's hard limit: a container test host may have less than a Spark).
    unit_file = next(f for f in rendering.files if f.kind == "frontdoor-unit").content
    wanted = int(next(line.split("=", 1)[1] for line in unit_file.splitlines() if line.startswith("LimitNOFILE=")))

    def open_files(pid: str, column: int) -> int:
        limits = host.check_output(f"cat /proc/{pid}/limits")
        return int(next(line.split()[column] for line in limits.splitlines() if line.startswith("Max open files")))
    door_pid = host.check_output("systemctl show -p MainPID --value sparkstack-frontdoor.service").strip()
    assert open_files(door_pid, 3) == min(wanted, open_files("1", 4))
    socket = host.service("sparkstack-switch-request.socket")
    listens = switch_socket_listens(json.loads(host.file(REGISTRY_PATH).content_string))
    assert socket.is_running == listens and socket.is_enabled == listens
    for unit_file in ("sparkstack-frontdoor.service", "sparkstack-switch-request.socket"):
        result = host.run(f"systemd-analyze verify /etc/systemd/system/{unit_file}")
        assert result.rc == 0 and not result.stderr.strip(), result.stderr


def test_memory_guard_unit_verifies_on_the_host(host):
    result = host.run("systemd-analyze verify /etc/systemd/system/sparkstack-memory-guard.service")
    assert result.rc == 0 and not result.stderr.strip(), result.stderr


def test_the_locked_image_of_every_model_is_on_the_host(host, profile, pins, settings):
    image = pins.image(settings.image_for(profile.engine, profile.image))
    assert host.run(f"docker image inspect --format ok {image}").stdout.strip() == "ok", image


def test_every_locked_snapshot_file_is_on_the_host_at_its_size(host, locked_repo, lock, settings):
    from sparkstack.artifacts import snapshot_dir

    entry = lock.models[locked_repo]
    where = snapshot_dir(settings.model_cache_dir, locked_repo, entry.commit)
    sizes = {}
    for line in host.check_output(f"cd {where} && stat -L -c '%s %n' -- {' '.join(sorted(entry.files))}").splitlines():
        size, _, name = line.partition(" ")
        sizes[name] = int(size)
    assert sizes == entry.files


node_only = pytest.mark.skipif(RENDERING.node is None, reason="not a node of a cluster group")


@node_only
def test_cluster_switch_access_is_as_narrow_as_rendered(host, settings):
    """The head holds the switch's key and the workers' host keys; a worker lets that key run one command only."""
    node = RENDERING.node
    if node.is_head:
        key = host.file(CLUSTER_KEY)
        assert (key.user, key.mode) == ("root", 0o600)
        known = host.file(CLUSTER_KNOWN_HOSTS).content_string.splitlines()
        workers = [n.address for n in cluster_nodes(settings) if not n.is_head]
        assert sorted(line.split()[0] for line in known) == sorted(workers)
    else:
        entries = [line for line in host.file("/root/.ssh/authorized_keys").content_string.splitlines()
                   if line.endswith(f"sparkstack-cluster@{RENDERING.group}")]
        assert entries == [entry for entry in entries
                           if entry.startswith(f'restrict,from="{node.head_address}",command="{CLUSTER_PATH} member" ')]
        assert len(entries) == 1, entries


@node_only
def test_the_cluster_fence_is_loaded_as_rendered(host):
    """The port fence's unit is on and enabled, and the kernel holds its table: the group's addresses, and the Ray
    Client's port refused. Reaching the ports from elsewhere is tests/hosts/test_9_cluster.py's, from a second node."""
    fence = host.service(CLUSTER_FENCE_UNIT)
    assert fence.is_enabled and host.run(f"systemctl is-active {CLUSTER_FENCE_UNIT}").stdout.strip() == "active"
    table = host.run(f"nft list table inet {CLUSTER_FENCE_TABLE}")
    assert table.rc == 0, table.stderr
    assert all(address in table.stdout for address in RENDERING.node.peers), table.stdout
    assert "tcp dport 10001 reject with tcp reset" in table.stdout and f'iifname "{RENDERING.node.interface}"' in table.stdout
