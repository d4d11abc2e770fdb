"""File I/O every stage shares: atomic writes, JSON and JSONL, records checked against their schema."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import schemas
from common.errors import UserError


def write_atomic(path: str | Path, text: str | Iterable[str]) -> None:
    """Write a file so that readers see either the old content or the whole new one (a process
    killed mid-way leaves a temporary file beside it: `is_temp`). `text` may come in pieces (an
    iterable of strings), written as they come, so a large file is never one string in memory."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            if isinstance(text, str):
                handle.write(text)
            else:
                handle.writelines(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_temp(path: str | Path) -> bool:
    """A temporary file of `write_atomic` (`.NAME.XXXXXXXX.tmp`), left where a process was killed while writing."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows one line each, line by line (the gen driver's train.jsonl of 32k records was 77 MB, and
    joining it first took 4x that at its peak: bench/driver_memory.py); returns the number of rows."""
    written = 0

    def lines():
        nonlocal written
        for row in rows:
            written += 1
            yield json.dumps(row, ensure_ascii=False) + "\n"

    write_atomic(path, lines())
    return written


def write_json(path: str | Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path, schema: str | None = "record") -> list[dict]:
    """Read a JSONL file; a malformed line or (with `schema`) an invalid record names its line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `distill gen` first or point at a data directory")
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number} is not valid JSON ({exc.msg}); fix or regenerate the file") from exc
            problems = schemas.errors(schema, row) if schema else []
            if problems:
                raise UserError(f"{path}:{number} is not a valid {schema} record: {problems[0]}")
            rows.append(row)
    return rows
