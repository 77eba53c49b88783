"""SGLang: `python3 -m sglang.launch_server` command lines and its speculative flags."""

from __future__ import annotations

from sparkstack.engines.base import EngineAdapter


class SglangAdapter(EngineAdapter):
    name = "sglang"
    # Parts of SGLang read SGLANG_/SGL_ variables straight from os.environ; the probe collects
    # every such name its source spells out as well as its `Envs` registry.
    env_prefixes = ("SGLANG_", "SGL_")
    # SGLang takes an API key only as --api-key (or a --config file): no env form.
    api_key_env = None
    # --speculative-algorithm choices in SGLang 0.5.x (upper-cased when rendered).
    speculative_methods = ("eagle", "eagle3", "nextn", "ngram", "standalone")
    speculative_fields = ("method", "num_speculative_tokens", "draft_model", "num_steps", "eagle_topk")
    # SGLang's piecewise torch.compile cache under SGLANG_CACHE_DIR (srt/compilation/backend.py) and DeepGEMM's JIT
    # under SGLANG_DG_CACHE_DIR (srt/layers/deep_gemm_wrapper/compile_utils.py; it overwrites DG_JIT_CACHE_DIR).
    compile_cache_env = {**EngineAdapter.compile_cache_env, "SGLANG_CACHE_DIR": "sglang", "SGLANG_DG_CACHE_DIR": "deep_gemm"}
    version_path = "/server_info"  # sglang/srt/entrypoints/http_server.py: server info carries "version"
    moe_backend_flag = "--moe-runner-backend"
    managed_flags = {
        "--model-path": "model", "--model": "model", "--revision": "revision (the lock pins the commit)",
        "--host": "the kit (0.0.0.0 in the container)", "--port": "port", "--served-model-name": "served_model_name",
        "--mem-fraction-static": "memory.fraction", "--context-length": "context_length",
        "--language-model-only": "language_model_only", "--moe-runner-backend": "moe_backend",
        "--speculative-algorithm": "speculative.method", "--speculative-draft-model-path": "speculative.draft_model",
        "--speculative-draft-model-revision": "speculative.draft_model (the lock pins the commit)",
        "--speculative-num-steps": "speculative.num_steps", "--speculative-eagle-topk": "speculative.eagle_topk",
        "--speculative-num-draft-tokens": "speculative.num_speculative_tokens", "--tool-call-parser": "tools.parser",
        "--reasoning-parser": "reasoning_parser",
    }

    def positional_count(self, argv: list[str]) -> int:
        return 3  # python3 -m sglang.launch_server

    # What SGLang's loader reads in the Hugging Face format: safetensors, configs, tokenizers, remote code.
    # Mistral repos carry a second copy of the weights as consolidated*.safetensors, which SGLang skips.
    def weight_patterns(self, profile) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (("*.json", "*.safetensors", "*.py", "*.txt", "*.model", "*.tiktoken", "*.jinja"),
                ("consolidated*.safetensors", "original/*"))

    def command(self, p, v, revisions, node=None) -> list[str]:
        args = [
            "python3", "-m", "sglang.launch_server",
            "--model-path", p.model,
            # The locked commit: offline (HF_HUB_OFFLINE=1) there is no refs/main to resolve a branch with.
            "--revision", revisions.of(p.model),
            "--host", "0.0.0.0",
            "--port", str(p.port),
            "--served-model-name", p.served_model_name,
            "--mem-fraction-static", f"{v.memory_fraction:g}",
            "--context-length", str(p.context_length),
        ]
        if p.language_model_only:
            # SGLang 0.5.23 has it, 0.5.10rc0 does not: the release check judges the declared range.
            args.append("--language-model-only")
        if p.moe_backend:
            args += [self.moe_backend_flag, p.moe_backend]
        spec = v.speculative
        if spec is not None:
            args += ["--speculative-algorithm", spec.method.upper()]
            if spec.draft_model:
                # Defaults to `main`, not to --revision: the draft needs its own locked commit.
                args += ["--speculative-draft-model-path", spec.draft_model,
                         "--speculative-draft-model-revision", revisions.of(spec.draft_model)]
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

    def speculative_requirements(self, spec) -> list[tuple[str, str]]:
        if spec.method in ("eagle", "eagle3") and not spec.draft_model:
            return [("draft_model", f"sglang needs --speculative-draft-model-path for {spec.method}")]
        return []

    def setting_errors(self, profile, compute_capability: tuple[int, int]) -> list[tuple[str, str]]:
        # SGLang's MoE runner backends are checked against the release's own choices; which GPUs
        # each runs on is not recorded here yet, so a profile that sets one says so in its comment.
        return []
