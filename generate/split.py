"""Train/test split, deterministic by seed, in the two modes of DESIGN.md.

item (knowledge, closed-book): every fact is taught; what is held out is a phrasing. Facts
asked in several questions (the records' `fact` groups) give test.jsonl some of their
phrasings and keep at least one in train.jsonl, so the test asks taught facts in other words.
Data without phrasings (every fact asked once) falls back to holding out whole items, whose
facts are then untaught; a test question that nearly duplicates a train question is dropped.
document (skill, open-book): whole documents are held out; no document feeds both files.

Before the split, near-twin phrasings of one fact are dropped (`drop_near_twins`): a held-out
phrasing must differ from the taught ones by more than a trivial edit ("at sea level?" / "at sea
levels?"). Two phrasings are near-twins when the Jaccard similarity of their word sets reaches the
threshold (near_twin_threshold, 0.7): words lowercased (NFKC, casefold) and lightly stemmed (one
suffix of -ing, -ed, -es, -s cut where three letters stay; -ss kept). At 0.7 one word swapped in
a question of six words or fewer, or a plural, makes a twin; another question word, voice or order does not.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from functools import lru_cache
from typing import NamedTuple

from generate.dedup import NearDuplicates

WORD = re.compile(r"\w+")
SUFFIXES = ("ing", "ed", "es", "s")


@lru_cache(maxsize=1 << 16)  # a corpus's questions reuse a few thousand words: each is stemmed once
def stem(word: str) -> str:
    if not word.endswith("ss"):
        for suffix in SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                return word[: -len(suffix)]
    return word


def word_set(question: str) -> frozenset[str]:
    return frozenset(stem(w) for w in WORD.findall(unicodedata.normalize("NFKC", question).casefold()))


def jaccard(x: frozenset[str], y: frozenset[str]) -> float:
    """Jaccard similarity of two sets: of two questions' word sets (word_set), how alike they are as near-twins."""
    return len(x & y) / len(x | y) if x | y else 1.0


def drop_near_twins(records: list[dict], threshold: float) -> tuple[list[dict], list[tuple[dict, str]]]:
    """(kept, dropped): a phrasing at or above `threshold` from an earlier phrasing of the same fact
    is dropped, with the question it twins; records without a fact id are kept as they are. Each
    question's word set is made once (they were made again for every pair: 80% of a `--ray` pass)."""
    kept, dropped, asked = [], [], defaultdict(list)  # fact -> its kept phrasings, with their word sets
    for record in records:
        fact = record.get("fact")
        if not fact:
            kept.append(record)
            continue
        words = word_set(record["question"])
        like = next((q for q, other in asked[fact] if jaccard(other, words) >= threshold), None)
        if like is not None:
            dropped.append((record, like))
            continue
        asked[fact].append((record["question"], words))
        kept.append(record)
    return kept, dropped


def rank(seed: int, key: str) -> str:
    """Where a key (a document, a fact, a record id) falls in the seeded order of the split."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def held_count(n: int, fraction: float) -> int:
    """round(fraction * n), at least one when the fraction is positive and n >= 2."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(fraction * n)))


def cutoff(ranks, k: int) -> str:
    """The k-th smallest of the ranks ('' for k = 0): a key is held out when its rank is at most this.
    Ranks are sha256 digests of distinct keys, so no two are equal. Under Ray the rows' ranks are too
    many for one process and generate/ray_decide.py finds the same rank in two passes."""
    return sorted(ranks)[k - 1] if k else ""


def phrasing_depth(sizes: Counter, wanted: int) -> tuple[int, int]:
    """(depth, k): the item split takes one phrasing of every fact in each round (a fact's first
    round takes its first phrasing, ...) while a fact keeps one in train; `wanted` phrasings are taken
    by `depth` whole rounds and then the first `k` facts, in seeded order, of the next. `sizes`: how many
    facts have each number of phrasings (2 or more)."""
    depth = 0
    while True:
        round_size = sum(n for size, n in sizes.items() if size - 1 > depth)
        if wanted <= round_size or not round_size:
            return depth, min(wanted, round_size)
        wanted -= round_size
        depth += 1


