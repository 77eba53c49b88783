"""The door's client keys stay on the owner's machine; the host gets digests, and a bad key is refused by name."""

from __future__ import annotations

import json
import stat

import pytest

from sparkstack import client_keys
from sparkstack_host import usage
from sparkstack_host.contract import key_digest


@pytest.fixture(autouse=True)
def keys_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKSTACK_KEYS_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def test_the_deploy_makes_a_key_once_private_to_the_owner_and_the_host_gets_its_digest_only(keys_dir):
    document = json.loads(client_keys.clients_document("spark-1", ["laptop", "ci"]))
    laptop = (keys_dir / "spark-1" / "laptop.key").read_text().strip()
    assert laptop.startswith("sk-spark-laptop-") and len(laptop) >= 40
    assert stat.S_IMODE((keys_dir / "spark-1" / "laptop.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys_dir / "spark-1").stat().st_mode) == 0o700
    assert document == {"format": 1, "clients": {"ci": key_digest(client_keys.read_key("spark-1", "ci")),
                                                 "laptop": key_digest(laptop)}}
    assert laptop not in json.dumps(document)
    # Again: the same keys, the same document (the deploy changes nothing).
    assert client_keys.clients_document("spark-1", ["laptop", "ci"]) == client_keys.clients_document("spark-1", ["ci", "laptop"])
    # Another host gets keys of its own.
    assert client_keys.ensure_key("spark-2", "laptop") != laptop


@pytest.mark.parametrize("given,problem", [
    ("too-short", "has 9 characters; a client key has 32 or more"),
    ("sk-" + "x" * 30 + " with a space", "holds a space, a quote"),
])
def test_a_key_the_owner_gives_that_is_short_or_has_odd_characters_is_refused_naming_its_file(keys_dir, given, problem):
    (keys_dir / "spark-1").mkdir(parents=True)
    (keys_dir / "spark-1" / "phone.key").write_text(given + "\n")
    with pytest.raises(client_keys.ClientKeyError) as refused:
        client_keys.clients_document("spark-1", ["phone"])
    assert "phone.key" in str(refused.value) and "'phone' on spark-1" in str(refused.value)
    assert given not in str(refused.value)


@pytest.mark.parametrize("payload,tokens", [
    (b'{"usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}}', (12, 4)),
    (b'data: {"choices": []}\n\ndata: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9}}\n\n'
     b'data: [DONE]\n\n', (7, 9)),
    (b'{"usage": {"input_tokens": 3, "output_tokens": 5}}', (3, 5)),  # the Responses API's names
    (b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n', (0, 0)),  # no usage asked for
    (b'data: {"choices": [], "us', (0, 0)),  # cut off
])
def test_tokens_are_read_from_the_engines_usage_wherever_it_puts_them(payload, tokens):
    assert usage.tokens_of(payload) == tokens
