"""Artifact provisioning benchmark: the deploy's fetch against a raw `curl` of the same bytes from the same servers.

    .venv/bin/python benchmarks/bench_artifacts.py      (or: make bench)

In the test VM, with the registry and hub of tests/artifact_servers.py (on this machine's loopback,
reached through ssh) and repos of BENCH_WEIGHTS_MB each:
  raw        curl, in the VM, of every image layer blob and every locked snapshot file, to /dev/null
  provision  the commands the deploy runs for missing artifacts: `sparkstack-fetch image` (docker pull,
             which also unpacks the layers) and `sparkstack-fetch snapshot` (sparkstack-hub in the image)
  second     a whole deploy on the provisioned host: time, and what the servers answered meanwhile
Prints the figures side by side and the rate ratio (raw seconds / provision seconds, same bytes);
the goal is >= 0.8 and 0 bytes on the second run. Asserts nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_section  # noqa: E402
from sparkstack import testhost  # noqa: E402
from sparkstack.groups import load_group_settings  # noqa: E402
from sparkstack.paths import files_dir, repo_root  # noqa: E402
from sparkstack.render import FETCH_PATH, HUB_PATH, LAUNCH_DIR  # noqa: E402
from tests.artifact_servers import VM_HUB_PORT, VM_REGISTRY, ArtifactServers, prepare  # noqa: E402

BIN = Path(sys.executable).parent
WEIGHTS_MB = int(os.environ.get("BENCH_WEIGHTS_MB", "64"))
MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json,"
                  "application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.index.v1+json")


def vm(command: str, timeout: float = 1800) -> str:
    result = testhost.ssh(command, timeout=timeout)
    if result.returncode != 0:
        sys.exit(f"in the VM: {command[:120]}... failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def timed_vm(command: str) -> float:
    started = time.monotonic()
    vm(command)
    return time.monotonic() - started


def layer_blobs(pinned: str) -> list[tuple[str, int]]:
    repo, digest = pinned.split("@", 1)
    path = repo.split("/", 1)[1]
    manifest = json.loads(vm(f"curl -sf -H 'Accept: {MANIFEST_TYPES}' http://{VM_REGISTRY}/v2/{path}/manifests/{digest}"))
    return [(layer["digest"], layer["size"]) for layer in manifest["layers"]] + [(manifest["config"]["digest"], manifest["config"]["size"])]


def main() -> None:
    ArtifactServers(repo_root() / "build" / "artifact-servers").stop()  # left running by bench_deploy or make demo
    testhost.up(fresh=True)
    state = repo_root() / "build" / "bench-artifacts"
    servers = prepare(state, weights_bytes=WEIGHTS_MB * 1024 * 1024)
    try:
        run(servers)
    finally:
        servers.stop()


def run(servers) -> None:
    lock = json.loads((repo_root() / "group_data" / "testhost.lock.json").read_text())
    cache = load_group_settings("testhost").model_cache_dir
    pinned = next(iter(lock["images"].values()))["pinned"]
    path = pinned.split("@")[0].split("/", 1)[1]
    blobs = layer_blobs(pinned)
    image_bytes = sum(size for _, size in blobs)
    files = [(repo, entry["commit"], name, size) for repo, entry in sorted(lock["models"].items()) for name, size in sorted(entry["files"].items())]
    snapshot_bytes = sum(size for *_, size in files)

    curl_image = " && ".join(f"curl -sf -o /dev/null http://{VM_REGISTRY}/v2/{path}/blobs/{digest}" for digest, _ in blobs)
    curl_files = " && ".join(f"curl -sf -o /dev/null http://127.0.0.1:{VM_HUB_PORT}/{repo}/resolve/{commit}/{shlex.quote(name)}"
                             for repo, commit, name, _ in files)
    raw_image_s, raw_files_s = timed_vm(curl_image), timed_vm(curl_files)

    # The fetch programs as the deploy installs them (byte for byte from files/), nothing else.
    for name, target in (("sparkstack-fetch", FETCH_PATH), ("sparkstack-hub", HUB_PATH)):
        content = (files_dir() / name).read_text()
        subprocess.run(testhost.ssh_command() + [f"mkdir -p {LAUNCH_DIR} && cat > {target} && chmod 0755 {target}"],
                       input=content, text=True, check=True)
    before = servers.served()
    image_s = timed_vm(f"{FETCH_PATH} image {pinned}")
    snapshot_s = 0.0
    for repo, entry in sorted(lock["models"].items()):
        spec = {"repo": repo, "commit": entry["commit"], "allow": entry["allow"], "ignore": entry["ignore"],
                "files": entry["files"], "endpoint": f"http://127.0.0.1:{VM_HUB_PORT}", "cache_dir": cache}
        snapshot_s += timed_vm(f"{FETCH_PATH} snapshot {pinned} {shlex.quote(json.dumps(spec))}")
    provisioned = servers.served()

    deploy = [str(BIN / "pyinfra"), "-y", "--json", "inventory.py", "deploy.py", "--limit", "testhost"]
    subprocess.run(deploy, capture_output=True, text=True, cwd=repo_root(), check=True)  # installs the rest of the files
    served_before = servers.served()
    started = time.monotonic()
    second = subprocess.run(deploy, capture_output=True, text=True, cwd=repo_root(), check=True)
    second_s = time.monotonic() - started
    served_after = servers.served()
    totals = json.loads(second.stdout)["results"]["totals"]

    def mb(n: int) -> str:
        return f"{n / 1e6:.1f} MB"

    def rate(n: int, s: float) -> str:
        return f"{n / 1e6 / s:.1f} MB/s"

    total_raw, total_prov = raw_image_s + raw_files_s, image_s + snapshot_s
    body = f"""| artifacts | bytes | raw curl | provisioning | rate ratio (raw s / provisioning s) |
|---|---|---|---|---|
| image ({len(blobs)} blobs; the pull also unpacks) | {mb(image_bytes)} | {raw_image_s:.1f} s ({rate(image_bytes, raw_image_s)}) | {image_s:.1f} s ({rate(image_bytes, image_s)}) | {raw_image_s / image_s:.2f} |
| snapshots ({len(files)} files in {len(lock['models'])} repos) | {mb(snapshot_bytes)} | {raw_files_s:.1f} s ({rate(snapshot_bytes, raw_files_s)}) | {snapshot_s:.1f} s ({rate(snapshot_bytes, snapshot_s)}) | {raw_files_s / snapshot_s:.2f} |
| all | {mb(image_bytes + snapshot_bytes)} | {total_raw:.1f} s | {total_prov:.1f} s | {total_raw / total_prov:.2f} |

Registry bytes served during provisioning: {mb(provisioned['registry_bytes'] - before['registry_bytes'])}; hub requests: {provisioned['hub_requests'] - before['hub_requests']}.

Second deploy on the provisioned host: {second_s:.1f} s, {totals['success']} changed, {totals['no_change']} unchanged; the servers answered
{served_after['registry_requests'] - served_before['registry_requests']} registry requests ({mb(served_after['registry_bytes'] - served_before['registry_bytes'])}) and {served_after['hub_requests'] - served_before['hub_requests']} hub requests meanwhile.
Goal: rate ratio >= 0.8 and 0 bytes on the second run."""
    print(body)
    write_section("Artifact provisioning against raw transfer (test VM)", "make bench (benchmarks/bench_artifacts.py)", body)


if __name__ == "__main__":
    main()
