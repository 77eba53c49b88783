"""files/sparkstack-hub's own guards (it runs inside an engine image, so it cannot share the kit's checks): file
names that leave the snapshot are refused before anything is written or removed, and the HF token is never sent
in clear over a network. The hub against a real Hugging Face-compatible server is the hosts tier's
(tests/hosts/test_7_artifacts.py)."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import pytest

from sparkstack.paths import files_dir


@pytest.fixture
def hub(tmp_path, monkeypatch):
    loader = importlib.machinery.SourceFileLoader("sparkstack_hub", str(files_dir() / "sparkstack-hub"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("sparkstack_hub", loader))
    loader.exec_module(module)
    monkeypatch.setenv("HF_TOKEN", "hf_the_owners_token")  # as sparkstack-fetch hands it to the container
    monkeypatch.setattr(module, "repo_dir", lambda repo: str(tmp_path / "cache" / repo.replace("/", "--")))
    return module


def test_a_lock_naming_a_file_outside_the_snapshot_removes_nothing(hub, tmp_path):
    # The attacker's lock (or hub answer) names the owner's file, hoping the cleaner deletes it as "damaged".
    victim = tmp_path / "victim.txt"
    victim.write_text("the owner's file")
    partial = tmp_path / "cache" / "org--model" / "blobs" / "abc.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_text("a download in progress")
    spec = {"repo": "org/model", "commit": "c" * 40, "files": {"config.json": 1, "../../../../victim.txt": 1}}
    with pytest.raises(SystemExit, match="refusing the file name .*: it leaves the snapshot"):
        hub.clean(spec)
    with pytest.raises(SystemExit, match="it leaves the snapshot"):
        hub.missing(spec)
    assert victim.read_text() == "the owner's file"
    assert partial.exists()  # refused before the cleaner touched anything


@pytest.mark.parametrize("endpoint,sent", [
    ("https://huggingface.co", True),
    ("http://127.0.0.1:5080", True),
    ("http://localhost:5080", True),
    ("http://hf-mirror.lan:8090", False),
    ("http://192.168.1.20", False),
])
def test_the_token_goes_only_over_https_or_to_this_host(hub, monkeypatch, capsys, endpoint, sent):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    assert hub.token() == ("hf_the_owners_token" if sent else False)  # False: huggingface_hub looks no further
    out = capsys.readouterr().out
    assert ("not sending HF_TOKEN" in out) is not sent
    assert "hf_the_owners_token" not in out
