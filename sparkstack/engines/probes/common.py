# Shared by the probes; inlined into each probe before it is sent to a host, so it must
# stay standard-library only.
import argparse
import json
import sys


def describe_parser(parser):
    """Every optional action of an argparse parser: its option strings, nargs and choices."""
    actions = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        choices = action.choices
        if choices is not None:
            choices = sorted(str(c) for c in choices)
        # 0: a switch (store_true, BooleanOptionalAction...); None: one value; else argparse's nargs.
        nargs = action.nargs
        actions.append({"options": sorted(action.option_strings), "nargs": nargs, "choices": choices})
    return sorted(actions, key=lambda a: a["options"][0])


# The answer is one line behind this marker, so whatever else an image prints on stdout cannot pass for it.
MARKER = "SPARKSTACK-PROBE-ANSWER "


def emit(document):
    sys.stdout.write(MARKER + json.dumps(document, sort_keys=True) + "\n")
