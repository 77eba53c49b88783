"""vLLM: `vllm serve` command lines, its env vars, its speculative config, its MoE backends."""

from __future__ import annotations

import json
import shlex

from packaging.version import Version

from sparkstack.engines.base import EngineAdapter, Finding, compact_json
from sparkstack.engines.release import EngineRelease, parse_specifier

# Where each MoE backend runs, read from vLLM 0.33.0's kernels
# (vllm/model_executor/layers/fused_moe/experts/*.py, `_supports_current_device`):
#   marlin_moe.py            CUDA with compute capability >= 7.5
#   triton_moe.py            any CUDA-alike device
#   flashinfer_cutlass_moe.py SM 9.0, the SM 10.x family and the SM 12.x family
#   trtllm_nvfp4_moe.py      the SM 10.x family only
# An explicit --moe-backend the device cannot run is an error at load (oracle/nvfp4.py,
# `_return_or_raise`), so sparkstack never renders one the target cannot run.
MOE_BACKEND_DEVICES = {
    "marlin": lambda cc: cc >= (7, 5),
    "triton": lambda cc: True,
    "flashinfer_cutlass": lambda cc: cc == (9, 0) or cc[0] in (10, 12),
    "flashinfer_trtllm": lambda cc: cc[0] == 10,
}
# `--moe-backend` exists in vLLM 0.23.0 (vllm/engine/arg_utils.py, kernel group) and 0.33.0.
# Before it, the only spelling was VLLM_FLASHINFER_MOE_BACKEND, which never kept an SM 12.1 GPU
# off FlashInfer's CUTLASS MoE kernels (see `moe_backend` in sparkstack/profiles.py), so older
# releases have no spelling for the setting and a profile that sets it must declare >= 0.23.0.
MOE_BACKEND_FLAG_SINCE = Version("0.23.0")
# What vLLM says when --moe-backend marlin meets an unquantized MoE, captured from vLLM 0.24.0 on an H200
# (tests/contracts/vllm-0.24.0/marlin-unquantized.json; ../shared/REAL-ENGINE.md). Marlin runs quantized
# weights only: with --quantization fp8 (weight-only FP8 through Marlin) the same model starts.
MARLIN_UNQUANTIZED_REFUSAL = ("moe_backend='marlin' is not supported for unquantized MoE. Expected one of "
                              "['triton', 'flashinfer_trtllm', 'flashinfer_cutlass', 'aiter']")


