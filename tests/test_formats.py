"""Bring your own data (common/formats.py): chat, Alpaca, ShareGPT, records without a manifest and
`datasets` folders are detected by their fields and converted to records; unknown and mixed shapes
are one-line errors; every assistant turn of a conversation is trained on; one short `distill train`
on ShareGPT data in a `datasets` folder and one `distill eval` on a chat file, with tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from common import formats
from common.contract import prompt_messages, training_messages
from common.errors import UserError
from common.io import write_jsonl
from distill.cli import cli as group
from distill.cli import main

from tiny_models import one_thread
from trainkit import data_dir, tiny_model

SYSTEM = "You answer questions about the Varnholm lighthouse."
CHAT = [
    {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "When was it built?"},
                  {"role": "assistant", "content": "<think>\nThe record says 1874.\n</think>\n\nIn 1874."}]},
    {"messages": [{"role": "user", "content": "What is it made of?"}, {"role": "assistant", "content": "Grey granite."},
                  {"role": "user", "content": "And its lamp?"}, {"role": "assistant", "content": "<think>\nWhale oil until 1921.\n</think>\n\nWhale oil."},
                  {"role": "user", "content": "a trailing turn with no answer"}]},
]  # fmt: skip
ALPACA = [
    {"instruction": "Translate to French.", "input": "the lighthouse", "output": "le phare"},
    {"instruction": "Name the lighthouse's stone.", "input": "", "output": "Granite"},
]
SHAREGPT = [
    {"conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": "When was it built?"}, {"from": "gpt", "value": "In 1874."}]},
    {"conversations": [{"from": "human", "value": "What did the lamp burn?"}, {"from": "gpt", "value": "<think>\nuntil 1921\n</think>\n\nWhale oil."}]},
]
RECORDS = [  # distill's own shape without a manifest: question and answer, the rest optional
    {"question": "When was the lighthouse built?", "answer": "In 1874.", "reasoning": "The record says 1874.", "context": "Built in 1874 from grey granite."},
    {"question": "What did the lamp burn?", "answer": "Whale oil."},
]
EXPECTED = "expected one of: distill records (question, answer), chat (messages), Alpaca (instruction, output), ShareGPT (conversations)"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    previous = one_thread()
    yield
    torch.set_num_threads(previous)


def write_rows(path: Path, rows: list[dict]) -> Path:
    """JSONL, or a JSON array where the name ends in .json (as Alpaca ships)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    else:
        write_jsonl(path, rows)
    return path


def test_each_shape_is_detected_and_converted(tmp_path):
    chat = formats.load(write_rows(tmp_path / "chat.jsonl", CHAT), "train")
    assert chat.format == "chat" and chat.manifest is None and len(chat.records) == 2
    first, second = chat.records
    assert (first["question"], first["answer"], first["reasoning"]) == ("When was it built?", "In 1874.", "The record says 1874.")
    assert second["question"] == "And its lamp?" and second["answer"] == "Whale oil." and len(second["messages"]) == 4  # cut after the last answer
    assert prompt_messages(first, "closed-book") == CHAT[0]["messages"][:2]  # the system prompt stays
    assert prompt_messages(second, "open-book") == CHAT[1]["messages"][:3] and training_messages(second, "closed-book") == CHAT[1]["messages"][:4]

    alpaca = formats.load(write_rows(tmp_path / "alpaca.json", ALPACA), "train")
    assert alpaca.format == "alpaca"
    assert [r["question"] for r in alpaca.records] == ["Translate to French.\n\nthe lighthouse", "Name the lighthouse's stone."]
    assert [r["messages"][-1]["content"] for r in alpaca.records] == ["le phare", "Granite"]

    sharegpt = formats.load(write_rows(tmp_path / "sharegpt.jsonl", SHAREGPT), "train")
    assert sharegpt.format == "sharegpt"
    assert [m["role"] for m in sharegpt.records[0]["messages"]] == ["system", "user", "assistant"]
    assert sharegpt.records[1]["answer"] == "Whale oil." and sharegpt.records[1]["reasoning"] == "until 1921"

    folder = tmp_path / "records"
    write_rows(folder / "train.jsonl", RECORDS)
    records = formats.load(folder, "train")
    assert records.format == "distill" and records.describe()["manifest_sha256"] is None and records.describe()["data_sha256"]
    with_passage, bare = records.records
    assert with_passage["messages"][-1]["content"] == "<think>\nThe record says 1874.\n</think>\n\nIn 1874."
    assert prompt_messages(with_passage, "open-book")[0]["content"].startswith("Read the passage")
    assert bare["messages"][-1]["content"] == "Whale oil." and prompt_messages(bare, "closed-book") == [{"role": "user", "content": RECORDS[1]["question"]}]
    with pytest.raises(UserError, match="open-book prompts need each record's context.*1 records"):
        formats.check_mode(records, "open-book", "--mode")
    formats.check_mode(chat, "open-book", "--mode")  # conversations are asked as they stand

    gen = formats.load(data_dir(tmp_path / "gen", n=4), "test")  # a `distill gen` directory: as before
    assert gen.format == "distill" and gen.manifest is not None and gen.describe()["manifest_sha256"] and "source" in gen.records[0]


