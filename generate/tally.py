"""What the manifest says of the written records (coverage, facts, rejects) as counts that add up.

A run without Ray tallies the whole corpus at once; under Ray each row (a teacher batch of whole
files) tallies its own chunks and records where Ray writes them, and the driver adds the rows up
(generate/ray_decide.py). Every count is of one chunk, one document or one fact, and a fact, a
document and a chunk each lie in one row, so the sum is the tally of the whole corpus: the two runs'
manifests agree (tests/test_ray_gen.py).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field, fields

from generate.facts import covers, factual_sentences

STAGES = {
    "grounding": ("ungrounded",),
    "dedup": ("duplicate", "near_duplicate", "near_twin"),
    "judge": ("injection", "low_score", "judge_invalid", "not_judged"),
}
EMPTY_CHUNKS_LISTED = 100  # chunks without records named in the manifest
UNCOVERED_LISTED = 20  # uncovered sentences named in the manifest


@dataclass
class Tally:
    chunks: int = 0
    answered: int = 0  # chunks whose items the teacher's answers gave (outcome.items' keys)
    per_chunk: Counter = field(default_factory=Counter)  # records written of a chunk -> chunks
    empty: list = field(default_factory=list)  # (corpus order, chunk key, reason): the first chunks without records
    rejected: Counter = field(default_factory=Counter)  # reason -> rejects
    request_rejects: int = 0  # rejects of a whole request (no item, no fact)
    train: int = 0
    test: int = 0
    dropped: int = 0  # test items dropped as near-duplicates of train ones
    facts: int = 0
    facts_in_test: int = 0
    test_facts_taught: int = 0
    facts_taught: int = 0
    sentences: int = 0  # factual sentences, once per document
    covered: int = 0
    uncovered: list = field(default_factory=list)  # (doc, sentence), the first in that order
    facts_listed: int | None = None
    rewrites: int = 0  # the teacher's rewrites of the chunks (rewrites: N)
    text: int = 0  # rows of text.jsonl

    def __add__(self, other: Tally) -> Tally:
        summed = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "empty":
                summed[f.name] = heapq.nsmallest(EMPTY_CHUNKS_LISTED, a + b)
            elif f.name == "uncovered":
                summed[f.name] = heapq.nsmallest(UNCOVERED_LISTED, a + b)
            elif f.name == "facts_listed":
                summed[f.name] = None if a is None and b is None else (a or 0) + (b or 0)
            else:
                summed[f.name] = a + b
        return Tally(**summed)


def tally(
    chunks, order, items: dict, rejects: list[dict], train, test, dropped: int, listed, rewrites: int = 0, text: int = 0
) -> Tally:
    """The tally of these chunks (`order`: each one's place in the corpus, to list the first empty ones),
    their answered items, rejects and written records (light or full), the facts listed for them, their
    rewrites and the rows of text.jsonl written of them."""
    written = Counter(f"{r['source']['doc']}#{r['source']['chunk']}" for r in train + test)
    reasons: dict[str, Counter] = {}
    for reject in rejects:
        reasons.setdefault(reject["chunk"], Counter())[reject["reason"]] += 1
    empty = [(o, c.key) for o, c in zip(order, chunks) if not written[c.key]][:EMPTY_CHUNKS_LISTED]
    taught = {r["fact"] for r in train if r.get("fact")}
    tested = {r["fact"] for r in test if r.get("fact")}
    evidence: dict[str, list[str]] = {}
    for record in train:
        evidence.setdefault(record["source"]["doc"], []).append(record["evidence"])
    sentences = {(chunk.doc, s) for chunk in chunks for s in factual_sentences(chunk.text)}
    uncovered = sorted((doc, s) for doc, s in sentences if not any(covers(e, s) for e in evidence.get(doc, [])))
    return Tally(
        chunks=len(chunks),
        answered=len(items),
        per_chunk=Counter(written[c.key] for c in chunks),
        empty=[(o, key, reasons[key].most_common(1)[0][0] if key in reasons else "not_answered") for o, key in empty],
        rejected=Counter(r["reason"] for r in rejects),
        request_rejects=sum(1 for r in rejects if "item" not in r and "fact" not in r),
        train=len(train),
        test=len(test),
        dropped=dropped,
        facts=len(taught | tested),
        facts_in_test=len(tested),
        test_facts_taught=len(tested & taught),
        facts_taught=len(taught),
        sentences=len(sentences),
        covered=len(sentences) - len(uncovered),
        uncovered=uncovered[:UNCOVERED_LISTED],
        facts_listed=None if listed is None else sum(len(facts) for facts in listed.values()),
        rewrites=rewrites,
        text=text,
    )


def coverage(t: Tally, items_asked: int, per_request: int) -> dict:
    """Per-chunk view of what survived: chunks without records, items lost at each stage, sentences covered."""
    lost = {"request": t.request_rejects * per_request}
    lost.update({stage: sum(t.rejected[r] for r in names) for stage, names in STAGES.items()})
    lost["split"] = t.dropped
    empty = t.per_chunk[0]
    found = {
        "chunks": t.chunks,
        "chunks_with_items": t.chunks - empty,
        "chunks_without_items": empty,
        "items_per_chunk": dict(sorted((str(n), chunks) for n, chunks in t.per_chunk.items())),
        "items_asked": items_asked,
        "items_lost": lost,
        "empty_chunks": [{"chunk": key, "reason": reason} for _, key, reason in t.empty],
        "factual_sentences": t.sentences,
        "sentences_covered": t.covered,
        "sentence_coverage": round(t.covered / t.sentences, 4) if t.sentences else None,
        "facts_taught": t.facts_taught,
        "uncovered_sentences": [{"doc": doc, "sentence": s[:200]} for doc, s in t.uncovered],
    }
    if t.facts_listed is not None:
        found["facts_listed"] = t.facts_listed
    return found


def describe_split(t: Tally, mode: str, phrasings: int) -> dict:
    """What the split holds out, for the manifest: facts, and how many of the test's are taught."""
    if mode == "document":
        held_out = "documents"
    else:
        held_out = "phrasings" if t.facts_in_test and t.test_facts_taught == t.facts_in_test else "items"
    facts = {"facts": t.facts, "facts_in_test": t.facts_in_test, "test_facts_taught": t.test_facts_taught}
    return {"phrasings_asked": phrasings, **facts, "held_out": held_out}
