"""common/io.py: files written whole or not at all, JSONL written line by line."""

from __future__ import annotations

import json

import pytest

from common.io import is_temp, write_jsonl


def test_write_jsonl_writes_a_generator_line_by_line_and_counts_it(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(path, ({"n": n, "text": "é"} for n in range(1000))) == 1000
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(1000)) and '"é"' in lines[0]


def test_write_jsonl_that_fails_midway_leaves_the_old_file_whole(tmp_path):
    """Rows come one at a time now: a row that cannot be written (or a crash) half-way must not
    leave a half-written file, nor a temporary one beside it."""
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"n": 1}, {"n": 2}])
    before = path.read_text()

    def rows():
        yield {"n": 3}
        yield {"n": object()}  # not JSON

    with pytest.raises(TypeError):
        write_jsonl(path, rows())
    assert path.read_text() == before
    assert not [p for p in tmp_path.iterdir() if is_temp(p)]


def test_write_jsonl_never_holds_the_whole_file_in_memory(tmp_path):
    """The gen driver's train.jsonl can be gigabytes: joined into one string first, writing it took 4x
    the file's size at its peak (bench/driver_memory.py). Rows are produced here one at a time."""
    import tracemalloc

    row = "x" * 1000
    tracemalloc.start()
    try:
        write_jsonl(tmp_path / "big.jsonl", ({"n": n, "text": row} for n in range(20_000)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "big.jsonl").stat().st_size > 20_000_000
    assert peak < 2_000_000, f"{peak} bytes traced while writing a 20 MB file"
