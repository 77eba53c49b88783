"""Engine adapters: everything engine-specific lives in one module per engine.

An adapter builds the command line and env from a profile variant, knows the env var an
engine reads its API key from, maps version-dependent settings (the MoE backend) onto the
engine's own spelling, checks a rendered launch against what an engine release accepts
(sparkstack/engines/release.py), and carries the probe that asks an image or a PyPI
release for that (sparkstack/engines/probes/). Adding an engine is one module here.
"""

from __future__ import annotations

from sparkstack.engines.base import EngineAdapter, Finding
from sparkstack.engines.sglang import SglangAdapter
from sparkstack.engines.vllm import VllmAdapter

# A DGX Spark's GB10 GPU is compute capability 12.1 ("SM 12.1" in seeds 000/001); engines refuse
# kernels that do not run on it, so the adapters check settings against it.
SPARK_COMPUTE_CAPABILITY = (12, 1)

ADAPTERS: dict[str, EngineAdapter] = {a.name: a for a in (VllmAdapter(), SglangAdapter())}


def adapter_for(engine: str) -> EngineAdapter:
    return ADAPTERS[engine]


def engine_args(profile, variant, revisions, node=None) -> list[str]:
    """What the engine's container runs; `node` (sparkstack/cluster.py) makes it one rank of a cluster profile."""
    return adapter_for(profile.engine).launch_command(profile, variant, revisions, node)


# Engine -> the env var it reads its API key from (set in the secrets file, passed with
# --env-file, never on a command line); engines without one cannot be exposed.
API_KEY_ENV = {name: a.api_key_env for name, a in ADAPTERS.items() if a.api_key_env}

__all__ = ["ADAPTERS", "API_KEY_ENV", "SPARK_COMPUTE_CAPABILITY", "EngineAdapter", "Finding", "adapter_for", "engine_args"]
