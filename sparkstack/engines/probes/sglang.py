# SGLang probe: ask the installed SGLang for its version, `sglang.launch_server` options
# and the env vars it reads. Runs with the engine's python; needs no GPU and no model.
import argparse
import os
import re


def _env_vars(package_dir):
    """SGLang's env registry (srt/environ.py `Envs`) plus every SGLANG_/SGL_ name its source spells out,
    since parts of SGLang still read os.environ directly."""
    names = set()
    try:
        from sglang.srt.environ import EnvField, Envs
        names.update(value.name for value in vars(Envs).values() if isinstance(value, EnvField))
    except ImportError:
        pass
    pattern = re.compile(r"[\"'](SGL(?:ANG)?_[A-Z0-9_]+)[\"']")
    for root, _dirs, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as handle:
                    names.update(pattern.findall(handle.read()))
    return sorted(names)


def probe():
    import sglang
    from sglang.srt.server_args import ServerArgs

    try:
        from sglang.version import __version__ as version
    except ImportError:
        version = sglang.__version__
    parser = argparse.ArgumentParser(prog="sglang.launch_server")
    ServerArgs.add_cli_args(parser)
    return {
        "engine": "sglang",
        "version": version,
        "actions": describe_parser(parser),  # noqa: F821 (probes/common.py is sent ahead of this file)
        "value_choices": {},
        "env_vars": _env_vars(os.path.dirname(sglang.__file__)),
        "speculative_config_keys": [],
        "speculative_methods": [],
    }


emit(probe())  # noqa: F821
