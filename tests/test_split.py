"""Train/test split: deterministic by seed; item mode drops near-duplicate test questions;
document mode keeps every document on one side."""

from __future__ import annotations

import hashlib

import pytest

from generate.dedup import NearDuplicates
from generate.split import split

TOPICS = [
    "the boiling point of water at sea level", "the capital city of Norway", "the inventor of the telephone",
    "the speed of light in a vacuum", "the largest planet of the solar system", "the author of Don Quixote",
    "the chemical symbol of gold", "the year the Berlin wall fell", "the longest river of Africa",
    "the number of bones in an adult human", "the melting point of iron", "the deepest ocean trench",
    "the tallest mountain of Europe", "the currency of Japan", "the composer of the Four Seasons",
    "the first element of the periodic table", "the hardest natural mineral", "the smallest prime number",
    "the language spoken in Brazil", "the freezing point of mercury",
]  # fmt: skip


def record(question: str, doc: str, n: int = 0) -> dict:
    rid = hashlib.sha256(f"{question}|{doc}|{n}".encode()).hexdigest()[:16]
    return {"id": rid, "question": question, "source": {"doc": doc, "chunk": 0, "start": 0, "end": 1}}


def distinct_records(docs: int = 5) -> list[dict]:
    return [record(f"What is {topic}?", f"doc{i % docs}.md", i) for i, topic in enumerate(TOPICS)]


def ids(rows) -> list[str]:
    return [r["id"] for r in rows]


@pytest.mark.parametrize("mode", ["item", "document"])
def test_split_is_deterministic_by_seed(mode):
    records = distinct_records()
    first = split(records, mode, 0.25, 7, 0.8)
    assert split(records, mode, 0.25, 7, 0.8) == first
    assert set(ids(split(list(reversed(records)), mode, 0.25, 7, 0.8)[1])) == set(ids(first[1]))  # order does not matter
    others = {tuple(sorted(ids(split(records, mode, 0.25, seed, 0.8)[1]))) for seed in range(8)}
    assert len(others) > 1  # the seed matters


def test_item_mode_holds_out_the_asked_fraction():
    train, test, dropped = split(distinct_records(), "item", 0.25, 3, 0.8)
    assert dropped == 0 and len(test) == 5 and len(train) == 15
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in test} == {"test"}
    assert set(ids(train)).isdisjoint(ids(test))
    assert sorted(ids(train) + ids(test)) == sorted(ids(distinct_records()))


def test_item_mode_removes_test_questions_that_nearly_duplicate_train_ones():
    records = distinct_records()
    # every question also exists in a near-duplicate form (case, punctuation, spacing, a typo)
    twins = [record(f"what is {t.replace('the ', 'the  ', 1)} ?!", f"doc{i % 5}.md", 100 + i) for i, t in enumerate(TOPICS)]
    twins[0] = record("What is the boiling point of water at sea levels?", "doc0.md", 100)
    records += twins
    train, test, dropped = split(records, "item", 0.3, 1, 0.8)
    assert dropped > 0 and len(train) + len(test) + dropped == len(records)
    check = NearDuplicates(0.8)
    for r in train:
        check.add(r["id"], r["question"])
    assert all(not check.match(r["question"]) for r in test)
    assert {r["split"] for r in test} <= {"test"}


def test_item_mode_keeps_distinct_test_questions():
    records = [record("What is the capital city of Norway?", "a.md", 0), record("What is the capital city of Peru?", "a.md", 1)]
    train, test, dropped = split(records, "item", 0.5, 0, 0.8)
    assert (len(train), len(test), dropped) == (1, 1, 0)


def test_document_mode_never_shares_a_document():
    records = distinct_records(docs=8)
    train, test, dropped = split(records, "document", 0.25, 5, 0.8)
    train_docs = {r["source"]["doc"] for r in train}
    test_docs = {r["source"]["doc"] for r in test}
    assert dropped == 0 and train_docs.isdisjoint(test_docs)
    assert len(test_docs) == 2 and len(train_docs) == 6
    assert len(train) + len(test) == len(records)


