"""The door's named client keys (sparkstack_frontdoor_clients), kept on this machine, never on the Spark.

Each key is a file, KEYS_DIR/HOST/CLIENT.key (mode 0600; KEYS_DIR is $SPARKSTACK_KEYS_DIR, else
~/.config/sparkstack/keys): made by the deploy from this machine's random source when absent, or written there by
the owner beforehand to give a key of their own (32 to 4096 printable characters without spaces, quotes,
backslashes or $). The host gets only each key's SHA-256 (sparkstack_host.contract.key_digest), in
/etc/sparkstack/door-clients.json; a client taken out of the group's list is gone from that file at the next deploy,
and the door refuses its key from then on. One key per host and client: a key that leaks opens one door.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from sparkstack.paths import display_path
from sparkstack_host.contract import DOOR_CLIENTS_FORMAT, key_digest
from sparkstack_host.secrets import value_problem

MIN_KEY_CHARS = 32


class ClientKeyError(Exception):
    pass


def keys_dir() -> Path:
    if os.environ.get("SPARKSTACK_KEYS_DIR"):
        return Path(os.environ["SPARKSTACK_KEYS_DIR"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "sparkstack" / "keys"


def key_path(host: str, client: str) -> Path:
    return keys_dir() / host / f"{client}.key"


def read_key(host: str, client: str) -> str | None:
    path = key_path(host, client)
    if not path.is_file():
        return None
    key = path.read_text(encoding="utf-8").strip()
    problem = value_problem(f"the key in {display_path(path)}", key)
    if problem is None and len(key) < MIN_KEY_CHARS:
        problem = f"the key in {display_path(path)} has {len(key)} characters; a client key has {MIN_KEY_CHARS} or more"
    if problem:
        raise ClientKeyError(f"{problem} (sparkstack_frontdoor_clients: {client!r} on {host}); write another key "
                             "there, or delete the file and the deploy makes one")
    return key


def ensure_key(host: str, client: str) -> str:
    """The client's key for this host: the one on this machine, else a new one (32 random bytes), kept 0600."""
    key = read_key(host, client)
    if key is not None:
        return key
    path = key_path(host, client)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = f"sk-spark-{client}-{secrets.token_urlsafe(32)}"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


def clients_document(host: str, clients: list[str]) -> str:
    """/etc/sparkstack/door-clients.json for HOST: each listed client's key digest (keys made where absent)."""
    digests = {client: key_digest(ensure_key(host, client)) for client in sorted(clients)}
    return json.dumps({"format": DOOR_CLIENTS_FORMAT, "clients": digests}, indent=2, sort_keys=True) + "\n"


def local_keys() -> dict[str, list[str]]:
    """host -> the clients whose keys this machine holds."""
    root = keys_dir()
    if not root.is_dir():
        return {}
    return {host.name: sorted(p.stem for p in host.glob("*.key")) for host in sorted(root.iterdir()) if host.is_dir()}