class VllmAdapter(EngineAdapter):
    name = "vllm"
    env_prefixes = ("VLLM_",)
    api_key_env = "VLLM_API_KEY"  # vLLM documents it as the environment form of --api-key
    # vLLM 0.33.0 vllm/config/speculative.py SpeculativeMethod (the ones sparkstack profiles use).
    speculative_methods = ("ngram", "eagle", "eagle3", "mtp", "dflash", "medusa", "draft_model")
    version_path = "/version"  # vllm/entrypoints/serve/instrumentator/basic.py: {"version": ...}
    moe_backend_flag = "--moe-backend"
    case_insensitive_values = ("--attention-backend",)
    managed_flags = {
        "--model": "model", "--revision": "revision (the lock pins the commit)",
        "--host": "the kit (0.0.0.0 in the container, the node's link address for a rank)", "--port": "port",
        "--served-model-name": "served_model_name", "--gpu-memory-utilization": "memory.fraction",
        "--kv-cache-memory-bytes": "memory.fraction", "--max-model-len": "context_length",
        "--language-model-only": "language_model_only", "--moe-backend": "moe_backend",
        "--speculative-config": "speculative", "--enable-auto-tool-choice": "tools",
        "--tool-call-parser": "tools.parser", "--reasoning-parser": "reasoning_parser",
        "--tensor-parallel-size": "cluster.tensor_parallel", "--pipeline-parallel-size": "cluster.pipeline_parallel",
        "--distributed-executor-backend": "cluster.backend", "--nnodes": "cluster (the group's nodes)",
        "--node-rank": "cluster (each node's rank)", "--master-addr": "cluster (the head's link address)",
        "--master-port": "cluster (the group's master port)", "--headless": "cluster (every rank but the head)",
    }
    # vLLM keeps torch.compile's artifacts under VLLM_CACHE_ROOT/torch_compile_cache (vllm/envs.py,
    # vllm/compilation/backends.py) and points Inductor and Triton there itself while it compiles.
    compile_cache_env = {**EngineAdapter.compile_cache_env, "VLLM_CACHE_ROOT": "vllm"}
    managed_env = {
        **EngineAdapter.managed_env,
        **{name: "cluster (the kit sets each rank's interconnect)" for name in (
            "VLLM_HOST_IP", "MASTER_ADDR", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME",
            "UCX_NET_DEVICES", "OMPI_MCA_btl_tcp_if_include", "RAY_memory_monitor_refresh_ms")},
        **{name: "cluster (a Ray group's token auth: the token lives in the secrets file)" for name in (
            "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")},
    }

    # What `vllm serve` loads (vllm/model_executor/model_loader/weight_utils.py): safetensors, or with
    # `--load-format mistral` only Mistral's consolidated files; configs, tokenizers and remote code.
    weight_allow_patterns = ("*.json", "*.safetensors", "*.py", "*.txt", "*.model", "*.tiktoken", "*.jinja")

    def weight_patterns(self, profile) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if _load_format(profile.extra_args) == "mistral":
            return ("*.json", "consolidated*.safetensors", "*.model", "*.tiktoken", "*.jinja"), ()
        return self.weight_allow_patterns, ("consolidated*.safetensors", "original/*")

    def command(self, p, v, revisions, node=None) -> list[str]:
        args = [
            "vllm", "serve", p.model,
            # The locked commit: offline (HF_HUB_OFFLINE=1) there is no refs/main to resolve a branch with.
            "--revision", revisions.of(p.model),
            # In a container with its own network the port is published; a rank runs with the host's network.
            "--host", "0.0.0.0" if node is None else node.bind,
            "--port", str(p.port),
            "--served-model-name", p.served_model_name,
            "--gpu-memory-utilization", f"{v.memory_fraction:g}",
            "--max-model-len", str(p.context_length),
        ]
        if p.language_model_only:
            args.append("--language-model-only")
        if p.moe_backend:
            args += [self.moe_backend_flag, p.moe_backend]
        if v.speculative is not None:
            args += ["--speculative-config", compact_json(self.speculative_config(v.speculative, revisions))]
        if p.tools is not None:
            args += ["--enable-auto-tool-choice", "--tool-call-parser", p.tools.parser]
        if p.reasoning_parser:
            args += ["--reasoning-parser", p.reasoning_parser]
        if node is not None:
            args += self.cluster_args(p, node)
        return args + list(v.extra_args)

    def cluster_args(self, p, node) -> list[str]:
        """The parallel sizes, and how the ranks meet. One GPU per Spark, so nodes = tensor x pipeline parallel.

        native (vllm/entrypoints/cli/serve.py): every node runs the same `vllm serve` with its rank; rank 0
        hosts the torch store at --master-addr:--master-port and the API, the others are --headless.
        ray: only the head runs `vllm serve`, which places its workers on the Ray cluster the nodes formed
        (`launch_command`)."""
        c = p.cluster
        args = ["--tensor-parallel-size", str(c.tensor_parallel)]
        if c.pipeline_parallel > 1:
            args += ["--pipeline-parallel-size", str(c.pipeline_parallel)]
        if c.backend == "ray":
            return args + ["--distributed-executor-backend", "ray"]
        args += ["--nnodes", str(node.nodes), "--node-rank", str(node.rank),
                 "--master-addr", node.head_address, "--master-port", str(node.master_port)]
        if not node.is_head:
            args.append("--headless")
        return args

    def launch_command(self, p, v, revisions, node=None) -> list[str]:
        """What the container runs. With backend: ray every node first joins one Ray cluster, as NVIDIA's
        playbook does by hand (vLLM images since 0.18 do not ship Ray, so the image must): the head starts
        it and then runs `vllm serve`; a worker's `ray start --block` is its whole rank."""
        serve = self.command(p, v, revisions, node)
        if node is None or p.cluster.backend != "ray":
            return serve
        ray_node = [f"--node-ip-address={node.address}", f"--object-store-memory={_bytes(p.cluster.ray_object_store_gb)}",
                    *node.ray_port_options(), "--disable-usage-stats"]
        if not node.is_head:
            return ["ray", "start", "--block", f"--address={node.head_address}:{node.ray_port}", *ray_node]
        # The dashboard (and its job API, which runs code) stays off: nothing on the head needs it.
        head = shlex.join(["ray", "start", "--head", f"--port={node.ray_port}", *ray_node, "--include-dashboard=false"])
        return ["bash", "-c", f'{head} && exec "$@"', "ray-head", *serve]

    def cluster_environment(self, p, node) -> dict[str, str]:
        """What peers set on every rank (../shared/BRIEF.md, "Several Sparks"): the node's own address for vLLM,
        and the interconnect interface for NCCL, Gloo, torch's TensorPipe, UCX and Open MPI. Over Ray, Ray's
        memory monitor is off: it kills workers when memory runs high, and the weights fill a Spark's memory
        by design (the memory gate and guard own that)."""
        env = {
            "VLLM_HOST_IP": node.address,
            "MASTER_ADDR": node.head_address,
            "NCCL_SOCKET_IFNAME": node.interface,
            "GLOO_SOCKET_IFNAME": node.interface,
            "TP_SOCKET_IFNAME": node.interface,
            "UCX_NET_DEVICES": node.interface,
            "OMPI_MCA_btl_tcp_if_include": node.interface,
        }
        if p.cluster.backend == "ray":
            env["RAY_memory_monitor_refresh_ms"] = "0"
            # Ray's token auth (Ray >= 2.52): every node, and every client of the cluster, must present the group's
            # token (RAY_AUTH_TOKEN, from the secrets file by name; sparkstack_host/cluster.py hands it to workers).
            env["RAY_AUTH_MODE"] = "token"
        return env | node.extra_env

    @staticmethod
    def speculative_config(spec, revisions) -> dict:
        config = {"method": spec.method}
        if spec.draft_model:
            config["model"] = spec.draft_model
            # SpeculativeConfig.revision: the draft's own commit (it does not follow --revision).
            config["revision"] = revisions.of(spec.draft_model)
        if spec.num_speculative_tokens:
            config["num_speculative_tokens"] = spec.num_speculative_tokens
        return config

    def check(self, argv: list[str], env: dict[str, str], release: EngineRelease) -> list[Finding]:
        findings = super().check(argv, env, release)
        for i, token in enumerate(argv[:-1]):
            if token == "--speculative-config":
                findings += self._speculative_findings(argv[i + 1], release)
        return findings

    @staticmethod
    def _speculative_findings(raw: str, release: EngineRelease) -> list[Finding]:
        try:
            config = json.loads(raw)
        except ValueError:
            return [Finding("--speculative-config", "cannot read it: not JSON")]
        findings = []
        if release.speculative_config_keys:
            for key in sorted(set(config) - release.speculative_config_keys):
                findings.append(Finding(f"--speculative-config {key}", "has no such speculative config key"))
        method = config.get("method")
        if release.speculative_methods and method not in release.speculative_methods:
            findings.append(Finding("--speculative-config method",
                                    f"does not know method {method!r} (it knows: {', '.join(release.speculative_methods)})"))
        return findings

    # --- version-aware settings -------------------------------------------------------
    def setting_errors(self, profile, compute_capability: tuple[int, int]) -> list[tuple[str, str]]:
        """(field, message) for settings this engine cannot spell for the declared releases or run on the target."""
        errors = []
        backend = profile.moe_backend
        if backend is None:
            return errors
        runs_on = MOE_BACKEND_DEVICES.get(backend)
        cc = ".".join(map(str, compute_capability))
        if runs_on is None:
            errors.append(("moe_backend", f"sparkstack does not know which GPUs vLLM's {backend!r} MoE backend runs on "
                           f"(known: {', '.join(sorted(MOE_BACKEND_DEVICES))}); read its `_supports_current_device` in "
                           "vllm/model_executor/layers/fused_moe/experts/ and add it to MOE_BACKEND_DEVICES"))
        elif not runs_on(compute_capability):
            errors.append(("moe_backend", f"vLLM's {backend!r} MoE backend does not run on compute capability {cc} "
                           f"(the target GPU); vLLM refuses it at load. Backends that do: "
                           f"{', '.join(b for b, ok in sorted(MOE_BACKEND_DEVICES.items()) if ok(compute_capability))}"))
        if backend == "marlin":
            quantized_at_load = any(a == "--quantization" or a.startswith("--quantization=") for a in profile.extra_args)
            if profile.checkpoint_quantization is None and not quantized_at_load:
                errors.append(("checkpoint_quantization", "moe_backend marlin runs quantized MoE weights only, and "
                               "the profile does not say whether the checkpoint is quantized; set "
                               "checkpoint_quantization to its config.json quantization_config.quant_method, or none"))
            elif profile.checkpoint_quantization == "none" and not quantized_at_load:
                errors.append(("moe_backend", f"marlin with an unquantized checkpoint: vLLM refuses it at start "
                               f"({MARLIN_UNQUANTIZED_REFUSAL}); choose one of those backends, or quantize at load "
                               "(extra_args: [--quantization, fp8])"))
        if _lowest_admitted(profile.engine_version) < MOE_BACKEND_FLAG_SINCE:
            errors.append(("engine_version", f"{profile.engine_version!r} admits vLLM releases before "
                           f"{MOE_BACKEND_FLAG_SINCE}, which have no --moe-backend to spell moe_backend with; "
                           f"declare >={MOE_BACKEND_FLAG_SINCE}"))
        return errors


def _bytes(gb: float) -> int:
    return int(round(gb * 10**9))


def _load_format(args: list[str]) -> str | None:
    for i, token in enumerate(args):
        if token == "--load-format" and i + 1 < len(args):
            return args[i + 1]
        if token.startswith("--load-format="):
            return token.split("=", 1)[1]
    return None


def _lowest_admitted(specifier: str) -> Version:
    """The lower bound a specifier states (0 when it states none)."""
    lowest = Version("0")
    for clause in parse_specifier(specifier):
        if clause.operator in (">=", ">", "==", "~=", "==="):
            try:
                lowest = max(lowest, Version(clause.version.rstrip(".*")))
            except ValueError:
                continue
    return lowest
