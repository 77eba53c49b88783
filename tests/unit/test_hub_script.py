"""files/sparkstack-hub's own guards (it runs inside an engine image, so it cannot share the kit's checks): file
names that leave the snapshot are refused before anything is written or removed, and the HF token is never sent
in clear over a network. The hub against a real Hugging Face-compatible server is the hosts tier's
(tests/hosts/test_7_artifacts.py)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

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


def test_the_digest_is_an_lfs_files_sha256_else_its_git_blob_id(hub):
    from huggingface_hub.hf_api import RepoFile

    weights = RepoFile(type="file", oid="a" * 40, size=5, path="model.safetensors",
                       lfs={"oid": "b" * 64, "size": 5, "pointerSize": 130})
    config = RepoFile(type="file", oid="c" * 40, size=2, path="config.json")
    assert hub.content_digest(weights) == "sha256:" + "b" * 64
    assert hub.content_digest(config) == "git-sha1:" + "c" * 40


def snapshot_with(hub, files: dict[str, bytes]) -> tuple[dict, dict]:
    """A fetched snapshot as huggingface_hub leaves it: blobs, and snapshot links to them."""
    import hashlib
    import os

    base = hub.repo_dir("org/model")
    commit = "d" * 40
    links = {}
    for name, data in files.items():
        blob = os.path.join(base, "blobs", hashlib.sha256(name.encode()).hexdigest())
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        with open(blob, "wb") as handle:
            handle.write(data)
        link = os.path.join(base, "snapshots", commit, name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(blob, link)
        links[name] = (link, blob)
    return {"repo": "org/model", "commit": commit, "files": {n: len(d) for n, d in files.items()}}, links


def test_fetched_files_whose_bytes_match_the_lock_are_kept(hub):
    import hashlib

    weights, config = b"the weights", b"{}"
    spec, links = snapshot_with(hub, {"model.safetensors": weights, "config.json": config})
    spec["digests"] = {"model.safetensors": "sha256:" + hashlib.sha256(weights).hexdigest(),
                       # git's blob id: sha1 over "blob <size>\0" and the bytes, as `git hash-object` gives it
                       "config.json": "git-sha1:" + hashlib.sha1(b"blob 2\0{}").hexdigest()}
    hub.check_digests(spec, spec["files"])
    assert all(Path(link).exists() for link, _ in links.values())


def test_a_hub_that_sends_wrong_bytes_of_the_right_size_is_refused_and_they_are_removed(hub):
    import hashlib

    # The attacker's hub answers for the locked commit with bytes of its own, the same size as the real ones.
    spec, links = snapshot_with(hub, {"model.safetensors": b"evil weights", "config.json": b"{}"})
    spec["digests"] = {"model.safetensors": "sha256:" + hashlib.sha256(b"real weights").hexdigest(),
                       "config.json": "git-sha1:" + hashlib.sha1(b"blob 2\0{}").hexdigest()}
    with pytest.raises(hub.WrongBytes, match=r"model.safetensors hashes to sha256:[0-9a-f]{64}, the lock says sha256:"):
        hub.check_digests(spec, spec["files"])
    link, blob = links["model.safetensors"]
    assert not Path(link).exists() and not Path(blob).exists()  # never loaded: the engine finds no file
    assert Path(links["config.json"][0]).exists()


def test_wrong_bytes_end_the_hub_with_exit_3_so_the_fetcher_does_not_retry(hub, monkeypatch, capsys):
    def sends_wrong_bytes(spec):
        raise hub.WrongBytes("org/model@dddddddddddd: the hub sent the wrong bytes")
    monkeypatch.setattr(hub, "fetch", sends_wrong_bytes)
    assert hub.main(["fetch", '{"repo": "org/model"}']) == 3
    assert "the hub sent the wrong bytes" in capsys.readouterr().err
