"""The stand-in engine's declared table (engine_table.json), turned into what the real engines expose:
an argparse parser, a version, env vars, parser registries. Used by the stand-in server and by the
small `vllm` and `sglang` packages in the image, which the sparkstack probes import like the real ones."""

import argparse
import json
import os

TABLE_PATH = os.environ.get("STANDIN_ENGINE_TABLE", os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_table.json"))


def table(engine):
    with open(TABLE_PATH, encoding="utf-8") as handle:
        return json.load(handle)[engine]


def add_options(engine, parser):
    for flag, kind in table(engine)["options"].items():
        if kind == "switch":
            parser.add_argument(flag, action="store_true")
        elif isinstance(kind, list):
            parser.add_argument(flag, choices=kind)
        else:
            parser.add_argument(flag)
    return parser


def parser(engine):
    p = argparse.ArgumentParser(prog="vllm serve" if engine == "vllm" else "sglang.launch_server", allow_abbrev=False)
    if engine == "vllm":
        p.add_argument("model")
    return add_options(engine, p)
