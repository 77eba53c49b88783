"""The Ray token's way from the head to a worker (sparkstack_host/cluster.py): on the member command's stdin, into
the worker's secrets file, never an argument; a native rank takes none."""

from __future__ import annotations

import io
import json
import subprocess

import pytest

from sparkstack_host import cluster, secrets
from sparkstack_host import switch as sw


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """A worker lent to both cluster models, whose systemctl only records what it is asked."""
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("HF_TOKEN=hf_1\n")
    entry = {"rank": 1, "head": "head", "head_address": "10.77.0.1", "nodes": []}
    registry = {"secrets_file": str(secrets_file), "memory_wait_s": 1, "models": {
        "over-ray": {"variants": ["default"], "unit": "vllm-over-ray.service", "cluster": {**entry, "backend": "ray"}},
        "native": {"variants": ["default"], "unit": "vllm-native.service", "cluster": {**entry, "backend": "native"}},
    }}
    asked = []
    monkeypatch.setattr(sw, "load_registry", lambda: registry)
    monkeypatch.setattr(sw, "VARIANT_DIR", str(tmp_path))
    monkeypatch.setattr(sw, "run", lambda *argv, **_: asked.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))
    lent = tmp_path / "cluster.json"
    monkeypatch.setattr(cluster, "LENT_PATH", str(lent))

    def lend(model):
        lent.write_text(json.dumps({"model": model}))
    return secrets_file, asked, lend


def answer(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_ray_worker_stores_the_token_from_stdin_then_starts_its_rank(worker, capsys):
    secrets_file, asked, lend = worker
    lend("over-ray")
    cluster.member("start over-ray default", io.StringIO("0123abcd\n"))
    assert answer(capsys) == {"ok": True, "started": True}
    assert secrets.read(str(secrets_file)) == {"HF_TOKEN": "hf_1", "RAY_AUTH_TOKEN": "0123abcd"}
    assert asked == [("systemctl", "start", "vllm-over-ray.service")]
    assert not any("0123abcd" in word for argv in asked for word in argv)


def test_a_token_that_would_add_lines_to_the_secrets_file_is_refused_and_nothing_starts(worker, capsys):
    secrets_file, asked, lend = worker
    lend("over-ray")
    # An attacker who holds the head's key tries to write a second variable into the worker's secrets file.
    with pytest.raises(sw.SwitchError, match="the Ray token from the head"):
        cluster.member("start over-ray default", io.StringIO("abc VLLM_API_KEY=mine\n"))
    assert secrets_file.read_text() == "HF_TOKEN=hf_1\n" and asked == []


def test_a_native_rank_takes_no_token(worker, capsys):
    secrets_file, asked, lend = worker
    lend("native")
    with pytest.raises(sw.SwitchError, match="does not run over Ray"):
        cluster.member("start native default", io.StringIO("0123abcd\n"))
    cluster.member("start native default", io.StringIO("\n"))  # what the head sends a native rank
    assert answer(capsys)["started"] is True
    assert secrets_file.read_text() == "HF_TOKEN=hf_1\n"


def test_the_head_refuses_to_start_a_ray_model_without_its_token(tmp_path):
    (tmp_path / "secrets.env").write_text("HF_TOKEN=hf_1\n")
    with pytest.raises(sw.SwitchError, match="has no RAY_AUTH_TOKEN, which a Ray cluster needs; deploy the group"):
        cluster.ray_token({"secrets_file": str(tmp_path / "secrets.env")})
    (tmp_path / "secrets.env").write_text("HF_TOKEN=hf_1\nRAY_AUTH_TOKEN=feed\n")
    assert cluster.ray_token({"secrets_file": str(tmp_path / "secrets.env")}) == "feed"
