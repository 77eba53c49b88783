#!/usr/bin/env python3
"""Snapshot what one engine release accepts, from the release itself.

    python tools/snapshot_engine.py vllm==0.33.0 [sglang==0.5.23 ...] [--work DIR] [--keep] [--without DIST ...]

For each release: make a throwaway venv under --work, `pip install` exactly that release
from PyPI (with VLLM_TARGET_DEVICE=cpu; no GPU is needed to build the parsers), run the
engine's probe (sparkstack/engines/probes/, the same script the deploy runs inside a pinned
image) with the venv's python, and write sparkstack/engines/releases/<engine>-<version>.json.
Not part of `make test`: each install is several GB (vLLM 0.33.0: about 7 GB and 4 minutes
here). --keep reuses and keeps the venvs. --without DIST installs the release without that one dependency
(when PyPI lacks the exact pin: vLLM 0.34.0 pins flashinfer-python==0.7.3, which PyPI does not have); the
probe never imports it, and the snapshot's source says what was left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparkstack.engines import ADAPTERS  # noqa: E402
from sparkstack.engines.release import RELEASES_DIR, EngineRelease, probe_answer  # noqa: E402


def requirements_without(requirement: str, work: Path, without: set[str]) -> tuple[list[str], list[str]]:
    """The release's own Requires-Dist (no extras), less the distributions named in `without`; and what was left out."""
    import re
    import zipfile

    download = work / "downloads"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(download), requirement], check=True)
    name, _, version = requirement.partition("==")
    wheel = next(download.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    kept, left = [], []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist: ") or "extra ==" in line:
            continue
        spec = line[len("Requires-Dist: "):]
        dist = re.split(r"[\s\[<>=!~;(]", spec, maxsplit=1)[0].lower().replace("_", "-")
        (left if dist in without else kept).append(spec)
    return kept, left


def snapshot(requirement: str, work: Path, keep: bool, without: set[str] = frozenset()) -> Path:
    engine, _, version = requirement.partition("==")
    if engine not in ADAPTERS or not version:
        sys.exit(f"{requirement}: expected ENGINE==VERSION with ENGINE one of {', '.join(ADAPTERS)}")
    venv = work / f"{engine}-{version}"
    env = os.environ | {"VLLM_TARGET_DEVICE": "cpu", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    started = time.monotonic()
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", f"import importlib.metadata as m; print(m.version({engine!r}))"],
                               capture_output=True, text=True)
    if installed.stdout.strip() != version:
        print(f"{requirement}: installing into {venv} (several GB)", flush=True)
        if without:
            kept, left = requirements_without(requirement, work, without)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", requirement], check=True, env=env)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *kept], check=True, env=env)
            (venv / "left-out.txt").write_text("\n".join(left))
        else:
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", requirement], check=True, env=env)
    install_s = time.monotonic() - started
    probe = subprocess.run([str(venv / "bin" / "python"), "-"], input=ADAPTERS[engine].probe_source(),
                           capture_output=True, text=True, env=env, check=False)
    if probe.returncode != 0:
        sys.exit(f"{requirement}: the probe failed:\n{probe.stderr[-3000:]}")
    document = probe_answer(probe.stdout)
    if document["version"] != version:
        sys.exit(f"{requirement}: the installed engine reports {document['version']}")
    left_out = (venv / "left-out.txt").read_text().split("\n") if (venv / "left-out.txt").exists() else []
    document["source"] = f"PyPI {requirement}, probed by tools/snapshot_engine.py" + (
        f" (installed without {', '.join(left_out)}: not on PyPI; the probe does not import it)" if left_out else "")
    EngineRelease.from_document(document, requirement)  # refuse to write what we cannot read back
    target = RELEASES_DIR / f"{engine}-{version}.json"
    target.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 1e9
    print(f"{requirement}: wrote {target.relative_to(ROOT)} ({len(document['actions'])} options, "
          f"{len(document['env_vars'])} env vars); install {install_s:.0f} s, venv {size:.1f} GB, "
          f"probe {time.monotonic() - started - install_s:.0f} s", flush=True)
    if not keep:
        shutil.rmtree(venv)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", nargs="+", help="ENGINE==VERSION, e.g. vllm==0.33.0")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/sparkstack-engine-snapshots"))
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the venvs")
    parser.add_argument("--without", action="append", default=[], metavar="DIST",
                        help="install the release without this dependency (PyPI lacks its pin)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for requirement in args.requirements:
        snapshot(requirement, args.work, args.keep, {d.lower().replace("_", "-") for d in args.without})


if __name__ == "__main__":
    main()
