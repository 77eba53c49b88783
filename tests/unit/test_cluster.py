"""Cluster groups: settings, per-node rendering, what the real vLLM parser and the lints say of it."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkstack.cli import main
from sparkstack.groups import GroupSettingsError, load_group_settings, settings_from_data
from sparkstack.memory import make_plan
from sparkstack.profiles import ProfileErrors, load_profiles
from sparkstack.render import RenderError, render
from tests.unit.test_render import _verify

CLUSTER_MODELS = Path(__file__).resolve().parents[1] / "hosts" / "cluster_models"
NODES = ("testcluster-head", "testcluster-worker")


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render-testcluster")
    result = CliRunner().invoke(main, ["render", "--group", "testcluster", "--out", str(out)],
                                env={"SPARKSTACK_MODELS_DIR": str(CLUSTER_MODELS)})
    assert result.exit_code == 0, result.output
    return out


def engine_argv(script: str) -> list[str]:
    block = script.split("engine_args=(")[1].split("\n    )\n")[0]
    return shlex.split(block)


def test_cluster_addresses_must_name_every_node_and_the_interface():
    with pytest.raises(GroupSettingsError) as caught:
        settings_from_data({"sparkstack_cluster_nodes": 2, "sparkstack_cluster_addresses": {"a": "10.0.0.1"},
                            "sparkstack_cluster_interface": "eth1"}, "group_data/x.py")
    assert "Value error" not in str(caught.value)  # pydantic's prefix does not leak into the message
    assert "group_data/x.py: sparkstack_cluster_addresses names 1 nodes but sparkstack_cluster_nodes is 2" in str(caught.value)
    with pytest.raises(GroupSettingsError, match="sparkstack_cluster_interface is not"):
        settings_from_data({"sparkstack_cluster_nodes": 2, "sparkstack_cluster_addresses": {"a": "10.0.0.1", "b": "10.0.0.2"}},
                           "group_data/x.py")


def test_a_group_without_addresses_places_but_does_not_deploy_and_one_with_them_deploys_per_node():
    loaded = load_profiles([CLUSTER_MODELS])
    settings = load_group_settings("testcluster")
    plan = make_plan("testcluster", [lp.profile for lp in loaded], settings)
    assert "glm51-pair" in [p.name for p in plan.deployable]
    with pytest.raises(RenderError, match="deploys a cluster model: render it per node"):
        render("testcluster", loaded, settings, plan)
    with pytest.raises(RenderError, match="host 'spark-9' is in cluster group 'testcluster' but not in its sparkstack_cluster_addresses"):
        render("testcluster", loaded, settings, plan, node="spark-9")
    bare = settings.model_copy(update={"cluster_addresses": {}})
    plan = make_plan("testcluster", [lp.profile for lp in loaded], bare)
    assert "glm51-pair" not in [p.name for p in plan.deployable]
    assert "note: glm51-pair is placed but not deployed: the group names no nodes" in plan.describe()


def test_each_node_gets_its_rank_the_head_serves_the_workers_are_headless(trees):
    head = (trees / NODES[0] / "usr/local/libexec/sparkstack/launch-glm51-pair").read_text()
    worker = (trees / NODES[1] / "usr/local/libexec/sparkstack/launch-glm51-pair").read_text()
    head_argv, worker_argv = engine_argv(head), engine_argv(worker)
    assert head_argv[head_argv.index("--node-rank") + 1] == "0" and "--headless" not in head_argv
    assert worker_argv[worker_argv.index("--node-rank") + 1] == "1" and worker_argv[-1] == "--headless"
    for argv in (head_argv, worker_argv):
        assert argv[argv.index("--nnodes") + 1] == "2"
        assert argv[argv.index("--master-addr") + 1] == "10.77.0.1"
        assert argv[argv.index("--master-port") + 1] == "29501"
        assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
        assert argv[argv.index("--host") + 1] == "127.0.0.1"  # host network: the engine binds, not docker
    for script, address in ((head, "10.77.0.1"), (worker, "10.77.0.2")):
        assert "--network host" in script and "--publish" not in script
        for env in (f"VLLM_HOST_IP={address}", "MASTER_ADDR=10.77.0.1", "NCCL_SOCKET_IFNAME=eth1", "GLOO_SOCKET_IFNAME=eth1",
                    "TP_SOCKET_IFNAME=eth1", "UCX_NET_DEVICES=eth1", "OMPI_MCA_btl_tcp_if_include=eth1"):
            assert f"--env {env} " in script
        assert "--label com.centurylinklabs.watchtower.enable=false" in script
    # The single-node model is the same on both nodes, and published as before.
    assert ((trees / NODES[0] / "usr/local/libexec/sparkstack/launch-qwen36").read_text()
            == (trees / NODES[1] / "usr/local/libexec/sparkstack/launch-qwen36").read_text())


def test_cluster_units_are_not_enabled_and_never_restart_one_rank(trees):
    for node in NODES:
        unit = (trees / node / "etc/systemd/system/vllm-glm51-pair.service").read_text()
        assert "Restart=no" in unit and "Restart=on-failure" not in unit
        conflicts = next(line for line in unit.splitlines() if line.startswith("Conflicts="))
        assert "vllm-qwen36.service" in conflicts.split("=")[1].split()
        assert "ExecStartPre=/usr/local/libexec/sparkstack/sparkstack-memguard wait-for-room glm51-pair" in unit


def test_the_registry_holds_each_nodes_share_and_the_cluster(trees):
    for rank, node in enumerate(NODES):
        registry = json.loads((trees / node / "etc/sparkstack/models.json").read_text())
        model = registry["models"]["glm51-pair"]
        # The engine's claim a node: 0.75 x 128 GB = 96 GB, more than its 90 GB share, scaled by the test VM's 0.01.
        assert model["required_memory_gb"] == 0.96
        assert model["cluster"]["rank"] == rank and model["cluster"]["head"] == NODES[0]
        assert [n["address"] for n in model["cluster"]["nodes"]] == ["10.77.0.1", "10.77.0.2"]
        assert registry["models"]["qwen36"]["cluster"] is None
        assert (trees / node / "usr/local/libexec/sparkstack/sparkstack-cluster").is_file()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (make test installs it)")
def test_shellcheck_and_systemd_analyze_pass_on_every_node(trees):
    for node in NODES:
        scripts = sorted((trees / node / "usr/local/libexec/sparkstack").glob("launch-*"))
        result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", *map(str, scripts)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
        assert _verify(trees / node, sorted((trees / node / "etc/systemd/system").glob("*.service"))) == []
    for program in ("usr/local/libexec/sparkstack/sparkstack-cluster", "usr/local/bin/llm-switch"):
        subprocess.run(["python3", "-m", "py_compile", str(trees / NODES[0] / program)], check=True)


def test_the_committed_vllm_release_accepts_every_rank_flag_and_env():
    """`sparkstack validate` checks a worker rank (every multi-node flag, --headless too) against vLLM 0.33.0's
    recorded parser; a flag the release lacks is reported, so this check can fail."""
    from sparkstack.engines.release import committed_releases
    from sparkstack.profiles import release_findings

    profile = next(lp.profile for lp in load_profiles([CLUSTER_MODELS]) if lp.profile.name == "glm51-pair")
    release = next(r for r in committed_releases("vllm") if r.version == "0.33.0")
    assert release_findings(profile, release) == []
    import dataclasses
    older = dataclasses.replace(release, actions=tuple(a for a in release.actions if "--headless" not in a.options))
    assert any("--headless" in f"{f.where} {f.says}" for _, f in release_findings(profile, older))


def test_sglang_clusters_are_refused_and_ray_needs_a_bounded_object_store(tmp_path):
    pair = (CLUSTER_MODELS / "glm51-pair.yaml").read_text()
    (tmp_path / "glm51-pair.yaml").write_text(pair.replace("engine: vllm", "engine: sglang"))
    with pytest.raises(ProfileErrors, match="cluster: not built for sglang yet"):
        load_profiles([tmp_path])
    (tmp_path / "glm51-pair.yaml").write_text(pair.replace("backend: native", "backend: ray"))
    with pytest.raises(ProfileErrors, match="cluster.ray_object_store_gb: required with backend: ray"):
        load_profiles([tmp_path])
    (tmp_path / "glm51-pair.yaml").write_text(pair + "  ray_object_store_gb: 2\n")
    with pytest.raises(ProfileErrors, match="cluster.ray_object_store_gb: only for backend: ray"):
        load_profiles([tmp_path])


# Every port `ray start` would otherwise pick at random, pinned (sparkstack/cluster.py), so the fence can name them.
PINNED_RAY_PORTS = ["--node-manager-port=6380", "--object-manager-port=6381", "--runtime-env-agent-port=6382",
                    "--dashboard-agent-grpc-port=6383", "--dashboard-agent-listen-port=6384",
                    "--metrics-export-port=6385", "--min-worker-port=10002", "--max-worker-port=10201"]


def test_over_ray_the_head_starts_ray_then_serves_and_a_worker_only_joins(trees):
    head = (trees / NODES[0] / "usr/local/libexec/sparkstack/launch-glm51-ray").read_text()
    worker = (trees / NODES[1] / "usr/local/libexec/sparkstack/launch-glm51-ray").read_text()
    head_argv, worker_argv = engine_argv(head), engine_argv(worker)
    assert head_argv[:2] == ["bash", "-c"] and head_argv[3:6] == ["ray-head", "vllm", "serve"]
    assert shlex.split(head_argv[2]) == ["ray", "start", "--head", "--port=6379", "--node-ip-address=10.77.0.1",
                                         "--object-store-memory=100000000", *PINNED_RAY_PORTS, "--disable-usage-stats",
                                         "--include-dashboard=false", "&&", "exec", "$@"]
    serve = head_argv[4:]
    assert serve[serve.index("--distributed-executor-backend") + 1] == "ray"
    assert serve[serve.index("--tensor-parallel-size") + 1] == "2"
    assert not {"--nnodes", "--node-rank", "--master-addr", "--headless"} & set(serve)
    assert worker_argv == ["ray", "start", "--block", "--address=10.77.0.1:6379", "--node-ip-address=10.77.0.2",
                           "--object-store-memory=100000000", *PINNED_RAY_PORTS, "--disable-usage-stats"]
    for script, address in ((head, "10.77.0.1"), (worker, "10.77.0.2")):
        for env in ("RAY_memory_monitor_refresh_ms=0", f"VLLM_HOST_IP={address}", "NCCL_SOCKET_IFNAME=eth1",
                    "RAY_AUTH_MODE=token"):
            assert f"--env {env} " in script
        # The token by name only: docker copies it from the unit's environment (the secrets file).
        assert "--env RAY_AUTH_TOKEN \\\n" in script and "RAY_AUTH_TOKEN=" not in script
        assert "--network host" in script and "--publish" not in script
    for rank, node in enumerate(NODES):
        model = json.loads((trees / node / "etc/sparkstack/models.json").read_text())["models"]["glm51-ray"]
        assert model["cluster"]["backend"] == "ray" and model["cluster"]["ray_port"] == 6379
        # The claim, 0.75 x 128 GB, is more than the share (180 GB / 2 + the 0.1 GB object store), scaled by 0.01.
        assert model["required_memory_gb"] == 0.96


def test_the_ray_object_store_counts_on_every_node_in_the_plan():
    loaded = load_profiles([CLUSTER_MODELS])
    plan = make_plan("testcluster", [lp.profile for lp in loaded], load_group_settings("testcluster"))
    # The share a node holds is the weights' half and the object store; the claim is the larger fraction's figure.
    assert ("glm51-ray  vllm   weights 90 GB per node of 2  claim 96 GB (0.75 x 128 GB = 96 GB >= weights 90.1 GB) "
            "+ reserve 2 GB = 98 GB") in plan.describe()


def test_the_committed_vllm_release_accepts_what_the_ray_head_serves_with():
    from sparkstack.engines.release import committed_releases
    from sparkstack.profiles import release_findings

    profile = next(lp.profile for lp in load_profiles([CLUSTER_MODELS]) if lp.profile.name == "glm51-ray")
    release = next(r for r in committed_releases("vllm") if r.version == "0.33.0")
    assert release_findings(profile, release) == []
    import dataclasses
    older = dataclasses.replace(release, actions=tuple(a for a in release.actions
                                                       if "--distributed-executor-backend" not in a.options))
    assert any("--distributed-executor-backend" in f.where for _, f in release_findings(profile, older))


def test_a_profile_spread_over_fewer_nodes_than_the_group_runs_on_the_first_ones():
    loaded = load_profiles([CLUSTER_MODELS])
    settings = load_group_settings("testcluster").model_copy(update={
        "cluster_nodes": 3,
        "cluster_addresses": {"testcluster-head": "10.77.0.1", "testcluster-worker": "10.77.0.2", "third": "10.77.0.3"}})
    plan = make_plan("testcluster", [lp.profile for lp in loaded], settings)
    worker = render("testcluster", loaded, settings, plan, node="testcluster-worker")
    script = next(f.content for f in worker.files if f.path.endswith("/launch-glm51-pair"))
    argv = engine_argv(script)
    assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--node-rank") + 1] == "1"
    registry = json.loads(next(f.content for f in worker.files if f.kind == "registry"))
    assert [n["name"] for n in registry["models"]["glm51-pair"]["cluster"]["nodes"]] == ["testcluster-head", "testcluster-worker"]
    third = render("testcluster", loaded, settings, plan, node="third")
    assert not any("glm51-pair" in f.path for f in third.files) and third.node is None


@pytest.mark.parametrize("hosts,says", [
    (["testcluster-head"], "group_data/testcluster.py names node 'testcluster-worker' in sparkstack_cluster_addresses, "
                           "but inventory group 'testcluster' has no such host (it has: testcluster-head)"),
    (["testcluster-head", "testcluster-worker", "spark-9"], "inventory group 'testcluster' has host 'spark-9', which "
                           "group_data/testcluster.py does not name in sparkstack_cluster_addresses"),
], ids=["a node missing from the inventory", "an inventory host the group does not name"])
@pytest.mark.parametrize("command", [["plan", "--group", "testcluster"], ["render", "--group", "testcluster", "--out", "OUT"]])
def test_plan_and_render_refuse_a_cluster_group_whose_inventory_and_nodes_differ(monkeypatch, tmp_path, hosts, says, command):
    import sparkstack.cli

    monkeypatch.setattr(sparkstack.cli, "inventory_hosts", lambda group: hosts if group == "testcluster" else [])
    args = [str(tmp_path / "out") if word == "OUT" else word for word in command]
    result = CliRunner().invoke(main, args, env={"SPARKSTACK_MODELS_DIR": str(CLUSTER_MODELS)})
    assert result.exit_code == 2, result.output
    assert says in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_the_inventory_is_read_as_pyinfra_reads_it(monkeypatch):
    from sparkstack.groups import inventory_hosts

    monkeypatch.setenv("SPARKSTACK_CLUSTER_HOSTS", "spark-1, admin@spark-2")
    assert inventory_hosts("cluster") == ["spark-1", "admin@spark-2"]
    monkeypatch.delenv("SPARKSTACK_CLUSTER_HOSTS")
    monkeypatch.delenv("SPARKSTACK_SPARK_HOSTS", raising=False)
    monkeypatch.setenv("SPARKSTACK_CACHE", "/nonexistent")  # no test host running
    assert inventory_hosts("cluster") is None  # the inventory configures nothing: the plan compares nothing


def test_the_native_ranks_get_no_ray_token(trees):
    for node in NODES:
        script = (trees / node / "usr/local/libexec/sparkstack/launch-glm51-pair").read_text()
        assert "RAY_AUTH" not in script


def test_every_node_is_fenced_and_no_rank_runs_without_the_fence(trees):
    for node in NODES:
        rules = (trees / node / "etc/sparkstack/cluster-fence.nft").read_text()
        assert "elements = { 10.77.0.1, 10.77.0.2 }" in rules
        # Ray's ports (GCS and the six that follow it), its workers' and vLLM's master port: the group's only.
        assert "elements = { 6379-6385, 10002-10201, 29501 }" in rules
        assert 'iifname "eth1" ip saddr != @group_nodes reject' in rules
        assert "tcp dport 10001 reject with tcp reset" in rules  # the Ray Client: no one
        for rank_unit in ("vllm-glm51-pair.service", "vllm-glm51-ray.service"):
            unit = (trees / node / "etc/systemd/system" / rank_unit).read_text()
            assert "Requires=sparkstack-cluster-fence.service\nAfter=sparkstack-cluster-fence.service\n" in unit
        local = (trees / node / "etc/systemd/system/vllm-qwen36.service").read_text()
        assert "sparkstack-cluster-fence" not in local


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables not installed (make test installs it)")
def test_nft_accepts_every_nodes_rules_and_a_broken_rule_is_caught(trees, tmp_path):
    for node in NODES:
        rules = trees / node / "etc/sparkstack/cluster-fence.nft"
        result = subprocess.run(["nft", "--check", "-f", str(rules)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    broken = tmp_path / "broken.nft"
    broken.write_text(rules.read_text().replace("reject with tcp reset", "reject with tcp rst"))
    assert subprocess.run(["nft", "--check", "-f", str(broken)], capture_output=True).returncode != 0


PAIR = {"sparkstack_cluster_addresses": {"a": "10.0.0.1", "b": "10.0.0.2"}, "sparkstack_cluster_nodes": 2,
        "sparkstack_cluster_interface": "enp1s0f0np0"}


def test_the_fence_merges_adjacent_ports():
    from sparkstack.cluster import cluster_nodes
    settings = settings_from_data(PAIR | {"sparkstack_cluster_master_port": 10202}, "g")
    assert cluster_nodes(settings)[0].fenced_ports() == [(6379, 6385), (10002, 10202)]


@pytest.mark.parametrize("setting,value,says", [
    ("ray_port", 9995, "sparkstack_cluster_ray_port 9995: Ray's ports are it and the 6 after it"),
    ("ray_port", 65530, "below 65536"),
    ("master_port", 6383, "sparkstack_cluster_master_port 6383 is one of Ray's ports"),
    ("master_port", 10001, "sparkstack_cluster_master_port 10001 is one of Ray's ports"),
])
def test_ports_that_would_collide_are_refused_naming_the_setting(setting, value, says):
    with pytest.raises(GroupSettingsError, match=says):
        settings_from_data(PAIR | {f"sparkstack_cluster_{setting}": value}, "group_data/g.py")