def test_datasets_folders_are_read_by_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train_sft": Dataset.from_list(SHAREGPT), "test_sft": Dataset.from_list(SHAREGPT[:1])}).save_to_disk(str(tmp_path / "dict"))
    Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "single"))
    train = formats.load(tmp_path / "dict", "train_sft")
    assert train.format == "sharegpt" and len(train.records) == 2 and "split train_sft" in train.source and train.sha256
    assert formats.has_split(tmp_path / "dict", "test_sft") and not formats.has_split(tmp_path / "dict", "train")
    with pytest.raises(UserError, match=r"has no split 'train' \(it has train_sft, test_sft\); name one with split=NAME"):
        formats.load(tmp_path / "dict", "train")
    single = formats.load(tmp_path / "single", "whatever")  # a single Dataset is all one split
    assert single.format == "alpaca" and [r["answer"] for r in single.records] == ["le phare", "Granite"]


def test_unknown_mixed_and_broken_rows_are_one_line_errors(tmp_path, capsys):
    unknown = write_rows(tmp_path / "unknown.jsonl", [{"prompt": "hi", "completion": "hello"}])
    mixed = write_rows(tmp_path / "mixed.jsonl", [CHAT[0], ALPACA[0]])
    tool = write_rows(tmp_path / "tool.jsonl", [{"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "{}"}]}] * 2)
    broken = write_rows(tmp_path / "broken.jsonl", ALPACA + [{"instruction": "no output here", "output": ""}])
    cases = [
        (unknown, f"unknown data format (first row has completion, prompt); {EXPECTED}"),
        (mixed, f"mixed data formats (row 1 is chat (messages), row 2 is Alpaca (instruction, output)); {EXPECTED}"),
        (tool, "tool.jsonl:1 is not a valid chat (messages) row: role 'tool' is not one of system, user, assistant"),
        (broken, "broken.jsonl:3 is not a valid Alpaca (instruction, output) row: instruction and output must not be empty"),
    ]
    for path, message in cases:
        for command in (["train", str(path), "--out", str(tmp_path / "o")], ["eval", str(path), "--out", str(tmp_path / "e")]):
            result = CliRunner().invoke(group, command, standalone_mode=False)
            assert isinstance(result.exception, UserError), (command, result.output, result.exception)
            assert message in str(result.exception) and "\n" not in str(result.exception), str(result.exception)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(unknown), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.endswith(EXPECTED) and "\n" not in err
    folder = tmp_path / "no-test"
    write_rows(folder / "train.jsonl", CHAT)
    with pytest.raises(UserError, match="has no test.jsonl; .*split=NAME"):
        formats.load(folder, "test", hint="; name the split with split=NAME")


def test_every_assistant_turn_is_trained_on(tokenizer):
    """A multi-turn chat: the labels cover each assistant turn (and its end of turn), nothing else."""
    from train.data import encode

    record = formats.from_chat(CHAT[1])
    row = encode(tokenizer, record, "closed-book")
    ids, mask = row["input_ids"], row["completion_mask"]
    spans, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    spans += [current] if current else []
    assert [tokenizer.decode(s) for s in spans] == ["Grey granite.<|im_end|>\n", CHAT[1]["messages"][3]["content"] + "<|im_end|>\n"]
    prompt = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    assert "What is it made of?" in prompt and "And its lamp?" in prompt and "trailing turn" not in prompt


def test_train_and_eval_on_brought_data(tmp_path):
    """`distill train` on ShareGPT rows in a `datasets` DatasetDict (split train_sft), then `distill eval`
    of the student on a chat file: run.json and metrics.json name the format, the report too."""
    from datasets import Dataset, DatasetDict

    rows = [{"conversations": [{"from": "human", "value": f"What is code {i}?"}, {"from": "gpt", "value": f"<think>\nIt is listed.\n</think>\n\nCode {i} is {i * 7}."}]} for i in range(12)]
    DatasetDict({"train_sft": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "sharegpt"))
    model = tiny_model(tmp_path / "tiny")
    student = tmp_path / "student"
    trained = CliRunner().invoke(group, ["train", str(tmp_path / "sharegpt"), "--out", str(student), "--model", str(model), "--backend", "hf",
                                         "--max-steps", "3", "--batch-size", "4", "--lr", "1e-2", "-q", "split=train_sft", "recall_probe=0"])  # fmt: skip
    assert trained.exit_code == 0, (trained.output, trained.exception)
    run = json.loads((student / "run.json").read_text())
    assert run["data_format"] == "sharegpt" and run["data"]["prompt_mode"] == "closed-book"
    assert run["data"]["kind"] == "skill"
    assert run["recipe"] == {"kind": "skill", "why": "sharegpt data without fact ids; recipe=knowledge to teach facts"}
    assert "split train_sft" in run["data"]["source"] and run["data"]["manifest_sha256"] is None and run["data"]["records"] == 12
    assert run["metrics"]["steps"] == 3 and run["metrics"]["final_loss"] is not None

    questions = write_rows(tmp_path / "questions.jsonl", CHAT)
    out = tmp_path / "eval"
    evaluated = CliRunner().invoke(group, ["eval", str(questions), "--student", str(student), "--out", str(out), "-q", "max_new_tokens=4", "bootstrap_samples=100"])
    assert evaluated.exit_code == 0, (evaluated.output, evaluated.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_format"] == "chat" and metrics["mode"] == "closed-book" and metrics["mode_source"].startswith("no manifest")
    assert metrics["questions"] == 2 and set(metrics["models"]) == {"base", "student"} and "train_questions" not in metrics
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in predictions if p["model"] == "student"] == ["In 1874.", "Whale oil."]
    assert [p["question"] for p in predictions if p["model"] == "base"] == ["When was it built?", "And its lamp?"]
    assert "format chat" in (out / "report.md").read_text()


def test_brought_data_gets_the_skill_recipe_unless_it_has_fact_ids(tmp_path):
    """Knowledge is data with fact ids (what `distill gen` writes); chat, Alpaca and ShareGPT data without them
    get the skill recipe, whatever the prompt mode; the user's `recipe` wins."""
    from train.config import DEFAULTS, TrainConfig
    from train.data import choose_recipe

    chats = formats.load(write_rows(tmp_path / "chat.jsonl", CHAT), "train")
    assert choose_recipe(chats) == ("skill", "chat data without fact ids; recipe=knowledge to teach facts")
    assert choose_recipe(chats, "knowledge")[0] == "knowledge"
    facts = [{"question": f"q{i}?", "answer": "a", "fact": f"f{i // 2}"} for i in range(4)]
    assert choose_recipe(formats.load(write_rows(tmp_path / "facts.jsonl", facts), "train"))[0] == "knowledge"
    gen = data_dir(tmp_path / "gen")  # a `distill gen` directory: its manifest's split_by decides
    assert choose_recipe(formats.load(gen, "train"))[0] == "knowledge"
    skill = TrainConfig(prompt_mode="closed-book").resolved(choose_recipe(chats)[0])
    assert (skill.epochs, skill.lr, skill.lora_r) == tuple(DEFAULTS["skill"][k] for k in ("epochs", "lr", "lora_r"))


def test_a_pipeline_sees_brought_data_change(tmp_path):
    """`distill run` reruns train and eval when data without a manifest changes (gen data: its manifest, as before)."""
    from distill.pipeline import data_digest

    chats = write_rows(tmp_path / "chats.jsonl", CHAT)
    before = data_digest(chats, "train")
    write_rows(chats, CHAT[:1])
    assert set(before) == {"data"} and data_digest(chats, "train") != before
    gen = data_dir(tmp_path / "gen", n=4)
    assert set(data_digest(gen, "train")) == {"manifest"} and data_digest(tmp_path / "not-yet", "train") == {"manifest": "absent"}