@pytest.mark.parametrize("mode", ["item", "document"])
def test_zero_fraction_or_single_unit_keeps_everything_in_train(mode):
    records = distinct_records()
    assert split(records, mode, 0.0, 0, 0.8)[1] == []
    single = [record("What is one thing?", "only.md", 0)]
    train, test, _ = split(single, mode, 0.5, 0, 0.8)
    assert ids(train) == ids(single) and test == []


def test_near_duplicate_index_threshold():
    index = NearDuplicates(0.8)
    index.add("a", "What is the capital city of Norway?")
    index.add("a", "something else entirely")  # the first text of a key stays
    assert index.match("what is the capital city of norway") == ["a"]
    assert index.match("What is the capital city of Norway??") == ["a"]
    assert index.match("Who painted the ceiling of the Sistine chapel?") == []


def test_near_duplicate_index_finds_what_datasketchs_plain_index_finds():
    """The index's compact storage (8-byte band keys, 32-bit hash values) changes no result: it returns
    what datasketch's MinHashLSH with its own keys and MinHash objects returns, filtered by the threshold."""
    from datasketch import MinHashLSH

    from generate.dedup import NUM_PERM, signature

    texts = [f"{opening} {topic}{end}" for topic in TOPICS for opening in ("What is", "what is", "Tell me what is")
             for end in ("?", "??", "")]
    index, plain = NearDuplicates(0.8), MinHashLSH(threshold=0.8, num_perm=NUM_PERM)
    for n, text in enumerate(texts):
        index.add(n, text)
        plain.insert(n, signature(text))
    found = 0
    for query in texts:
        expected = {n for n in plain.query(signature(query)) if signature(texts[n]).jaccard(signature(query)) >= 0.8}
        assert set(index.match(query)) == expected
        found += len(expected) - 1
    assert found > len(texts)  # the corpus holds near-duplicates to find


def test_band_rows_pair_what_the_index_matches():
    """The spread search (`distill gen --ray`) files each text under the band keys the index files it
    under, and its pairs are exactly the index's matches, whichever partition a band lands in."""
    from generate.dedup import fingerprint, similar_pairs

    texts = [f"{opening} {topic}{end}" for topic in TOPICS for opening in ("What is", "what is", "Tell me what is")
             for end in ("?", "??", "")]
    index = NearDuplicates(0.8)
    for n, text in enumerate(texts):
        index.add(str(n), text)
    rows = [(band, str(n), fingerprint(text, 0.8)[0]) for n, text in enumerate(texts) for band in fingerprint(text, 0.8)[1]]
    for n, text in enumerate(texts):
        assert [band[1:] for band in fingerprint(text, 0.8)[1]] == list(index.lsh.keys.get(str(n)))
    by_band = sorted(rows)  # two partitions, split between band keys as a hash partition splits them
    halves = [r for r in by_band if r[0][-1] % 2], [r for r in by_band if not r[0][-1] % 2]
    pairs = similar_pairs(halves[0], 0.8) | similar_pairs(halves[1], 0.8)
    expected = {tuple(sorted((str(n), k))) for n, text in enumerate(texts) for k in index.match(text) if k != str(n)}
    assert pairs == expected and len(expected) > len(texts)


# ---------------------------------------------------------------- knowledge: held-out phrasings


def phrased_records(facts: int = 12, phrasings: int = 3) -> list[dict]:
    """`facts` facts asked in `phrasings` wordings each (alike on purpose), with their fact ids."""
    rows = []
    for f, topic in enumerate(TOPICS[:facts]):
        for p, opening in enumerate(("What is", "Tell me what is", "Do you know what is", "Name")[:phrasings]):
            row = record(f"{opening} {topic}?", f"doc{f % 3}.md", 10 * f + p)
            row["fact"] = hashlib.sha256(topic.encode()).hexdigest()[:16]
            rows.append(row)
    return rows


