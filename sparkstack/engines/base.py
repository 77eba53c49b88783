"""What every engine adapter provides, and the check of a rendered launch against one engine release."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from sparkstack.engines.release import EngineRelease

PROBES_DIR = Path(__file__).resolve().parent / "probes"


@dataclass(frozen=True)
class Finding:
    """One thing an engine release refuses or ignores in what we render."""

    where: str   # a flag (`--moe-backend`) or `env NAME`
    says: str    # what the engine release says about it


class EngineAdapter:
    """Everything engine-specific: the command line, the env, the release checks and the probe.

    Subclasses set the class attributes and implement `command`.
    """

    name: str
    # The words before the first option (e.g. `vllm serve MODEL`): positionals, not checked as flags.
    # Env var prefixes this engine owns: a pinned variable with one of them must be read by the release.
    env_prefixes: tuple[str, ...] = ()
    # Env var the engine reads its API key from (None: only a command-line flag, which we refuse to render).
    api_key_env: str | None = None
    # Speculative methods in sparkstack's lower-case spelling, and the knobs this engine has.
    speculative_methods: tuple[str, ...] = ()
    speculative_fields: tuple[str, ...] = ("method", "num_speculative_tokens", "draft_model")
    # Flags whose values must be among the release's choices when we render them.
    memory_fraction_flag: str
    context_length_flag: str
    # Flags whose value the engine reads case-insensitively (their recorded choices are lower-case).
    case_insensitive_values: tuple[str, ...] = ()
    # Where the running server tells its release: GET path answering JSON with a "version".
    version_path: str
    moe_backend_flag: str
    # Flags the kit renders (flag -> the profile field or the part of the kit that sets it). A profile's
    # extra_args may not repeat one: argparse keeps the last value, so the engine would run with a number the
    # plan, the memory gate and `sparkstack clients` never saw. Flags that would overrule a managed number
    # (vLLM's --kv-cache-memory-bytes beside --gpu-memory-utilization) are listed with the field they overrule.
    managed_flags: dict[str, str] = {}
    # Env vars the kit sets in the container (name -> what sets it); a profile's env may not set one.
    managed_env: dict[str, str] = {"HF_HUB_OFFLINE": "the kit (a start never downloads; the deploy fetched the weights)"}
    # Where the engine keeps what it compiles (env var -> a directory under the compile cache mount; "" is the mount
    # itself), so a restart finds it. Triton's TRITON_CACHE_DIR (triton/knobs.py), Inductor's TORCHINDUCTOR_CACHE_DIR
    # (torch/_inductor/runtime/cache_dir_utils.py) and FlashInfer's FLASHINFER_WORKSPACE_BASE, under which it keeps
    # .cache/flashinfer (flashinfer/jit/env.py); each engine adds its own.
    compile_cache_env: dict[str, str] = {"TRITON_CACHE_DIR": "triton", "TORCHINDUCTOR_CACHE_DIR": "inductor",
                                         "FLASHINFER_WORKSPACE_BASE": ""}

    def managed_flag(self, token: str) -> str | None:
        """The managed flag an extra_args token sets, if any: `--flag`, `--flag=value`, vLLM's `--flag_name`
        spelling and `--flag.key` (a JSON flag's key), and an abbreviation argparse would expand to it."""
        if not token.startswith("--"):
            return None
        name = token.split("=", 1)[0].replace("_", "-").split(".", 1)[0]
        if name in self.managed_flags:
            return name
        if len(name) > 3:  # argparse expands an unambiguous prefix (allow_abbrev is its default)
            expanded = [flag for flag in self.managed_flags if flag.startswith(name)]
            if expanded:
                return expanded[0]
        return None

    def moe_backend_in(self, argv: list[str]) -> str | None:
        """The MoE backend a command line pins, if any."""
        for i, token in enumerate(argv):
            if token == self.moe_backend_flag and i + 1 < len(argv):
                return argv[i + 1]
            if token.startswith(self.moe_backend_flag + "="):
                return token.split("=", 1)[1]
        return None

    def command(self, profile, variant, revisions, node=None) -> list[str]:
        """The engine's command line; `revisions.of(repo)` gives each repo's locked commit."""
        raise NotImplementedError

    def weight_patterns(self, profile) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(allow, ignore) file patterns: what this engine loads from a model repo, so only that is fetched."""
        raise NotImplementedError

    def speculative_requirements(self, spec) -> list[tuple[str, str]]:
        """(field, message) for speculative settings this engine cannot run as given."""
        return []

    def positional_count(self, argv: list[str]) -> int:
        count = 0
        while count < len(argv) and not argv[count].startswith("-"):
            count += 1
        return count

    def cluster_args(self, profile, node) -> list[str]:
        """The flags that make this process one rank of a multi-node engine (sparkstack/cluster.py ClusterNode)."""
        raise NotImplementedError(f"{self.name}: sparkstack does not render multi-node launches for this engine yet")

    def launch_command(self, profile, variant, revisions, node=None) -> list[str]:
        """What the container runs: the engine's command line, unless a multi-node backend wraps it."""
        return self.command(profile, variant, revisions, node)

    def cluster_environment(self, profile, node) -> dict[str, str]:
        """The per-node env a rank needs to find the interconnect."""
        raise NotImplementedError(f"{self.name}: sparkstack does not render multi-node launches for this engine yet")

    def environment(self, profile, variant) -> dict[str, str]:
        """The env vars rendered into the container (the profile's own pins)."""
        return dict(profile.env)

    def probe_source(self) -> str:
        """The probe script, standard library + engine only, as sent to `python3 -` in an image."""
        common = (PROBES_DIR / "common.py").read_text(encoding="utf-8")
        own = (PROBES_DIR / f"{self.name}.py").read_text(encoding="utf-8")
        return common + "\n\n" + own

    # --- checks against one release ------------------------------------------------
    def check(self, argv: list[str], env: dict[str, str], release: EngineRelease) -> list[Finding]:
        findings: list[Finding] = []
        args = argv[self.positional_count(argv):]
        parser = release.parser()
        known = release.options()
        for token in args:
            if token.startswith("--"):
                flag = token.split("=", 1)[0]
                if flag not in known:
                    findings.append(Finding(flag, "has no such option (not in its server parser)"))
        try:
            namespace, extra = parser.parse_known_args(args)
        except argparse.ArgumentError as exc:
            findings.append(Finding(_flag_of(exc) or "(arguments)", f"says: {exc.message if hasattr(exc, 'message') else exc}"))
            namespace, extra = None, []
        previous = None
        for token in extra:
            # A value that follows an unknown flag was reported with the flag already.
            if not token.startswith("--") and not (previous or "").startswith("--"):
                findings.append(Finding(token, "takes no value here (stray argument)"))
            previous = token
        if namespace is not None:
            findings += self._value_findings(args, release)
        for name in sorted(env):
            if name.startswith(self.env_prefixes) and name not in release.env_vars:
                findings.append(Finding(f"env {name}", "does not read it (not among the env vars it knows; it would be ignored)"))
        return findings

    def _value_findings(self, args: list[str], release: EngineRelease) -> list[Finding]:
        findings = []
        for i, token in enumerate(args):
            if not token.startswith("--"):
                continue
            flag, _, inline = token.partition("=")
            value = inline or (args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None)
            allowed = release.value_choices.get(flag)
            if value is not None and flag in self.case_insensitive_values:
                value = value.lower()
            if value is not None and allowed is not None and value not in allowed:
                findings.append(Finding(flag, f"does not know {value!r} (it knows: {', '.join(allowed)})"))
        return findings


def _flag_of(exc: argparse.ArgumentError) -> str | None:
    name = getattr(exc, "argument_name", None)
    return name.split("/")[0] if name else None


def compact_json(value) -> str:
    return json.dumps(value, separators=(",", ":"))
