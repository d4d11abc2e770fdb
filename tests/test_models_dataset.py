"""Model resolution (embedded, paths, hub ids) and dataset I/O (atomic JSONL, record checks, exports)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import UserError
from common.io import read_jsonl, write_atomic, write_jsonl
from common.models import resolve_model
from generate.export import export


def test_embedded_model_is_a_converted_directory(embedded_path):
    folder = Path(embedded_path)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"


def test_paths_and_hub_ids(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert resolve_model(str(model)) == str(model)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(UserError, match="not a model directory"):
        resolve_model(str(tmp_path))
    with pytest.raises(UserError, match="neither an existing directory nor a hub id"):
        resolve_model(str(tmp_path / "missing" / "deeper"))


def record(question: str = "What is it?") -> dict:
    return {
        "id": "0123456789abcdef",
        "question": question,
        "reasoning": "Because.",
        "answer": "It.",
        "evidence": "It is.",
        "context": "It is.",
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "<think>\nBecause.\n</think>\n\nIt."}],
        "source": {"doc": "a.md", "chunk": 0, "start": 0, "end": 6},
        "teacher": {"backend": "local", "model": "embedded"},
        "split": "train",
    }


def test_jsonl_round_trip_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "train.jsonl"
    assert write_jsonl(path, [record(), record("Ünïcode?")]) == 2
    assert read_jsonl(path) == [record(), record("Ünïcode?")]
    assert "Ünïcode" in path.read_text()  # not escaped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]  # no temporary file left

    class Boom(Exception):
        pass

    def rows():
        yield record()
        raise Boom

    with pytest.raises(Boom):
        write_jsonl(path, rows())
    assert read_jsonl(path) == [record(), record("Ünïcode?")]  # the old content is intact

    def interrupted(fd):
        raise KeyboardInterrupt  # Ctrl-C while the new content is being flushed

    monkeypatch.setattr("common.io.os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new content\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
    assert read_jsonl(path) == [record(), record("Ünïcode?")]


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record()) + "\n\n{oops\n")
    with pytest.raises(UserError, match=r"data.jsonl:3 is not valid JSON"):
        read_jsonl(path)
    path.write_text(json.dumps(record()) + "\n" + json.dumps({**record(), "split": "dev"}) + "\n")
    with pytest.raises(UserError, match=r"data.jsonl:2 is not a valid record record: split"):
        read_jsonl(path)
    assert len(read_jsonl(path, schema=None)) == 2
    with pytest.raises(UserError, match="run `distill gen` first"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_export_formats():
    assistant = record()["messages"][1]["content"]
    assert export([record()], "alpaca") == [{"instruction": "What is it?", "input": "", "output": assistant}]
    assert export([record()], "sharegpt") == [{"conversations": [{"from": "human", "value": "What is it?"}, {"from": "gpt", "value": assistant}]}]
    assert export([record()], "openai") == [{"messages": record()["messages"]}]
    with pytest.raises(UserError, match="unknown export format 'csv'"):
        export([record()], "csv")
