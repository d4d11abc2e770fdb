"""Near-duplicate detection of short texts (questions) with MinHash LSH (datasketch).

Why MinHash: questions are short, the corpus can be large, and LSH finds candidate pairs in
about linear time without an embedding model (none can be fetched on an offline machine).
Texts are shingled into character 5-grams of their normalized form, which catches reworded
punctuation, casing and small edits ("What is X?" / "what is x").

Two ways to the same matches: `NearDuplicates`, an index in one process (datasketch's MinHashLSH),
and `fingerprint` + `similar_pairs`, the same signatures and band keys as rows that Ray groups by
band across a cluster (generate/ray_stage.py), so that no process holds the whole index.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Iterable
from functools import cache, lru_cache

import numpy as np
from datasketch import MinHash, MinHashLSH

from generate.validate import question_key

NUM_PERM = 128
SHINGLE = 5
TEMPLATE = MinHash(num_perm=NUM_PERM, seed=1)  # permutations drawn once: drawing them per text cost ~0.7 ms


@lru_cache(maxsize=1 << 14)  # a question is signed once though curation and the split both look it up
def signature(text: str) -> MinHash:
    norm = question_key(text)
    grams = {norm[i : i + SHINGLE] for i in range(max(1, len(norm) - SHINGLE + 1))}
    sig = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=zlib.crc32, permutations=TEMPLATE.permutations, scheme=TEMPLATE.scheme)
    sig.update_batch([g.encode() for g in grams])
    return sig


def band_key(band: bytes) -> bytes:
    """An LSH band's bucket key in 8 bytes instead of its 13 hash values' 104: 9 bands a question, and
    datasketch keeps each key in two tables (the gen driver's memory: bench/driver_memory.py). Two bands that
    collide in 8 bytes only make a candidate, which `match` checks against the threshold, so no result
    changes."""
    return hashlib.blake2b(band, digest_size=8).digest()


class NearDuplicates:
    """An index of texts; `match(text)` returns the keys of indexed texts at or above the threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, hashfunc=band_key)
        self.sigs: dict = {}  # key -> its signature's hash values (not the MinHash object around them)

    def add(self, key, text: str) -> None:
        if key in self.sigs:
            return
        sig = signature(text)
        self.sigs[key] = sig.hashvalues.astype(np.uint32)  # every value is below 2**32 (datasketch masks them): half the bytes
        self.lsh.insert(key, sig, check_duplication=False)  # `sigs` has made sure

    def match(self, text: str) -> list:
        """Keys of the indexed texts whose estimated Jaccard similarity (MinHash.jaccard's) is >= threshold."""
        sig = signature(text)
        return [k for k in self.lsh.query(sig) if np.count_nonzero(self.sigs[k] == sig.hashvalues) / NUM_PERM >= self.threshold]


# ---------------------------------------------------------------- the index as rows (Ray)


@cache
def band_ranges(threshold: float) -> tuple[tuple[int, int], ...]:
    """The slices of a signature that MinHashLSH bands at this threshold (its own choice of bands and rows)."""
    return tuple(MinHashLSH(threshold=threshold, num_perm=NUM_PERM).hashranges)


def fingerprint(text: str, threshold: float) -> tuple[bytes, list[bytes]]:
    """(the signature's 128 hash values as uint32 bytes, its band keys): each band key is the band's number
    (one byte) and the key MinHashLSH files that band under (band_key of the byte-swapped values, as
    datasketch hashes them), so two texts share a band key exactly when the index puts them in one bucket."""
    values = signature(text).hashvalues
    bands = [bytes([i]) + band_key(bytes(values[a:b].byteswap().data)) for i, (a, b) in enumerate(band_ranges(threshold))]
    return values.astype(np.uint32).tobytes(), bands


def similar_pairs(rows: Iterable[tuple[bytes, str, bytes]], threshold: float) -> set[tuple[str, str]]:
    """Pairs of keys, from (band key, key, signature bytes) rows, that share a band and whose signatures
    agree at or above the threshold (NearDuplicates.match's test). Every row of a band key must be among
    the rows (Ray partitions them by band key); a pair sharing several bands comes back once."""
    buckets = defaultdict(list)
    for band, key, values in rows:
        buckets[band].append((key, np.frombuffer(values, dtype=np.uint32)))
    pairs = set()
    for members in buckets.values():
        for i, (a, x) in enumerate(members):
            for b, y in members[i + 1 :]:
                if a != b and np.count_nonzero(x == y) / NUM_PERM >= threshold:
                    pairs.add((a, b) if a < b else (b, a))
    return pairs
