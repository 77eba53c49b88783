"""A wiped Spark serves after one deploy: the locked images and snapshots, fetched by the deploy from real servers.

The registry (Debian's docker-registry) and the hub (olah, offline, serving local git repos) run on this
machine's loopback and reach the VM's through ssh (tests/artifact_servers.py); the session's lock was
written by `sparkstack lock --host sparkstack-testhost` against them, then the VM's copies were wiped.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import zlib

import pytest

from sparkstack.artifacts import repo_cache_dir, snapshot_dir
from sparkstack.groups import load_group_settings
from tests.artifact_servers import STANDIN_PUSHED
from tests.hosts.conftest import BIN, deploy, drift, locked, pinned_image, run, vm_ssh

CACHE = load_group_settings("testhost").model_cache_dir
QWEN = "rdtand/Qwen3.6-35B-A3B-PrismaQuant-4.75bit-vllm"
MISTRAL = "mistralai/Mistral-Small-4-119B-2603-NVFP4"
FETCH = "/usr/local/libexec/sparkstack/sparkstack-fetch"


def attempt_deploy(env: dict | None = None) -> subprocess.CompletedProcess:
    return run([str(BIN / "pyinfra"), "-y", "inventory.py", "deploy.py", "--limit", "testhost"], env=env)


def sparkstack_lock(*args: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "sparkstack"), "lock", "--host", "sparkstack-testhost", *args])


def snapshot_file(repo: str, name: str) -> str:
    return f"{snapshot_dir(CACHE, repo, locked()['models'][repo]['commit'])}/{name}"


def test_first_deploy_pulls_the_image_by_digest_and_fetches_the_pinned_snapshots(deployed):
    lock = locked()
    image = pinned_image()
    assert re.fullmatch(r"127\.0\.0\.1:5000/sparkstack/standin-engine@sha256:[0-9a-f]{64}", image)
    assert any(name.startswith(f"sparkstack artifacts | Pull image {image}") for name in deployed.changed), deployed.changed
    fetched = [name for name in deployed.changed if name.startswith("sparkstack model snapshots | Fetch ")]
    assert len(fetched) == len(lock["models"]) == 4, deployed.changed
    assert vm_ssh(f"docker image inspect --format ok {image}").stdout.strip() == "ok"
    for repo, entry in lock["models"].items():
        assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"])
        listing = vm_ssh(f"cd {snapshot_dir(CACHE, repo, entry['commit'])} && ls").stdout.split()
        # only what the engine loads: no second weight format, no README
        assert sorted(listing) == sorted(entry["files"]) == ["config.json", "model-00001-of-00001.safetensors", "tokenizer.json"]
        assert vm_ssh(f"ls {repo_cache_dir(CACHE, repo)}/blobs | grep -c incomplete").stdout.strip() == "0"


@pytest.mark.parametrize("name", ["qwen36", "mistral4"])
def test_launch_scripts_run_the_digest_offline_with_40_hex_revisions(deployed, name):
    script = vm_ssh(f"cat /usr/local/libexec/sparkstack/launch-{name}").stdout
    assert "exec docker run --rm --pull=never \\" in script
    assert "--env HF_HUB_OFFLINE=1 \\" in script
    assert f"  {pinned_image()} \\" in script
    revisions = re.findall(r'--revision ([0-9a-f]+)|"revision":"([0-9a-f]+)"|--speculative-draft-model-revision ([0-9a-f]+)', script)
    values = {v for groups in revisions for v in groups if v}
    assert values and all(re.fullmatch(r"[0-9a-f]{40}", v) for v in values), revisions
    assert "UNLOCKED" not in script


def test_second_deploy_changes_nothing_and_fetches_nothing(deployed, artifact_servers):
    before = artifact_servers.served()
    again = deploy()
    after = artifact_servers.served()
    assert again.changed == []
    assert after == before, (before, after)  # not one request reached the registry or the hub


def test_the_stand_in_finds_its_model_only_through_the_passed_revision(deployed):
    """The engine, offline, resolves the cache like vLLM: without --revision it looks for refs/main, which a
    sha-pinned download never writes, and the start fails."""
    image = pinned_image()
    common = (f"docker run --rm --pull=never --network none -e HF_HUB_OFFLINE=1 -v {CACHE}:/root/.cache/huggingface "
              f"-e STANDIN_LOAD_DELAY_S=0 --entrypoint timeout {image} 20 vllm serve {QWEN} --port 39999 "
              "--gpu-memory-utilization 0.5")
    without = vm_ssh(common, timeout=120)
    assert without.returncode == 1, without.stdout + without.stderr
    assert f"cannot load {QWEN} at revision main (none given)" in without.stdout + without.stderr
    commit = locked()["models"][QWEN]["commit"]
    with_revision = vm_ssh(f"{common} --revision {commit}", timeout=120)
    assert f"standin: loaded {QWEN}@{commit}" in with_revision.stdout, with_revision.stdout + with_revision.stderr
    assert with_revision.returncode == 124  # served until `timeout` stopped it


def test_a_new_commit_and_a_moved_tag_change_nothing_until_lock_upgrade(deployed, artifact_servers):
    old_lock = locked()
    old_commit = old_lock["models"][QWEN]["commit"]
    new_commit = artifact_servers.commit(QWEN, "upstream moves on", change="v2")
    moved = vm_ssh(f"docker rm -f sparkstack-derive >/dev/null 2>&1; docker run --name sparkstack-derive --entrypoint sh "
                   f"{pinned_image()} -c 'echo moved > /opt/standin/moved' && docker commit --change "
                   "'ENTRYPOINT [\"/usr/bin/tini\", \"--\"]' sparkstack-derive " + STANDIN_PUSHED +
                   f" >/dev/null && docker rm sparkstack-derive >/dev/null && docker push -q {STANDIN_PUSHED}", timeout=600)
    assert moved.returncode == 0, moved.stderr
    assert deploy().changed == []
    assert drift().returncode == 0
    plain = sparkstack_lock()
    assert plain.returncode == 0 and "is up to date" in plain.stdout, plain.stdout + plain.stderr
    assert locked() == old_lock

    upgraded = sparkstack_lock("--upgrade", "qwen36")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    lock = locked()
    assert lock["models"][QWEN]["commit"] == new_commit != old_commit
    assert f"was {old_commit}" in upgraded.stdout
    assert lock["images"] != old_lock["images"]  # qwen36's image was re-resolved: the tag moved
    untouched = {repo: entry for repo, entry in lock["models"].items() if repo != QWEN and "DFlash" not in repo}
    assert untouched == {repo: old_lock["models"][repo] for repo in untouched}  # mistral4's repos stay pinned
    changed = deploy().changed
    assert any(f"Fetch {QWEN}@{new_commit[:12]}" in name for name in changed), changed
    assert vm_ssh(f"grep -c -- '--revision {new_commit}' /usr/local/libexec/sparkstack/launch-qwen36").stdout.strip() == "1"
    assert deploy().changed == []


@pytest.fixture
def no_model_running(deployed):
    vm_ssh("llm-switch none")
    yield
    vm_ssh("llm-switch none")


def test_drift_catches_a_deleted_snapshot_file_and_a_retagged_image_and_a_deploy_heals_them(no_model_running):
    image = pinned_image()
    weights = snapshot_file(MISTRAL, "model-00001-of-00001.safetensors")
    # The tag stays on the host, the pinned digest does not (as after a `docker pull` of the moved tag and a prune).
    damaged = vm_ssh(f"rm {weights} && docker tag {image} {STANDIN_PUSHED} && docker rmi {image}")
    assert damaged.returncode == 0, damaged.stderr
    report = drift()
    assert report.returncode == 1, report.stdout + report.stderr
    assert f"Pull image {image}" in report.stdout and f"Fetch {MISTRAL}@" in report.stdout, report.stdout
    healed = deploy()
    assert any(name.startswith("sparkstack artifacts | Pull image") for name in healed.changed), healed.changed
    assert vm_ssh(f"test -f {weights}").returncode == 0
    assert drift().returncode == 0


def test_the_switch_refuses_a_model_whose_snapshot_is_missing(no_model_running):
    assert vm_ssh("llm-switch qwen").returncode == 0
    weights = snapshot_file(MISTRAL, "model-00001-of-00001.safetensors")
    assert vm_ssh(f"rm {weights}").returncode == 0
    refused = vm_ssh("llm-switch mistral")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 1
    assert (f"mistral4 cannot start: {MISTRAL}@{locked()['models'][MISTRAL]['commit'][:12]} "
            "(file model-00001-of-00001.safetensors) is not on this host") in output, output
    assert "pyinfra inventory.py deploy.py" in output
    status = json.loads(vm_ssh("llm-switch status --json").stdout)
    assert status["hot"] == "qwen36"  # checked before anything was stopped
    assert any("Fetch" in name for name in deploy().changed)
    assert vm_ssh("llm-switch mistral").returncode == 0


def test_the_disk_preflight_refuses_with_numbers_before_fetching(no_model_running):
    repo_dir = repo_cache_dir(CACHE, QWEN)
    assert vm_ssh(f"rm -rf {repo_dir}").returncode == 0
    # Leave 20 MB free on the cache's filesystem: the 4 MB snapshot plus the 50 MB margin does not fit.
    # The fill goes on the cache's own filesystem (a container host's /var/tmp is this machine's disk).
    fill = f"{CACHE.rsplit('/', 1)[0]}/sparkstack-fill"
    filled = vm_ssh(f"avail=$(df -B1 --output=avail {CACHE} | tail -n 1); "
                    f"fallocate -l $((avail - 20000000)) {fill}")
    assert filled.returncode == 0, filled.stderr
    try:
        result = attempt_deploy()
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "not enough disk for the artifacts still to fetch; nothing was fetched or changed" in output, output[-2000:]
        # The snapshot, and the one an earlier upgrade replaced, which the host keeps for a rollback.
        found = re.search(r"needs (4\.2|8\.4) MB \(snapshots \1 MB\) \+ 50\.0 MB margin = \d+\.\d MB, has (\d+\.\d) MB free",
                          output)
        assert found and 15 < float(found.group(2)) < 25, output[-2000:]
        assert vm_ssh(f"test -e {repo_dir}").returncode != 0  # not one byte fetched
    finally:
        vm_ssh(f"rm -f {fill}")
    assert any(f"Fetch {QWEN}" in name for name in deploy().changed)


def test_a_download_killed_half_way_is_finished_by_the_next_deploy(no_model_running):
    """Throttle the VM's loopback so the download takes a while, kill it mid-file, and deploy again."""
    lock = locked()
    entry = lock["models"][QWEN]
    spec = {"repo": QWEN, "commit": entry["commit"], "allow": entry["allow"], "ignore": entry["ignore"],
            "files": entry["files"], "endpoint": "http://127.0.0.1:5080", "cache_dir": CACHE}
    repo_dir = repo_cache_dir(CACHE, QWEN)
    # The VM loads tbf itself; a container host shares this machine's kernel, which has it (and has no modprobe).
    throttle = vm_ssh(f"rm -rf {repo_dir} && {{ ! command -v modprobe >/dev/null || modprobe sch_tbf; }} && "
                      "tc qdisc add dev lo root tbf rate 2mbit burst 96kb latency 2s")
    assert throttle.returncode == 0, throttle.stderr
    try:
        command = f"{FETCH} snapshot {pinned_image()} '{json.dumps(spec)}' > /tmp/fetch.log 2>&1 &"
        assert vm_ssh(command).returncode == 0
        deadline = time.monotonic() + 120
        partial = ""
        while time.monotonic() < deadline:
            partial = vm_ssh(f"find {repo_dir}/blobs -name '*.incomplete' 2>/dev/null").stdout.strip()
            if partial:
                break
            time.sleep(1)
        assert partial, vm_ssh("cat /tmp/fetch.log").stdout
        progress = ""
        while time.monotonic() < deadline and "GB after" not in progress:
            progress = vm_ssh("cat /tmp/fetch.log").stdout
            time.sleep(1)
        vm_ssh("pkill -KILL -f '[s]parkstack-fetch snapshot'; docker ps -q --filter label=io.sparkstack.fetch=true | xargs -r docker kill")
        assert "GB after" in progress, progress  # progress at least every 10 s while it ran
    finally:
        vm_ssh("tc qdisc del dev lo root 2>/dev/null; true")
    assert vm_ssh(f"ls {repo_dir}/blobs | grep -c incomplete").stdout.strip() != "0"
    healed = deploy()
    assert any(f"Fetch {QWEN}" in name for name in healed.changed), healed.changed
    assert vm_ssh(f"ls {repo_dir}/blobs | grep -c incomplete").stdout.strip() == "0"
    assert vm_ssh(f"stat -L -c %s {snapshot_file(QWEN, 'model-00001-of-00001.safetensors')}").stdout.strip() == \
        str(entry["files"]["model-00001-of-00001.safetensors"])
    assert vm_ssh("llm-switch qwen").returncode == 0


