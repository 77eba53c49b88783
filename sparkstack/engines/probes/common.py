# Shared by the probes; inlined into each probe before it is sent to a host, so it must
# stay standard-library only.
import argparse
import json
import sys


def plain(value):
    """A default as JSON can hold it, the same on every run: enums by value, other objects by type name only."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    inner = getattr(value, "value", None)
    if inner is not None and isinstance(inner, (str, int, float, bool)):
        return inner
    return "<" + type(value).__name__ + ">"


def describe_parser(parser):
    """Every optional action of an argparse parser: its option strings, nargs, choices and default."""
    actions = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        choices = action.choices
        if choices is not None:
            choices = sorted(str(c) for c in choices)
        # 0: a switch (store_true, BooleanOptionalAction...); None: one value; else argparse's nargs.
        nargs = action.nargs
        default = None if action.default is argparse.SUPPRESS else plain(action.default)
        actions.append({"options": sorted(action.option_strings), "nargs": nargs, "choices": choices,
                        "default": default})
    return sorted(actions, key=lambda a: a["options"][0])


# The answer is one line behind this marker, so whatever else an image prints on stdout cannot pass for it.
MARKER = "SPARKSTACK-PROBE-ANSWER "


def emit(document):
    sys.stdout.write(MARKER + json.dumps(document, sort_keys=True) + "\n")
