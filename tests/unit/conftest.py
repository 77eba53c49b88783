"""Shared helpers: copies of the shipped profiles to mutate, and rendered trees."""

from __future__ import annotations

import shutil
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from sparkstack.paths import models_dir
from tests.standin_engine.server import make_handler


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped profiles."""
    target = tmp_path / "models"
    shutil.copytree(models_dir(), target)
    return target


def edit_profile(directory: Path, name: str, change) -> Path:
    """Load a profile copy, let `change(data)` mutate it, write it back."""
    path = directory / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def engine():
    """Start stand-in servers: engine(served, language_only=..., **knobs) -> base URL."""
    servers = []

    def start(served="qwen36", language_only=True, engine_name="vllm", **knobs):
        ready = threading.Event()
        if not knobs.get("never_ready"):
            ready.set()
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served, language_only, knobs, ready, engine_name))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
