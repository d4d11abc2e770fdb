"""Map validated teacher items to dataset records (schemas/record.schema.json)."""

from __future__ import annotations

import hashlib

from common.contract import assistant_text
from generate.chunk import Chunk


def fact_id(item: dict, chunk_key: str) -> str:
    """The fact an item tests: the claim its evidence states, with its answer, in its chunk (the
    phrasings of one fact share both, so they share this id)."""
    blob = "\x1f".join([chunk_key, " ".join(item["evidence"].split()), " ".join(item["answer"].casefold().split())])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def record_id(item: dict, chunk: Chunk) -> str:
    blob = "\x1f".join([item["question"], item["answer"], chunk.doc, str(chunk.index)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_record(item: dict, chunk: Chunk, teacher: dict, task: str) -> dict:
    """A record without its split (set when the split is decided)."""
    return {
        "id": record_id(item, chunk),
        "question": item["question"],
        "reasoning": item["reasoning"],
        "answer": item["answer"],
        "evidence": item["evidence"],
        "context": chunk.text,
        "messages": [
            {"role": "user", "content": item["question"]},
            {"role": "assistant", "content": assistant_text(item["reasoning"], item["answer"])},
        ],
        "source": {"doc": chunk.doc, "chunk": chunk.index, "start": chunk.start, "end": chunk.end},
        "fact": fact_id(item, chunk.key),
        "teacher": dict(teacher),
        "task": task,
    }


def light_record(item: dict, chunk: Chunk) -> dict:
    """What the corpus-wide steps read of a record (dedup, near-twins, the split, coverage), with the
    item and chunk it is made from: the full record is made only to be checked and written
    (`full_record`), so a run never holds every record's context and messages at once."""
    return {
        "id": record_id(item, chunk),
        "question": item["question"],
        "evidence": item["evidence"],
        "fact": fact_id(item, chunk.key),
        "source": {"doc": chunk.doc, "chunk": chunk.index},
        "made_from": (item, chunk),
    }


def full_record(light: dict, teacher: dict, task: str) -> dict:
    """The dataset record of a light one whose split is decided."""
    return {**make_record(*light["made_from"], teacher, task), "split": light["split"]}
