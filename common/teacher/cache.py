"""The request cache: one SQLite file in the output directory, keyed by the request hash.

Every answered request is committed as soon as it arrives, so a SIGKILL at any moment loses
at most the requests in flight, and a rerun sends only what is missing. Failed requests are
not stored: they are sent again on the next run.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from common.teacher.backends import Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    reasoning TEXT,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    extra TEXT NOT NULL,  -- unused, always '{}': kept so that caches written before stay readable
    created REAL NOT NULL
)
"""


class Cache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(SCHEMA)

    def get_many(self, keys: list[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT key, text, reasoning, finish_reason, prompt_tokens, completion_tokens FROM responses WHERE key IN ({marks})", part)
            for key, text, reasoning, finish, p_tok, c_tok in rows:
                found[key] = Response(key, text, reasoning, finish, p_tok, c_tok)
        return found

    def put(self, response: Response) -> None:
        """Store one answered request (failed requests are never stored)."""
        if response.error is not None:
            return
        self.db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                response.key,
                response.text,
                response.reasoning,
                response.finish_reason,
                response.prompt_tokens,
                response.completion_tokens,
                "{}",
                time.time(),
            ),
        )

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()
