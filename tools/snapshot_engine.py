#!/usr/bin/env python3
"""Snapshot what one engine release accepts, from the release itself.

    python tools/snapshot_engine.py vllm==0.33.0 [sglang==0.5.23 ...] [--work DIR] [--keep]

For each release: make a throwaway venv under --work, `pip install` exactly that release
from PyPI (with VLLM_TARGET_DEVICE=cpu; no GPU is needed to build the parsers), run the
engine's probe (sparkstack/engines/probes/, the same script the deploy runs inside a pinned
image) with the venv's python, and write sparkstack/engines/releases/<engine>-<version>.json.
Not part of `make test`: each install is several GB (vLLM 0.33.0: about 7 GB and 4 minutes
here). --keep reuses and keeps the venvs.
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


def snapshot(requirement: str, work: Path, keep: bool) -> Path:
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
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", requirement], check=True, env=env)
    install_s = time.monotonic() - started
    probe = subprocess.run([str(venv / "bin" / "python"), "-"], input=ADAPTERS[engine].probe_source(),
                           capture_output=True, text=True, env=env, check=False)
    if probe.returncode != 0:
        sys.exit(f"{requirement}: the probe failed:\n{probe.stderr[-3000:]}")
    document = probe_answer(probe.stdout)
    if document["version"] != version:
        sys.exit(f"{requirement}: the installed engine reports {document['version']}")
    document["source"] = f"PyPI {requirement}, probed by tools/snapshot_engine.py"
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
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for requirement in args.requirements:
        snapshot(requirement, args.work, args.keep)


if __name__ == "__main__":
    main()
