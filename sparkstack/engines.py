"""Each engine's command line, built from a profile variant.

The argument lists go verbatim into the launch scripts; the stand-in engine in
tests/ parses the very same lists, so a flag added here is exercised there.
"""

from __future__ import annotations

import json

from sparkstack.profiles import Profile, ResolvedVariant

# Environment variable each engine reads its API key from (set in the secrets
# file, passed with --env-file, never on a command line). vLLM documents
# VLLM_API_KEY as the environment form of --api-key.
API_KEY_ENV = {"vllm": "VLLM_API_KEY"}


def engine_args(profile: Profile, variant: ResolvedVariant) -> list[str]:
    if profile.engine == "vllm":
        return _vllm_args(profile, variant)
    return _sglang_args(profile, variant)


def _vllm_args(p: Profile, v: ResolvedVariant) -> list[str]:
    args = [
        "vllm", "serve", p.model,
        "--host", "0.0.0.0",
        "--port", str(p.port),
        "--served-model-name", p.served_model_name,
        "--gpu-memory-utilization", f"{v.memory_fraction:g}",
        "--max-model-len", str(p.context_length),
    ]
    if p.language_model_only:
        args.append("--language-model-only")
    if v.speculative is not None:
        config = {"method": v.speculative.method}
        if v.speculative.draft_model:
            config["model"] = v.speculative.draft_model
        if v.speculative.num_speculative_tokens:
            config["num_speculative_tokens"] = v.speculative.num_speculative_tokens
        args += ["--speculative-config", json.dumps(config, separators=(",", ":"))]
    if p.tools is not None:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", p.tools.parser]
    if p.reasoning_parser:
        args += ["--reasoning-parser", p.reasoning_parser]
    return args + list(v.extra_args)


def _sglang_args(p: Profile, v: ResolvedVariant) -> list[str]:
    args = [
        "python3", "-m", "sglang.launch_server",
        "--model-path", p.model,
        "--host", "0.0.0.0",
        "--port", str(p.port),
        "--served-model-name", p.served_model_name,
        "--mem-fraction-static", f"{v.memory_fraction:g}",
        "--context-length", str(p.context_length),
    ]
    spec = v.speculative
    if spec is not None:
        args += ["--speculative-algorithm", spec.method.upper()]
        if spec.draft_model:
            args += ["--speculative-draft-model-path", spec.draft_model]
        if spec.num_steps:
            args += ["--speculative-num-steps", str(spec.num_steps)]
        if spec.eagle_topk:
            args += ["--speculative-eagle-topk", str(spec.eagle_topk)]
        if spec.num_speculative_tokens:
            args += ["--speculative-num-draft-tokens", str(spec.num_speculative_tokens)]
    if p.tools is not None:
        args += ["--tool-call-parser", p.tools.parser]
    if p.reasoning_parser:
        args += ["--reasoning-parser", p.reasoning_parser]
    return args + list(v.extra_args)
