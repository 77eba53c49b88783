"""Build the stand-in engine's docker image without any registry, and load it into the test VM.

The image is a Debian minbase root filesystem with python3 and the stand-in
installed as `vllm` and as the `sglang.launch_server` module, made with mmdebstrap
and `docker import`ed inside the VM. The tarball is cached, keyed by the stand-in's
sources, so it is rebuilt only when they change.

The cluster tests use a second image with Ray from PyPI in it: vLLM's Ray backend needs Ray in the
engine image, and vLLM images since 0.18 do not ship it. It is one more layer (about 160 MB) on top of
the plain image as the registry serves it, so a push sends only that layer; the single-node tests keep
the plain one.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from sparkstack import testhost

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
    digest = hashlib.sha256(b"standin-image-v6" + HUB_CLIENT.encode() + (RAY.encode() if ray else b""))
    files = [HERE / name for name in SOURCES] + sorted(p for p in PACKAGES.rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def tarball() -> Path:
    key = sources_hash()
    target = testhost.cache_root() / "standin" / f"standin-{key}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    testhost.progress("building the stand-in engine image with mmdebstrap (about a minute)")
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
        f'--target "$1/usr/local/lib/python3.11/dist-packages" {HUB_CLIENT}',
        'rm -rf "$1"/usr/share/doc "$1"/usr/share/man "$1"/usr/share/locale "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
    ]
    command = ["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,tini",
               *[f"--customize-hook={hook}" for hook in hooks], "bookworm", str(partial)]
    subprocess.run(command, check=True)
    partial.rename(target)
    return target


def load_into_vm() -> None:
    """docker import the stand-in into the running VM unless the same build is already there."""
    key = sources_hash()
    image = IMAGE
    current = testhost.ssh(f"docker image inspect --format '{{{{index .Config.Labels \"{HASH_LABEL}\"}}}}' {image} 2>/dev/null")
    if current.stdout.strip() == key:
        testhost.progress(f"stand-in image {image} ({key}) already loaded")
        return
    tar = tarball()
    testhost.progress(f"importing {image} into the VM")
    with tar.open("rb") as handle:
        result = subprocess.run(
            testhost.ssh_command() + [
             f"docker import --change 'LABEL {HASH_LABEL}={key}' --change 'ENTRYPOINT [\"/usr/bin/tini\", \"--\"]' - {image}"],
            stdin=handle, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"docker import failed: {result.stderr.strip()}")
    testhost.progress(f"loaded {image} ({key})")


def ray_layer() -> Path:
    """A tar of what the Ray image adds to the plain one (cached, keyed like the image): Ray and its
    dependencies in /usr/local/lib/python3.11/dist-packages and a `ray` command."""
    key = sources_hash(ray=True)
    target = testhost.cache_root() / "standin" / f"ray-layer-{key}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    testhost.progress(f"building the stand-in's Ray layer ({RAY} from PyPI)")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        site = root / "usr/local/lib/python3.11/dist-packages"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
                        "--no-warn-conflicts", "--target", str(site), RAY], check=True)
        # pip's console scripts carry this machine's python in their #! line: the image gets its own. Ray's
        # libraries (RLlib, Tune, Train, Serve, Data) and its Java jars: nothing here imports them.
        for unused in ("bin", "ray/jars", "ray/rllib", "ray/tune", "ray/train", "ray/serve", "ray/data"):
            shutil.rmtree(site / unused, ignore_errors=True)
        command = root / "usr/local/bin/ray"
        command.parent.mkdir(parents=True)
        command.write_text("#!/usr/bin/python3\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
        command.chmod(0o755)
        partial = target.with_name(f"partial-{target.name}")
        with tarfile.open(partial, "w") as tar:
            tar.add(root / "usr", arcname="usr")
        partial.rename(target)
    return target


def load_ray_into_vm(base: str) -> None:
    """Build the Ray image in the running VM from `base` (the plain stand-in as the registry serves it, by
    digest; pulled if the VM lacks it) plus the Ray layer, unless the same build is already there."""
    key = sources_hash(ray=True)
    current = testhost.ssh(f"docker image inspect --format '{{{{index .Config.Labels \"{HASH_LABEL}\"}}}}' {RAY_IMAGE} 2>/dev/null")
    if current.stdout.strip() == key:
        testhost.progress(f"stand-in image {RAY_IMAGE} ({key}) already built")
        return
    layer = ray_layer()
    pulled = testhost.ssh(f"docker image inspect {base} >/dev/null 2>&1 || docker pull -q {base}", timeout=600)
    if pulled.returncode != 0:
        sys.exit(f"the plain stand-in {base} is not in the VM and could not be pulled: {pulled.stderr.strip()}")
    testhost.progress(f"building {RAY_IMAGE} in the VM: {base} + the Ray layer")
    dockerfile = f"FROM {base}\nADD ray-layer.tar /\nLABEL {HASH_LABEL}={key}\n".encode()
    build = subprocess.Popen(testhost.ssh_command() + [f"docker build -q -t {RAY_IMAGE} -"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with tarfile.open(fileobj=build.stdin, mode="w|") as context:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        context.addfile(info, io.BytesIO(dockerfile))
        context.add(layer, arcname="ray-layer.tar")
    build.stdin.close()
    err = build.stderr.read()
    if build.wait(timeout=900) != 0:
        sys.exit(f"docker build of {RAY_IMAGE} failed: {err.decode(errors='replace').strip()[-800:]}")
    testhost.progress(f"built {RAY_IMAGE} ({key})")


if __name__ == "__main__":
    load_into_vm()
