"""Other dataset formats written from train/test.jsonl: alpaca, sharegpt and openai chat rows."""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from common.io import read_jsonl, write_jsonl

EXPORTS = ("alpaca", "sharegpt", "openai")


def export(records: list[dict], fmt: str) -> list[dict]:
    """Convert records to alpaca, sharegpt or openai chat fine-tuning rows."""
    if fmt == "alpaca":
        return [{"instruction": r["question"], "input": "", "output": r["messages"][-1]["content"]} for r in records]
    if fmt == "sharegpt":
        roles = {"user": "human", "assistant": "gpt", "system": "system"}
        return [{"conversations": [{"from": roles[m["role"]], "value": m["content"]} for m in r["messages"]]} for r in records]
    if fmt == "openai":
        return [{"messages": r["messages"]} for r in records]
    raise UserError(f"unknown export format '{fmt}'; use one of {', '.join(EXPORTS)}")


def export_dir(data_dir: str | Path, formats: list[str]) -> list[Path]:
    """Write `{split}.{fmt}.jsonl` beside train.jsonl/test.jsonl for every format."""
    data_dir = Path(data_dir)
    written = []
    for split in ("train", "test"):
        source = data_dir / f"{split}.jsonl"
        if not source.exists():
            continue
        records = read_jsonl(source)
        for fmt in formats:
            target = data_dir / f"{split}.{fmt}.jsonl"
            write_jsonl(target, export(records, fmt))
            written.append(target)
    return written
