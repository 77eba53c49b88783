"""Build the stand-in engine's docker image without any registry, and load it into the test VM.

The image is a Debian minbase root filesystem with python3 and the stand-in
installed as `vllm` and as the `sglang.launch_server` module, made with mmdebstrap
and `docker import`ed inside the VM. The tarball is cached, keyed by the stand-in's
sources, so it is rebuilt only when they change.

The cluster tests use a second build with Ray from PyPI in it (`ray=True`): vLLM's Ray backend needs
Ray in the engine image, and vLLM images since 0.18 do not ship it. It is some hundred MB larger, so
the single-node tests keep the plain one.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from sparkstack import testvm

HERE = Path(__file__).resolve().parent
IMAGE = "sparkstack-standin-engine:latest"
RAY_IMAGE = "sparkstack-standin-engine-ray:latest"
# The minimal `ray` (no dashboard), with its `ray` command; the stand-in's Ray mode imports it.
RAY = "ray==2.60.0"
HASH_LABEL = "io.sparkstack.standin.hash"
SOURCES = ("server.py", "table.py", "engine_table.json", "vllm")
# The Hugging Face client every real engine image ships: the stand-in finds its weights with it, and the
# deploy's sparkstack-hub resolves and fetches with it inside the image.
HUB_CLIENT = "huggingface_hub==2.4.0"
PACKAGES = HERE / "packages"


def sources_hash(ray: bool = False) -> str:
    digest = hashlib.sha256(b"standin-image-v5" + HUB_CLIENT.encode() + (RAY.encode() if ray else b""))
    files = [HERE / name for name in SOURCES] + sorted(p for p in PACKAGES.rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def tarball(ray: bool = False) -> Path:
    key = sources_hash(ray)
    target = testvm.cache_root() / "standin" / f"standin-{'ray-' if ray else ''}{key}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    testvm.progress("building the stand-in engine image with mmdebstrap (about a minute)")
    partial = target.with_name(f"partial-{target.name}")  # mmdebstrap picks the format from the suffix
    # tini as PID 1 forwards SIGTERM at once, even while python is still starting (docker stop stays quick).
    hooks = [
        # The server and its declared table in /opt/standin (on sys.path through a .pth file); the
        # `vllm` and `sglang` packages the sparkstack probes import; `vllm` on PATH.
        'mkdir -p "$1/opt/standin"',
        f'cp {HERE}/server.py {HERE}/table.py {HERE}/engine_table.json "$1/opt/standin/"',
        'echo /opt/standin > "$1/usr/lib/python3/dist-packages/standin.pth"',
        f'cp -r {PACKAGES}/vllm {PACKAGES}/sglang "$1/usr/lib/python3/dist-packages/"',
        f'install -m 0755 {HERE}/vllm "$1/usr/local/bin/vllm"',
        f'{sys.executable} -m pip install --quiet --no-compile --disable-pip-version-check --no-warn-conflicts '
        f'--target "$1/usr/local/lib/python3.11/dist-packages" {HUB_CLIENT}{" " + RAY if ray else ""}',
        # pip's console scripts carry this machine's python in their #! line: the image gets its own.
        'rm -rf "$1/usr/local/lib/python3.11/dist-packages/bin"',
        # Ray's libraries (RLlib, Tune, Train, Serve, Data) and its Java jars: nothing here imports them.
        *(['cd "$1/usr/local/lib/python3.11/dist-packages/ray" && rm -rf jars rllib tune train serve data'] if ray else []),
        *(['printf \'#!/usr/bin/python3\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n\' '
           '> "$1/usr/local/bin/ray"', 'chmod 0755 "$1/usr/local/bin/ray"'] if ray else []),
        'rm -rf "$1"/usr/share/doc "$1"/usr/share/man "$1"/usr/share/locale "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
    ]
    command = ["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,tini",
               *[f"--customize-hook={hook}" for hook in hooks], "bookworm", str(partial)]
    subprocess.run(command, check=True)
    partial.rename(target)
    return target


def load_into_vm(ray: bool = False) -> None:
    """docker import the stand-in into the running VM unless the same build is already there."""
    key = sources_hash(ray)
    image = RAY_IMAGE if ray else IMAGE
    current = testvm.ssh(f"docker image inspect --format '{{{{index .Config.Labels \"{HASH_LABEL}\"}}}}' {image} 2>/dev/null")
    if current.stdout.strip() == key:
        testvm.progress(f"stand-in image {image} ({key}) already loaded")
        return
    tar = tarball(ray)
    testvm.progress(f"importing {image} into the VM")
    with tar.open("rb") as handle:
        result = subprocess.run(
            testvm.ssh_command() + [
             f"docker import --change 'LABEL {HASH_LABEL}={key}' --change 'ENTRYPOINT [\"/usr/bin/tini\", \"--\"]' - {image}"],
            stdin=handle, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"docker import failed: {result.stderr.strip()}")
    testvm.progress(f"loaded {image} ({key})")


if __name__ == "__main__":
    load_into_vm()
