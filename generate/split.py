"""Train/test split, deterministic by seed, in the two modes of DESIGN.md.

item (knowledge, closed-book): some items of the training documents are held out; a test
question that duplicates or nearly duplicates a train question is dropped from test.
document (skill, open-book): whole documents are held out; no document feeds both files.
"""

from __future__ import annotations

import hashlib

from generate.dedup import NearDuplicates


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _held_out(keys: list[str], fraction: float, seed: int) -> set[str]:
    """round(fraction * n) keys, at least one when the fraction is positive and n >= 2."""
    if fraction <= 0 or len(keys) < 2:
        return set()
    count = min(len(keys) - 1, max(1, round(fraction * len(keys))))
    return set(sorted(keys, key=lambda k: _rank(seed, k))[:count])


def split(records: list[dict], mode: str, fraction: float, seed: int, threshold: float) -> tuple[list, list, int]:
    """(train, test, dropped): dropped counts test items removed as near-duplicates of train ones."""
    if mode == "document":
        test_docs = _held_out(sorted({r["source"]["doc"] for r in records}), fraction, seed)
        train = [r for r in records if r["source"]["doc"] not in test_docs]
        test = [r for r in records if r["source"]["doc"] in test_docs]
        return _mark(train, "train"), _mark(test, "test"), 0
    test_ids = _held_out([r["id"] for r in records], fraction, seed)
    train = [r for r in records if r["id"] not in test_ids]
    index = NearDuplicates(threshold)
    for r in train:
        index.add(r["id"], r["question"])
    held = [r for r in records if r["id"] in test_ids]
    test = [r for r in held if not index.match(r["question"])]
    return _mark(train, "train"), _mark(test, "test"), len(held) - len(test)


def _mark(records: list[dict], name: str) -> list[dict]:
    return [{**r, "split": name} for r in records]
