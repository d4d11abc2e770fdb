"""The request cache: one SQLite file in the output directory, keyed by the request hash.

Every answered request is committed as soon as it arrives, so a SIGKILL at any moment loses
at most the requests in flight, and a rerun sends only what is missing. Failed requests are
not stored: they are sent again on the next run.

Shards: workers that ask at the same time (`distill gen --ray`) each write their own SQLite file
under `cache/` beside the run's cache (`Cache(path, shard=NAME)`), so no two writers share a
file and a worker's answers outlive it. Every Cache reads the run's cache and every shard there,
so a rerun, with Ray or without, re-sends nothing answered; `merge_shards` folds the shards into
the run's cache once no worker writes any more.
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


COLUMNS = "key, text, reasoning, finish_reason, prompt_tokens, completion_tokens"
SHARDS = "cache"  # folder of the shards, beside the run's cache file


def _connect(path: Path) -> sqlite3.Connection:
    # one user at a time, but not always the thread that opened it (a Ray actor's calls run in a thread of their own)
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(SCHEMA)
    return db


def shard_paths(path: str | Path) -> list[Path]:
    """The shard files written beside the run's cache file `path`, in name order."""
    return sorted((Path(path).parent / SHARDS).glob("*.sqlite"))


class Cache:
    def __init__(self, path: str | Path, shard: str | None = None):
        self.path = Path(path)  # the run's cache
        if shard is not None:
            (self.path.parent / SHARDS).mkdir(exist_ok=True)
        self.own = self.path.parent / SHARDS / f"{shard}.sqlite" if shard is not None else self.path
        self.db = _connect(self.own)
        self.others: dict[Path, sqlite3.Connection] = {}  # the run's cache and the other shards, read only

    def _sources(self) -> list[sqlite3.Connection]:
        for path in [self.path, *shard_paths(self.path)]:
            if path != self.own and path not in self.others and path.exists():
                self.others[path] = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        return [self.db, *self.others.values()]

    def get_many(self, keys: list[str]) -> dict[str, Response]:
        found: dict[str, Response] = {}
        for db in self._sources():
            missing = [k for k in keys if k not in found]
            for start in range(0, len(missing), 500):
                part = missing[start : start + 500]
                marks = ",".join("?" * len(part))
                query = f"SELECT {COLUMNS} FROM responses WHERE key IN ({marks})"
                try:
                    rows = db.execute(query, part).fetchall()
                except sqlite3.OperationalError:  # a shard whose writer has not created its table yet
                    break
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
        for db in [self.db, *self.others.values()]:
            db.close()


def merge_shards(path: str | Path) -> int:
    """Fold every shard beside the run's cache `path` into it and remove the shards (call it only
    when no worker writes any more); returns the rows the shards held."""
    db, rows = _connect(Path(path)), 0
    try:
        for shard in shard_paths(path):
            db.execute("ATTACH DATABASE ? AS shard", (str(shard),))
            try:
                rows += db.execute("SELECT COUNT(*) FROM shard.responses").fetchone()[0]
                db.execute("INSERT OR IGNORE INTO responses SELECT * FROM shard.responses")
            except sqlite3.OperationalError:  # a shard created by a worker that stored nothing
                pass
            db.execute("DETACH DATABASE shard")
            for leftover in (shard, shard.with_name(shard.name + "-wal"), shard.with_name(shard.name + "-shm")):
                leftover.unlink(missing_ok=True)
    finally:
        db.close()
    return rows