@pytest.mark.parametrize("fraction, phrasings", [(0.1, 3), (0.3, 3), (0.6, 3), (0.5, 2), (0.9, 4)])
def test_phrasing_split_holds_out_phrasings_of_taught_facts(fraction, phrasings):
    records = phrased_records(phrasings=phrasings)
    train, test, dropped = split(records, "item", fraction, 3, 0.8)
    taught = {r["fact"] for r in train}
    assert test and dropped == 0 and len(train) + len(test) == len(records)
    assert {r["fact"] for r in test} <= taught  # every fact in test is taught
    assert not {r["question"] for r in test} & {r["question"] for r in train}  # no test phrasing is a train one
    assert taught == {r["fact"] for r in records}  # and no fact is left untaught
    assert len(test) == min(round(fraction * len(records)), len(records) - len(taught))
    held_per_fact = [sum(r["fact"] == f for r in test) for f in taught]
    assert max(held_per_fact) - min(held_per_fact) <= 1  # spread over the facts before a second one each


def test_phrasing_split_is_deterministic_by_seed():
    records = phrased_records()
    first, again, other = (split(records, "item", 0.3, seed, 0.8)[1] for seed in (0, 0, 1))
    assert ids(first) == ids(again) and ids(first) != ids(other)


def test_without_phrasings_whole_items_are_held_out():
    records = phrased_records(phrasings=1)
    train, test, _ = split(records, "item", 0.25, 0, 0.8)
    assert test and not {r["fact"] for r in test} & {r["fact"] for r in train}


def test_near_duplicates_are_dropped_across_facts_not_within_one():
    from generate.collect import Outcome
    from generate.curate import drop_near_duplicates

    def item(question, evidence, answer="x"):
        return {"question": question, "reasoning": "r", "answer": answer, "evidence": evidence}

    same_fact = [item("What is the boiling point of water at sea level?", "Water boils at 100 C."), item("What is the boiling point of water at sea levels?", "Water boils at 100 C.")]
    other_fact = [item("What is the boiling point of water at a sea level?", "At sea level it boils.", "y"), item("What is the boiling point of water at sea level?", "Water boils at 100 C.")]
    outcome = Outcome(items={"doc#0": same_fact + [same_fact[0]], "doc#1": other_fact})
    drop_near_duplicates(["doc#0", "doc#1"], outcome, threshold=0.8)
    assert outcome.items["doc#0"] == same_fact  # alike phrasings of one fact stay; the exact repeat goes
    assert outcome.items["doc#1"] == []  # the same question for another fact (another chunk) goes
    assert sorted(r["reason"] for r in outcome.rejects) == ["duplicate", "duplicate", "near_duplicate"]


def reference_held_out(records: list[dict], fraction: float, seed: int) -> set[str] | None:
    """The phrasing split as it was written before it became rules a Ray row can apply (a round of one
    phrasing per fact at a time, in seeded order): the rules must hold out exactly these."""
    from collections import defaultdict

    def rank(key):
        return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

    facts = defaultdict(list)
    for r in records:
        facts[r["fact"]].append(r["id"])
    groups = [sorted(ids, key=rank) for _, ids in sorted(facts.items(), key=lambda kv: rank(kv[0])) if len(ids) >= 2]
    if not groups:
        return None
    wanted = 0 if fraction <= 0 or len(records) < 2 else min(len(records) - 1, max(1, round(fraction * len(records))))
    chosen = set()
    for depth in range(max(len(g) for g in groups) - 1):
        for group in groups:
            if len(chosen) == wanted:
                return chosen
            if depth < len(group) - 1:
                chosen.add(group[depth])
    return chosen


def test_phrasing_rules_hold_out_what_the_rounds_did():
    """Facts of 1 to 5 phrasings, fractions that end inside a round, at its end, or past every round."""
    import random

    from generate.split import rounds, shape

    rng = random.Random(5)
    for case in range(300):
        records = []
        for f in range(rng.randint(1, 12)):
            records += [{"id": f"r{case}-{f}-{p}", "fact": f"f{case}-{f}", "source": {"doc": "d"}} for p in range(rng.randint(1, 5))]
        fraction, seed = rng.choice([0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 0.95]), rng.randint(0, 3)
        expected = reference_held_out(records, fraction, seed)
        if expected is None:  # no fact of two phrasings: whole items are held out
            assert rounds(shape(records), "item", fraction).unit == "items", case
        else:
            assert {r["id"] for r in split(records, "item", fraction, seed, 0.8)[1]} == expected, case