def held_phrasings(ids: list[str], fact_rank: str, depth: int, last: str, seed: int) -> list[str]:
    """The phrasings of one fact held out (its ids first in seeded order): `depth` of them, plus one where
    the fact is among the first of the next round (its rank at most `last`), never all of them."""
    taken = min(len(ids) - 1, depth + (len(ids) - 1 > depth and fact_rank <= last))
    return sorted(ids, key=lambda i: rank(seed, i))[:taken]


def split(records: list[dict], mode: str, fraction: float, seed: int, threshold: float) -> tuple[list, list, int]:
    """(train, test, dropped): dropped counts held-out items removed as near-duplicates of train ones."""
    rule = rounds(shape(records), mode, fraction)
    last = cutoff(ranked(records, rule.unit, seed, rule.depth), rule.k)
    test_ids = held_out(records, rule.unit, seed, rule.depth, last)
    train = [r for r in records if r["id"] not in test_ids]
    held = [r for r in records if r["id"] in test_ids]
    test = unlike(held, train, threshold) if rule.unit == "items" else held
    return _mark(train, "train"), _mark(test, "test"), len(held) - len(test)


def unlike(held: list[dict], train: list[dict], threshold: float) -> list[dict]:
    """The held-out items whose question no train question nearly duplicates: where whole items are held out,
    a test question must not be a train one reworded."""
    index = NearDuplicates(threshold)
    for r in train:
        index.add(r["id"], r["question"])
    return [r for r in held if not index.match(r["question"])]


def fact_groups(records: list[dict]) -> dict[str, list[str]]:
    """Each fact asked in two phrasings or more -> its records' ids."""
    facts: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.get("fact"):
            facts[r["fact"]].append(r["id"])
    return {fact: ids for fact, ids in facts.items() if len(ids) >= 2}


def shape(records: list[dict]) -> Counter:
    """What the split's counts are made of, as counts that add up over parts of the corpus (each document and
    fact lies in one part): records, documents, and facts of each number of phrasings (2 or more)."""
    counts = Counter({"records": len(records), "docs": len({r["source"]["doc"] for r in records})})
    counts.update(f"phrasings={len(ids)}" for ids in fact_groups(records).values())
    return counts


class Rule(NamedTuple):
    """What the split holds out: the records of the first k keys in seeded order (`ranked`) of its unit:
    documents (document mode), facts' next phrasings beyond `depth` whole rounds (item mode), or whole items
    (item mode where no fact has two phrasings)."""

    unit: str  # documents | phrasings | items
    depth: int
    k: int


def rounds(counts: Counter, mode: str, fraction: float) -> Rule:
    """The rule of a corpus of these counts (`shape`)."""
    if mode == "document":
        return Rule("documents", 0, held_count(counts["docs"], fraction))
    sizes = Counter({int(key.split("=")[1]): n for key, n in counts.items() if key.startswith("phrasings=")})
    if not sizes:
        return Rule("items", 0, held_count(counts["records"], fraction))
    return Rule("phrasings", *phrasing_depth(sizes, held_count(counts["records"], fraction)))


def ranked(records: list[dict], unit: str, seed: int, depth: int) -> list[str]:
    """The ranks that the cutoff is the k-th of: of the documents, of the facts with phrasings left beyond
    `depth` rounds, or of the records."""
    if unit == "documents":
        return [rank(seed, doc) for doc in {r["source"]["doc"] for r in records}]
    if unit == "phrasings":
        return [rank(seed, fact) for fact, ids in fact_groups(records).items() if len(ids) - 1 > depth]
    return [rank(seed, r["id"]) for r in records]


def held_out(records: list[dict], unit: str, seed: int, depth: int, last: str) -> set[str]:
    """Ids of the records held out under the rule: those whose document, fact's next phrasing or own id ranks
    at most `last`."""
    if unit == "documents":
        return {r["id"] for r in records if rank(seed, r["source"]["doc"]) <= last}
    if unit == "phrasings":
        groups = fact_groups(records).items()
        return {i for fact, ids in groups for i in held_phrasings(ids, rank(seed, fact), depth, last, seed)}
    return {r["id"] for r in records if rank(seed, r["id"]) <= last}


def _mark(records: list[dict], name: str) -> list[dict]:
    return [{**r, "split": name} for r in records]
