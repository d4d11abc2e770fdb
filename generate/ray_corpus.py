"""The near-duplicate search of `distill gen --ray`, spread by band key, which Ray runs after the teacher
actors (generate/ray_stage.py), and the joining of the shards Ray writes (generate/ray_decide.py)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from common.io import write_atomic
from generate.dedup import NUM_PERM, band_ranges, fingerprint, similar_pairs
from generate.records import fact_id
from generate.validate import question_key

# ---------------------------------------------------------------- near-duplicates, spread

BAND_ROWS_PER_BLOCK = 500_000  # ~270 MB of rows a partition (a 9-byte band key, an item key, 512 bytes of signature)


def signed(items: dict[str, list[dict]], threshold: float, places: dict[str, tuple[int, int]], first: int) -> dict:
    """A batch's items as three columns for the near-duplicate search: what the search tells of each item
    (`Meta`, JSON), their signatures (128 uint32 each) and their band keys, end to end. `places`: each chunk's
    file ordinal and index; `first`: the batch's first file."""
    metas, values, bands = [], [], []
    for chunk_key, chunk_items in items.items():
        for n, item in enumerate(chunk_items):
            signature, item_bands = fingerprint(item["question"], threshold)
            metas.append([*places[chunk_key], n, first, fact_id(item, chunk_key), item["question"], f"{chunk_key}:{n}"])
            values.append(signature)
            bands += item_bands
    return {"sig_keys": [json.dumps(metas)], "sig_values": [b"".join(values)], "sig_bands": [b"".join(bands)]}


class Meta(NamedTuple):
    """An item as the near-duplicate search returns it: its place in the corpus (file ordinal, chunk index, n-th
    item of the chunk), its batch's first file, its fact, question, and curate's key (`{chunk key}:{n}`)."""

    ordinal: int
    index: int
    n: int
    first: int
    fact: str
    question: str
    key: str


def band_rows(batch: dict, threshold: float) -> dict:
    """One row per band of every signed item: its band key, its Meta as JSON, its signature, and what the
    search groups and orders by without parsing the JSON, in 28 bytes: its question (8 bytes of a digest of
    question_key), its place (file ordinal, chunk index, n: 12 sortable bytes) and its fact (8 bytes)."""
    per_item, size = len(band_ranges(threshold)), 4 * NUM_PERM
    rows = {"band": [], "key": [], "values": [], "group": []}
    for metas, values, bands in zip(batch["sig_keys"], batch["sig_values"], batch["sig_bands"]):
        for i, meta in enumerate(json.loads(metas)):
            key, found = json.dumps(meta), Meta(*meta)
            question = hashlib.blake2b(question_key(found.question).encode(), digest_size=8).digest()
            group = question + struct.pack(">III", *found[:3]) + bytes.fromhex(found.fact)[:8]
            for j in range(i * per_item, (i + 1) * per_item):
                rows["band"].append(bands[j * 9 : (j + 1) * 9])
                rows["key"].append(key)
                rows["values"].append(values[i * size : (i + 1) * size])
                rows["group"].append(group)
    return rows


def pairs_in_block(block: dict, threshold: float) -> dict:
    """The pairs curation acts on among a partition's rows, which hold every row of their band keys, each
    question counted once. The items of one question (question_key) have one signature, so every bucket
    they are in holds them all: the first of them in corpus order stands for the rest, in an exact pair
    (first, other) each (from the bucket of band 0 alone, so once), and only the firsts are compared, in
    pairs of two questions alike at the threshold. Two questions of a single, shared fact are not paired
    (a fact's own phrasings may be alike: curate.drop_near_duplicates). A question asked in m documents
    gives m - 1 pairs, not m(m - 1)/2."""
    buckets = defaultdict(list)  # band -> its rows
    for band, *row in zip(block["band"], block["key"], block["values"], block["group"]):
        buckets[bytes(band)].append(row)
    pairs = {"a": [], "b": [], "exact": []}
    firsts, facts = [], {}  # (band, a first's Meta text, signature) for similar_pairs; first -> its question's facts
    for band, rows in buckets.items():
        if len(rows) == 1:  # the most common bucket: one item, nothing alike
            continue
        questions = defaultdict(list)
        for text, values, group in rows:
            group = bytes(group)
            questions[group[:8]].append((group[8:20], text, values, group[20:]))
        for items in questions.values():
            (_, first, values, _), *others = sorted(items)
            facts[first] = {fact for *_, fact in items}
            firsts.append((band, first, values))
            if band[0] == 0:  # every item has one band-0 key
                add_pairs(pairs, [(first, other) for _, other, *_ in others], True)
    alike = similar_pairs(firsts, threshold)
    add_pairs(pairs, [(a, b) for a, b in alike if len(facts[a] | facts[b]) > 1], False)
    return pairs


def add_pairs(pairs: dict, found: list[tuple[str, str]], exact: bool) -> None:
    pairs["a"] += [a for a, _ in found]
    pairs["b"] += [b for _, b in found]
    pairs["exact"] += [exact] * len(found)


def near_duplicate_pairs(ray, asked, threshold: float, items: int) -> list[tuple[Meta, Meta, bool]]:
    """The pairs of items alike at the threshold that curation acts on (pairs_in_block's): (a question's first
    item, another item of it, True) and (two questions' first items, False), found by Ray: band rows
    hash-partitioned by band key, each partition searched by a task."""
    if not items:
        return []
    rows = items * len(band_ranges(threshold))
    blocks = max(int(ray.cluster_resources().get("CPU", 1)), math.ceil(rows / BAND_ROWS_PER_BLOCK))
    kwargs = {"fn_kwargs": {"threshold": threshold}}
    bands = asked.select_columns(["sig_keys", "sig_values", "sig_bands"]).map_batches(band_rows, **kwargs)
    pairs = bands.repartition(blocks, keys=["band"]).map_batches(pairs_in_block, batch_size=None, **kwargs)
    metas = {}  # place -> the item's Meta, one object however many pairs it is in (its question held once)

    def meta(text: str) -> Meta:
        found = Meta(*json.loads(text))
        return metas.setdefault(found[:3], found)

    return [(meta(row["a"]), meta(row["b"]), bool(row["exact"])) for row in pairs.iter_rows()]


# ---------------------------------------------------------------- the shards, joined


def join_shards(out: Path, staging: Path, firsts: list[int], names: tuple[str, ...]) -> None:
    """OUT/NAME.jsonl from the shards NAME-FIRST.jsonl, in the order of `firsts`; then the staged shards
    replace the last run's shards/."""
    for name in names:
        write_atomic(out / f"{name}.jsonl", lines(staging / f"{name}-{first:07d}.jsonl" for first in firsts))
    shutil.rmtree(out / "shards", ignore_errors=True)  # the last run's, replaced once the files are written
    staging.rename(out / "shards")


def lines(paths):
    for path in paths:
        with open(path) as handle:
            yield from handle
