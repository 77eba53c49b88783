"""Shared by the benchmarks: the results file and its sections."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.md"


def machine() -> str:
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{cpus} cores, qemu TCG test VM (2 vCPU, 2 GB), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def write_section(title: str, command: str, body: str) -> None:
    """Replace (or add) one `## title` section of results.md."""
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n\nFigures printed by the benchmarks; nothing here is asserted by a test.\n"
    section = f"## {title}\n\nCommand: `{command}`  \nMachine: {machine()}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.M | re.S)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")