def test_pairs_name_each_question_once_and_keep_what_the_index_keeps():
    """Under Ray a question asked in m documents is paired m - 1 times, not m(m - 1)/2, and the driver still
    keeps and rejects exactly what the one-process index does: random corpora of questions repeated in every
    chunk (in other cases and punctuation), alike rewordings, and phrasings of one fact, searched in 1-3
    partitions; among them the case where a question's first item is rejected and a later one stays (it shares
    the fact of the item that rejected the first)."""
    import copy
    import json
    import random

    from generate.collect import Outcome
    from generate.curate import drop_near_duplicates
    from generate.ray_corpus import Meta, band_rows, pairs_in_block, signed
    from generate.ray_decide import near_duplicate_rejects
    from generate.validate import question_key

    stems = ["the licence of this document", "the licence of these documents", "the author of this report",
             "the capital city of Norway", "the capital city of Norway now", *TOPICS[:4]]  # fmt: skip
    forms = ["What is {}?", "what is {}", "WHAT IS {}!!", "Tell me {}."]
    later_kept = 0
    for seed in range(40):
        rng, outcome, batches = random.Random(seed), Outcome(), []
        for b in range(4):  # four rows of three chunks
            batch = {}
            for c in range(3):
                batch[f"doc{b}.md#{c}"] = [
                    {"question": rng.choice(forms).format(rng.choice(stems)), "evidence": f"e{f}", "answer": f"a{f}",
                     "reasoning": f"r{p}"} for f in range(rng.randint(1, 3)) for p in range(rng.randint(1, 3))
                ]  # fmt: skip
            if seed == b == 0:  # fact 0 asked, another fact asked alike (rejected), fact 0 asked so (stays)
                asked = [("Europe", 0), ("Europa", 1), ("Europa", 0), ("Europa", 1)]
                batch["doc0.md#0"] = [{"question": f"What is the capital city of Norway in northern {end}?", "evidence": f"e{f}",
                                       "answer": f"a{f}", "reasoning": f"r{p}"} for p, (end, f) in enumerate(asked)]  # fmt: skip
            outcome.items.update(copy.deepcopy(batch))
            batches.append(signed(batch, 0.8, {key: (b, int(key[-1])) for key in batch}, b))
        on_index = copy.deepcopy(outcome)
        drop_near_duplicates(list(outcome.items), on_index, 0.8)
        rows = band_rows({column: [batch[column][0] for batch in batches] for column in batches[0]}, 0.8)
        parts = rng.randint(1, 3)  # partitions by band key, as Ray's hash partition makes them
        found = {"a": [], "b": [], "exact": []}
        for part in range(parts):
            block = {column: [v for band, v in zip(rows["band"], values) if band[-1] % parts == part] for column, values in rows.items()}
            for column, values in pairs_in_block(block, 0.8).items():
                found[column] += values
        by_row = near_duplicate_rejects([(Meta(*json.loads(a)), Meta(*json.loads(b)), e) for a, b, e in zip(*found.values())])
        decided = {
            f"{r['chunk']}:{outcome.items[r['chunk']].index(r['item'])}": [r["reason"], r["detail"][6:]] for r in on_index.rejects
        }  # fmt: skip
        assert {key: why for row in by_row.values() for key, why in row.items()} == decided, seed
        asked = [question_key(item["question"]) for items in outcome.items.values() for item in items]
        assert sum(found["exact"]) == len(asked) - len(set(asked))  # a question's items: m - 1 pairs
        assert len(found["exact"]) - sum(found["exact"]) <= len(set(asked)) ** 2
        rejected = {(r["chunk"], r["item"]["reasoning"], r["item"]["evidence"]) for r in on_index.rejects}
        seen = set()
        for key, items in outcome.items.items():
            for item in items:
                q = question_key(item["question"])
                if (key, item["reasoning"], item["evidence"]) not in rejected and q in seen:
                    later_kept += 1
                seen.add(q)
    assert later_kept  # the corpora held the case
