"""Usage per client key at the front door: requests, prompt and completion tokens, errors, per model.

Kept in SQLite (the standard library's sqlite3) under /var/lib/sparkstack/door, so it survives the door's restarts.
The door counts in memory and writes every FLUSH_S and when it stops: one small transaction a few seconds, never a
write per request on the door's event loop. Anyone on the host may read it (`sparkstack-frontdoor usage`); it holds
client names and counts, never a key.
"""

import json
import os
import sqlite3
import time

FLUSH_S = 2.0
SCHEMA = """CREATE TABLE IF NOT EXISTS usage (
    client TEXT NOT NULL, model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,
    first_at REAL NOT NULL, last_at REAL NOT NULL,
    PRIMARY KEY (client, model))"""
COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "errors")


class UsageBook:
    """Counts in memory, written to the database by flush()."""

    def __init__(self, path):
        self.path = path
        self.pending = {}  # (client, model) -> [requests, prompt, completion, errors, first_at, last_at]
        self.flushed_at = time.monotonic()

    def record(self, client, model, prompt_tokens=0, completion_tokens=0, error=False):
        now = time.time()
        row = self.pending.setdefault((client, model), [0, 0, 0, 0, now, now])
        row[0] += 1
        row[1] += int(prompt_tokens or 0)
        row[2] += int(completion_tokens or 0)
        row[3] += 1 if error else 0
        row[5] = now

    def due(self):
        return bool(self.pending) and time.monotonic() - self.flushed_at >= FLUSH_S

    def flush(self):
        pending, self.pending = self.pending, {}
        self.flushed_at = time.monotonic()
        if not pending:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with sqlite3.connect(self.path) as db:
            db.execute(SCHEMA)
            db.executemany(
                "INSERT INTO usage (client, model, requests, prompt_tokens, completion_tokens, errors, first_at, last_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client, model) DO UPDATE SET "
                "requests = requests + excluded.requests, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = completion_tokens + excluded.completion_tokens, errors = errors + excluded.errors, "
                "last_at = excluded.last_at",
                [(client, model, *row) for (client, model), row in pending.items()])
        db.close()


def read_usage(path):
    """Per client: its totals and its models' rows; {} when nothing was recorded yet."""
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT client, model, requests, prompt_tokens, completion_tokens, errors, last_at "
                          "FROM usage ORDER BY client, model").fetchall()
    except sqlite3.OperationalError:  # the door has not written its table yet
        rows = []
    finally:
        db.close()
    clients = {}
    for client, model, *counts, last_at in rows:
        entry = clients.setdefault(client, {**{c: 0 for c in COLUMNS}, "last_at": 0.0, "models": {}})
        entry["models"][model] = dict(zip(COLUMNS, counts))
        for column, value in zip(COLUMNS, counts):
            entry[column] += value
        entry["last_at"] = max(entry["last_at"], last_at)
    return clients


def tokens_of(payload):
    """(prompt, completion) tokens from an engine's answer: a JSON body's "usage", or a stream's last event that
    carries one (the client asked for stream_options.include_usage); (0, 0) when it says nothing."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, (bytes, bytearray)) else str(payload)
    candidates = [text] if text.lstrip().startswith("{") else [
        line[len("data: "):] for line in reversed(text.splitlines()) if line.startswith("data: {")]
    for candidate in candidates:
        try:
            usage = json.loads(candidate).get("usage")
        except (ValueError, AttributeError):
            continue
        if isinstance(usage, dict):
            # Chat and completions say prompt/completion; the Responses API says input/output.
            return (int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
                    int(usage.get("completion_tokens") or usage.get("output_tokens") or 0))
    return 0, 0
