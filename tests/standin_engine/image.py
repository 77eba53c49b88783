"""Build the stand-in engine's docker image without any registry, and load it into this machine's docker.

The image is a Debian minbase root filesystem with python3 and the stand-in
installed as `vllm` and as the `sglang.launch_server` module, made with mmdebstrap
and `docker import`ed into this machine's docker, from which the tests push it to the test hosts' registry. The tarball is cached, keyed by the stand-in's
sources, so it is rebuilt only when they change.

The cluster tests use a second image with Ray from PyPI in it: vLLM's Ray backend needs Ray in the
engine image, and vLLM images since 0.18 do not ship it. It is one more layer (about 160 MB) on top of
the plain image as the registry serves it, so a push sends only that layer; the single-node tests keep
the plain one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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
    digest = hashlib.sha256(b"standin-image-v8" + HUB_CLIENT.encode() + (RAY.encode() if ray else b""))
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
    # The Python packages go in compiled (this machine's python is 3.11, as is the image's): a container starts
    # with no __pycache__ of its own, and compiling huggingface_hub at each start cost the VM 15 s a run.
    hooks = [
        # The server and its declared table in /opt/standin (on sys.path through a .pth file); the
        # `vllm` and `sglang` packages the sparkstack probes import; `vllm` on PATH.
        'mkdir -p "$1/opt/standin"',
        f'cp {HERE}/server.py {HERE}/table.py {HERE}/engine_table.json "$1/opt/standin/"',
        'echo /opt/standin > "$1/usr/lib/python3/dist-packages/standin.pth"',
        f'cp -r {PACKAGES}/vllm {PACKAGES}/sglang "$1/usr/lib/python3/dist-packages/"',
        f'install -m 0755 {HERE}/vllm "$1/usr/local/bin/vllm"',
        f'{sys.executable} -m pip install --quiet --disable-pip-version-check --no-warn-conflicts '
        f'--target "$1/usr/local/lib/python3.11/dist-packages" {HUB_CLIENT}',
        'rm -rf "$1"/usr/share/doc "$1"/usr/share/man "$1"/usr/share/locale "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
        # What nothing in the stand-in runs: Perl's library (42 MB) and glibc's charset converters (8 MB). Every
        # host pulls this image, and the VM unpacks it under TCG.
        'rm -rf "$1"/usr/lib/x86_64-linux-gnu/perl "$1"/usr/share/perl "$1"/usr/lib/x86_64-linux-gnu/gconv',
    ]
    command = ["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,tini",
               *[f"--customize-hook={hook}" for hook in hooks], "bookworm", str(partial)]
    subprocess.run(command, check=True)
    partial.rename(target)
    return target


def _docker(*args: str, stdin=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """This machine's docker (tools/host_services.sh starts its daemon), not a test host's."""
    return subprocess.run(["docker", *args], stdin=stdin, capture_output=True, text=True, timeout=timeout)


def _label(image: str) -> str:
    found = _docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{HASH_LABEL}"}}}}', image)
    return found.stdout.strip() if found.returncode == 0 else ""


@contextlib.contextmanager
def _building():
    """One build at a time on this machine: `make test` starts the VM tier and the hosts tier side by side, and
    both need the image."""
    lock = testhost.cache_root() / "standin" / ".build.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def load_here() -> None:
    """docker import the stand-in on this machine unless the same build is already here. The test hosts get it
    from the registry, as a Spark gets its engine: importing and pushing inside a host (under TCG on the VM) was
    minutes of every run."""
    with _building():
        _load_here()


def _load_here() -> None:
    key = sources_hash()
    if _label(IMAGE) == key:
        return
    tar = tarball()
    testhost.progress(f"importing {IMAGE} into this machine's docker")
    with tar.open("rb") as handle:
        result = _docker("import", "--change", f"LABEL {HASH_LABEL}={key}",
                         "--change", 'ENTRYPOINT ["/usr/bin/tini", "--"]', "-", IMAGE, stdin=handle)
    if result.returncode != 0:
        sys.exit(f"docker import failed: {result.stderr.strip()}")
    testhost.progress(f"loaded {IMAGE} ({key})")


def push(local: str, registry: str, repository: str, storage: Path | None = None) -> str:
    """Push `local` to the registry at `registry` (this machine's loopback) as `repository`; its digest. With
    the registry's `storage` directory, through a seed (`_seeded`)."""
    target = f"{registry}/{repository}"
    if storage is not None:
        with _seeded(local, storage):
            return push(local, registry, repository)
    for command in (("tag", local, target), ("push", "-q", target)):
        result = _docker(*command, timeout=900)
        if result.returncode != 0:
            sys.exit(f"docker {command[0]} {target} failed: {result.stderr.strip()[-800:]}")
    return _docker("image", "inspect", "--format", "{{index .RepoDigests 0}}", target).stdout.strip()


@contextlib.contextmanager
def _seeded(local: str, storage: Path):
    """Around a push into a fresh registry's `storage`: the first push of this image in a run leaves a copy of
    the registry's files in the cache (the seed); each later one starts from that copy, so docker finds every
    layer already there and sends only the manifest. Every hosts shard and the VM have a registry of their
    own, and each push compressed the stand-in again (12 CPU-s of dockerd each, measured; a seeded push took
    0.06 s). One push at a time: the others wait for the seed instead of compressing beside it."""
    image_id = _docker("image", "inspect", "--format", "{{.Id}}", local).stdout.strip().partition(":")[2][:16]
    seeds = testhost.cache_root() / "standin" / "registry-seeds"
    seed = seeds / f"{local.partition(':')[0]}-{image_id}"
    seeds.mkdir(parents=True, exist_ok=True)
    with (seeds / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if seed.is_dir():
            shutil.copytree(seed, storage, dirs_exist_ok=True)
            yield
            return
        yield
        for stale in seeds.glob(f"{local.partition(':')[0]}-*"):  # seeds of older builds
            shutil.rmtree(stale, ignore_errors=True)
        partial = seeds / f"partial-{seed.name}"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(storage, partial)
        partial.rename(seed)


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
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
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


def build_ray_here(base: str) -> None:
    """Build the Ray image on this machine from `base` (the plain stand-in, by digest, as the registry serves it)
    plus the Ray layer, unless the same build is already here."""
    key = sources_hash(ray=True)
    if _label(RAY_IMAGE) == key:
        testhost.progress(f"stand-in image {RAY_IMAGE} ({key}) already built")
        return
    layer = ray_layer()
    pulled = _docker("pull", "-q", base)
    if pulled.returncode != 0:
        sys.exit(f"the plain stand-in {base} could not be pulled here: {pulled.stderr.strip()}")
    testhost.progress(f"building {RAY_IMAGE}: {base} + the Ray layer")
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(f"FROM {base}\nADD ray-layer.tar /\nLABEL {HASH_LABEL}={key}\n")
        shutil.copy(layer, Path(context, "ray-layer.tar"))
        built = _docker("build", "-q", "-t", RAY_IMAGE, context, timeout=900)
    if built.returncode != 0:
        sys.exit(f"docker build of {RAY_IMAGE} failed: {built.stderr.strip()[-800:]}")
    testhost.progress(f"built {RAY_IMAGE} ({key})")


if __name__ == "__main__":
    load_here()
