# vLLM probe: ask the installed vLLM for its version, `vllm serve` options, parsers,
# speculative config and env vars. Runs with the engine's python; needs no GPU and no model.
import dataclasses
import importlib
import os
import typing

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def _first(*paths):
    for module, name in paths:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise SystemExit(f"probe: none of {paths} exists in this vLLM")


def _literal_values(tp):
    values = []
    for arg in typing.get_args(tp):
        if isinstance(arg, str):
            values.append(arg)
        else:
            values.extend(_literal_values(arg))
    return values


def _env_defaults(envs):
    """What each variable reads as when unset (its getter, called with the variable removed)."""
    defaults = {}
    for name, getter in envs.environment_variables.items():
        saved = os.environ.pop(name, None)
        try:
            defaults[name] = plain(getter())  # noqa: F821 (probes/common.py is sent ahead of this file)
        except Exception:  # a getter that needs more than its own variable: recorded as unknown
            defaults[name] = "<unknown>"
        finally:
            if saved is not None:
                os.environ[name] = saved
    return defaults


def probe():
    import vllm
    import vllm.envs as envs

    parser_class = _first(("vllm.utils.argparse_utils", "FlexibleArgumentParser"), ("vllm.utils", "FlexibleArgumentParser"))
    make_arg_parser = _first(("vllm.entrypoints.common.cli_args", "make_arg_parser"),
                             ("vllm.entrypoints.openai.cli_args", "make_arg_parser"))
    parser = make_arg_parser(parser_class())
    tool_parsers = _first(("vllm.tool_parsers", "ToolParserManager"),
                          ("vllm.entrypoints.openai.tool_parsers", "ToolParserManager")).list_registered()
    reasoning_parsers = _first(("vllm.reasoning", "ReasoningParserManager")).list_registered()
    speculative_config = _first(("vllm.config", "SpeculativeConfig"))
    speculative_method = _first(("vllm.config.speculative", "SpeculativeMethod"))
    value_choices = {"--tool-call-parser": sorted(tool_parsers), "--reasoning-parser": sorted(reasoning_parsers)}
    try:  # --attention-backend is checked against this enum after parsing, not by argparse
        backends = _first(("vllm.v1.attention.backends.registry", "AttentionBackendEnum"),
                          ("vllm.attention.backends.registry", "AttentionBackendEnum"))
        # vLLM upper-cases the value and takes "auto" (vllm/config/attention.py); kept lower-case here.
        value_choices["--attention-backend"] = sorted([b.name.lower() for b in backends] + ["auto"])
    except SystemExit:
        pass
    try:  # vLLM images since 0.18 do not ship Ray; the Ray backend needs it in the image
        import importlib.metadata
        ray = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        ray = None
    return {
        "engine": "vllm",
        "ray": ray,
        "version": vllm.__version__,
        "actions": describe_parser(parser),  # noqa: F821 (probes/common.py is sent ahead of this file)
        "value_choices": value_choices,
        "env_vars": sorted(envs.environment_variables),
        "env_defaults": _env_defaults(envs),
        "speculative_config_keys": sorted(f.name for f in dataclasses.fields(speculative_config)),
        "speculative_methods": sorted(set(_literal_values(speculative_method))),
    }


emit(probe())  # noqa: F821