def test_a_hub_that_serves_wrong_bytes_is_refused_and_keeps_nothing_of_them(no_model_running, artifact_servers):
    """The attacker runs the hub: for the locked commit it serves weights of its own, of the same size."""
    entry = locked()["models"][MISTRAL]
    name = "model-00001-of-00001.safetensors"
    git = ["git", "-C", str(artifact_servers.repo_path(MISTRAL))]
    blob = subprocess.run([*git, "rev-parse", f"{entry['commit']}:{name}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stored = artifact_servers.repo_path(MISTRAL) / ".git" / "objects" / blob[:2] / blob[2:]
    original = stored.read_bytes()
    # The hub's storage now holds other bytes under the same name and size: it answers for the locked commit
    # with them (olah reads git objects without checking their hashes, as a hostile hub would not).
    size = entry["files"][name]
    stored.chmod(0o644)
    stored.write_bytes(zlib.compress(b"blob %d\0" % size + b"\x66" * size))
    try:
        assert vm_ssh(f"rm -rf {repo_cache_dir(CACHE, MISTRAL)}").returncode == 0
        refused = attempt_deploy()
        assert refused.returncode != 0
        output = refused.stdout + refused.stderr
        assert f"{name} hashes to git-sha1:" in output and f"the lock says {entry['digests'][name]}" in output, \
            output[-3000:]
        assert "the hub sent the wrong bytes, removed, never loaded" in output
        assert "attempt 1/3 failed" not in output  # refused at once: the same hub would send the same bytes
        assert vm_ssh(f"test -e {snapshot_file(MISTRAL, name)}").returncode != 0  # no engine can load them
    finally:
        stored.write_bytes(original)
    healed = deploy()
    assert not healed.errors and any(f"Fetch {MISTRAL}" in op for op in healed.changed), healed.changed
    assert vm_ssh(f"stat -L -c %s {snapshot_file(MISTRAL, name)}").stdout.strip() == str(size)


def test_the_hf_token_stays_in_the_secrets_file(no_model_running):
    token = "hf_" + "sparkstackTestToken0123456789"
    planted = vm_ssh(f"cp /etc/sparkstack/secrets.env /tmp/secrets.bak && echo HF_TOKEN={token} >> /etc/sparkstack/secrets.env "
                     f"&& rm -rf {repo_cache_dir(CACHE, MISTRAL)}")
    assert planted.returncode == 0
    try:
        result = run([str(BIN / "pyinfra"), "-y", "-vvv", "inventory.py", "deploy.py", "--limit", "testhost"])
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"Fetch {MISTRAL}" in result.stdout + result.stderr
        assert token not in result.stdout + result.stderr
        where = "/usr/local/libexec/sparkstack /etc/systemd/system /etc/sparkstack/models.json /var/log"
        leaked = vm_ssh(f"grep -rl {token} {where} 2>/dev/null; journalctl --no-pager | grep -c {token}")
        assert leaked.stdout.split() == ["0"], leaked.stdout
        assert token not in json.dumps(locked())
    finally:
        vm_ssh("cp /tmp/secrets.bak /etc/sparkstack/secrets.env")


def test_a_repo_the_hub_does_not_have_gets_one_line_naming_it(deployed, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    from sparkstack.paths import models_dir

    for source in models_dir().glob("*.yaml"):
        text = source.read_text()
        if source.name == "qwen36.yaml":
            text = text.replace(f"model: {QWEN}", "model: nobody/no-such-model")
        (models / source.name).write_text(text)
    before = locked()
    result = run([str(BIN / "sparkstack"), "lock", "--host", "sparkstack-testhost"], env={"SPARKSTACK_MODELS_DIR": str(models)})
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "sparkstack-hub: nobody/no-such-model: the hub answered" in output, output
    assert "HF_TOKEN" in output and "the lock file was not changed" in output
    assert locked() == before
    refused = attempt_deploy({"SPARKSTACK_MODELS_DIR": str(models)})
    assert refused.returncode != 0
    assert "qwen36: repo nobody/no-such-model is not locked: run `sparkstack lock --host HOST`" in refused.stdout + refused.stderr
