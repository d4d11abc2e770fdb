"""`distill gen --ray`: which items stay, and in which split, decided row by row in Ray, so that the
driver holds no item, no chunk and no record (generate/ray_stage.py runs it after the teacher actors).

    pairs (ray_corpus.near_duplicate_pairs) ─▶ driver: near_duplicate_rejects   the paired items, in corpus order:
                                                        kept unless a kept one before it is alike (curate's rule)
    rows ─ map(count_row)          each row's records decided (stage.decided_records: exact repeats, near-twins)
                                   and kept in Ray's object store (materialized) for the next two passes,
                                   counted (split.shape) and their ranks' first hex digits counted
         ─▶ driver: split.rounds (the rule, the k of the cutoff), the bucket of the k-th smallest rank
         ─ map(ranks_in_bucket)    that bucket's ranks ─▶ driver: the cutoff (split.cutoff)
         ─ map(write_row)          the row's records split (split.held_out), made, checked and written as
                                   shards/{train,test,rejects}-FIRST.jsonl; its tally (generate/tally.py)
         ─▶ driver: train.jsonl, test.jsonl, rejects.jsonl (the shards joined in corpus order), the tallies
                    added up, the manifest (stage.finish)

Why row by row gives the single-process result: a row holds whole files, and the steps after the
near-duplicates look within a fact (near-twins), a chunk or a document, each inside one row; exact
repeats of a question across rows are near-duplicate pairs too (their signatures are equal). What spans
the corpus are the pairs (found by Ray, decided on the driver from the pairs alone) and the split's
cutoff, a k-th smallest rank that the driver finds from two small passes (a histogram of the ranks'
first hex digits, counted with the rows' other counts, then the ranks of one bucket). A row's records are
decided once, in the first pass, and stored beside it in Ray's object store (as the teacher's rows are), which
spills to disk where memory runs short; the driver never holds them.

The judge (min_score) scores the items left by the near-duplicate decisions in a pool of teacher actors,
a row at a time (ray_stage.judge_rows), before the rows are decided; the teacher actors write the
rewrites (rewrites: N), which write_row writes as text shards.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

from common.io import write_jsonl
from generate.chunk import Chunk
from generate.config import GenConfig
from generate.ray_corpus import Meta, join_shards
from generate.records import full_record
from generate.rewrites import text_rows
from generate.split import Rule, fact_groups, held_out, rank, ranked, rounds, shape
from generate.stage import checked, decided_records, finish
from generate.tally import Tally, tally

ROW = ["files", "chunks", "outcome"]  # what a row's decisions are made from
PREFIX = 4  # hex digits of a rank counted in the first pass: 65,536 buckets


def spread_rejects(ray, pairs: list[tuple[Meta, Meta, bool]]) -> dict:
    """The driver's near-duplicate rejects (near_duplicate_rejects), one object in Ray's store a row, by first file."""
    return {first: ray.put(json.dumps(keys)) for first, keys in near_duplicate_rejects(pairs).items()}


def decide(ray, cfg: GenConfig, plan, outcome, rows, rejected: dict, started: float) -> dict:
    """Decide and write the records of the rows (ROW's columns) in Ray, given their near-duplicate rejects
    (spread_rejects; none where the rows' items are already curated: ray_stage.judge_rows); the manifest."""
    base = {"cfg": cfg.model_dump(mode="json")}
    rows = rows.map_batches(count_row, batch_size=1, fn_kwargs={**base, "rejected": rejected}).materialize()
    counts, buckets = Counter(), Counter()
    for r in rows.select_columns(["shape", "buckets"]).iter_rows():
        counts.update(json.loads(r["shape"]))
        buckets.update(json.loads(r["buckets"]))
    rows = rows.select_columns(["decided"])
    rule = rounds(counts, cfg.split_by, cfg.test_fraction)
    split = {"unit": rule.unit, "depth": rule.depth}
    split["last"] = kth_rank(rows, {**base, **split}, rule, buckets)
    staging = plan.out / "shards.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    teacher = {"backend": cfg.teacher.backend, "model": cfg.teacher.model}
    written = {"staging": str(staging), "teacher": teacher, "task": plan.task.name}
    firsts, counted = [], Tally()
    for r in over(rows, write_row, {**base, **split, **written}):
        firsts.append(int(r["first"]))
        counted += pickle.loads(r["tally"])
    text = ("text",) if cfg.rewrites else ()
    join_shards(plan.out, staging, sorted(firsts), ("train", "test", "rejects", *text))
    files = {**{name: f"{name}.jsonl" for name in text}, "shards": "shards"}
    return finish(cfg, plan, outcome, counted, started, files)


def over(rows, fn, kwargs: dict):
    """fn's row of every row (a Ray task per block, the rows one at a time), streamed to the driver, which adds
    them up as they come rather than holding them all."""
    return rows.map_batches(fn, batch_size=1, fn_kwargs=kwargs).iter_rows()


def kth_rank(rows, kwargs: dict, rule: Rule, classes: Counter) -> str:
    """split.cutoff over every row's ranked keys (`rule`'s): the bucket (first PREFIX hex digits) that holds the
    k-th smallest, from the rows' histograms (count_row), then that bucket's ranks."""
    k, buckets = rule.k, Counter()
    if not k:
        return ""
    for key, n in classes.items():
        kind, bucket = key.split(":")
        if kind == rule.unit or (rule.unit == "phrasings" and kind.isdigit() and int(kind) - 1 > rule.depth):
            buckets[bucket] += n
    for bucket in sorted(buckets):
        if k <= buckets[bucket]:
            break
        k -= buckets[bucket]
    found = over(rows, ranks_in_bucket, {**kwargs, "bucket": bucket})
    return sorted(rank for r in found for rank in json.loads(r["ranks"]))[k - 1]


def near_duplicate_rejects(pairs: list[tuple[Meta, Meta, bool]]) -> dict[int, dict[str, list[str]]]:
    """curate.drop_near_duplicates on the pairs alone (ray_corpus.pairs_in_block's: (a question's first item,
    another item of it, True), (two alike questions' first items, False)). In corpus order an item is a
    duplicate if an item of its question was kept before it; else a near-duplicate if an item of an alike
    question and of another fact was, and then it names the first such one; else it stays. Items in no pair
    stay. Returns each row's (by its first file) rejects: item key -> [reason, the question it is like]."""
    metas, question, alike = {}, {}, defaultdict(list)  # place -> Meta; -> its question's first; first -> alike firsts
    for a, b, exact in pairs:
        metas[a[:3]], metas[b[:3]] = a, b
        if exact:
            question[b[:3]] = a[:3]
        else:
            alike[a[:3]].append(b[:3])
            alike[b[:3]].append(a[:3])
    kept, rejected = {}, defaultdict(dict)  # a question's first -> its kept item (one at most)
    for place in sorted(metas):
        meta, first = metas[place], question.get(place, place)
        if first in kept:
            like, reason = kept[first], "duplicate"
        else:
            before = [kept[other] for other in alike[first] if other in kept and kept[other].fact != meta.fact]
            if not before:
                kept[first] = meta
                continue
            like, reason = min(before), "near_duplicate"
        rejected[meta.first][meta.key] = [reason, like.question]
    return rejected


# ---------------------------------------------------------------- in the Ray tasks


class Row(NamedTuple):
    first: int  # the row's first file
    cfg: GenConfig
    chunks: list[tuple[int, Chunk]]  # (file ordinal, chunk), in corpus order
    items: dict[str, list[dict]]  # chunk key -> the items left by the near-duplicate decisions (and the judge)
    rejects: list[dict]  # the teacher actor's, the near-duplicates', (the judge's,) exact repeats' and near-twins'
    facts: dict | None  # facts first: each chunk's listed facts
    text: list[dict]  # the teacher's rewrites of the row's chunks (text rows)
    records: list[dict] | None = None  # light records (generate.records), in corpus order


def without_near_duplicates(batch: dict, cfg: dict, rejected: dict) -> Row:
    """A row's items less the driver's near-duplicate rejects (with their rejects), as curation leaves them."""
    import ray

    gen = GenConfig.model_validate(cfg)
    first = int(json.loads(batch["files"][0])[0][0])
    part = json.loads(batch["outcome"][0])
    chunks = [(o, Chunk(d, i, a, b, t)) for o, d, i, a, b, t in json.loads(batch["chunks"][0])]
    drop = json.loads(ray.get(rejected[first])) if first in rejected else {}
    items, rejects = {}, part["rejects"]
    for key, asked in part["items"].items():
        items[key] = []
        for n, item in enumerate(asked):
            why = drop.get(f"{key}:{n}")
            if why:
                rejects.append({"reason": why[0], "detail": f"like: {why[1]}"[:300], "chunk": key, "item": item})
            else:
                items[key].append(item)
    return Row(first, gen, chunks, items, rejects, part["facts"], part["text"])


def decided(batch: dict, cfg: dict, rejected: dict) -> Row:
    """A row's records as a run without Ray decides them, given the driver's near-duplicate rejects."""
    row = without_near_duplicates(batch, cfg, rejected)
    chunks = [c for _, c in row.chunks]
    return row._replace(records=decided_records(chunks, row.items, row.rejects, row.cfg.near_twin_threshold))


def count_row(batch: dict, cfg: dict, rejected: dict) -> dict:
    """The row decided (`decided`, kept for the later passes: `stored`), its counts for the split (split.shape)
    and a histogram of the first PREFIX hex digits of the ranks its rule may cut among, by kind: documents, facts
    of N phrasings ("N"), and records ("items", counted where no fact of the row has two phrasings: only where
    none of the corpus has are they the unit)."""
    row = decided(batch, cfg, rejected)
    records, seed = row.records, row.cfg.seed
    buckets = Counter()
    if row.cfg.split_by == "document":
        buckets.update(f"documents:{r[:PREFIX]}" for r in ranked(records, "documents", seed, 0))
    else:
        groups = fact_groups(records)
        buckets.update(f"{len(ids)}:{rank(seed, fact)[:PREFIX]}" for fact, ids in groups.items())
        if not groups:
            buckets.update(f"items:{r[:PREFIX]}" for r in ranked(records, "items", seed, 0))
    kept = pickle.dumps(row._replace(cfg=None))  # the config comes with every pass
    return {"decided": [kept], "shape": [json.dumps(shape(records))], "buckets": [json.dumps(buckets)]}


def stored(batch: dict, cfg: dict) -> Row:
    """The row as count_row decided it."""
    return pickle.loads(batch["decided"][0])._replace(cfg=GenConfig.model_validate(cfg))


def ranks_in_bucket(batch: dict, cfg: dict, unit: str, depth: int, bucket: str) -> dict:
    row = stored(batch, cfg)
    ranks = ranked(row.records, unit, row.cfg.seed, depth)
    return {"ranks": [json.dumps([rank for rank in ranks if rank.startswith(bucket)])]}


def write_row(batch: dict, cfg: dict, unit: str, depth: int, last: str, staging: str, teacher: dict, task: str) -> dict:
    """The row's records split, made, checked and written with its rejects as its shards; its tally. Where whole
    items are held out, the run without Ray drops a test item alike with a train one (split.unlike); none is
    left to drop: every item is then its own fact, and curation has already dropped every item alike with an
    item of another fact kept before it, at the same threshold and with the same signatures."""
    row = stored(batch, cfg)
    held = held_out(row.records, unit, row.cfg.seed, depth, last)
    parts = {"train": [], "test": []}
    for light in row.records:
        split = "test" if light["id"] in held else "train"
        parts[split].append({**light, "split": split})
    for split, lights in parts.items():
        records = (checked(full_record(light, teacher, task)) for light in lights)
        write_jsonl(Path(staging) / f"{split}-{row.first:07d}.jsonl", records)
    write_jsonl(Path(staging) / f"rejects-{row.first:07d}.jsonl", row.rejects)
    order = [(o, chunk.index) for o, chunk in row.chunks]
    chunks = [chunk for _, chunk in row.chunks]
    text = []
    if row.cfg.rewrites:  # the chunks and their rewrites, held-out documents left out (as stage.save writes them)
        held_docs = {r["source"]["doc"] for r in parts["test"]} if row.cfg.split_by == "document" else set()
        text = text_rows(chunks, row.text, held_docs)
        write_jsonl(Path(staging) / f"text-{row.first:07d}.jsonl", text)
    train, test = parts["train"], parts["test"]
    counted = tally(chunks, order, row.items, row.rejects, train, test, 0, row.facts, len(row.text), len(text))
    return {"first": [row.first], "tally": [pickle.dumps(counted)]}
