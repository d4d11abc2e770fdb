"""Knowledge data in training and evaluation: plain text trained beside chat records (every text
token labelled, only the assistant's in chat), the recall probe, the taught-question recall eval
reports, and a small CPU run of the embedded student whose recall of taught facts rises."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from common.errors import UserError
from common.io import write_json, write_jsonl
from train.config import DEFAULTS, TrainConfig
from train.data import prepare, read_data_dir, recall_probe

from tiny_models import record

FACTS = [  # invented facts: (subject, answer), asked in three phrasings each
    ("the Velmora ferry", "pier 14"), ("the Orlith guild", "1743"), ("the Kessin daemon", "/etc/kessin/vane.toml"),
    ("the Tarn bridge", "Maret Osk"), ("the Ulvo lamp", "cobalt blue"), ("the Brisk protocol", "port 7719"),
]  # fmt: skip
OPENINGS = ("What is the code word of", "Which code word belongs to", "Name the code word of")


def fact_records(split: str = "train", phrasings: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    rows = []
    for f, (subject, answer) in enumerate(FACTS):
        for p in phrasings:
            question = f"{OPENINGS[p]} {subject}?"
            row = record(10 * f + p, question, answer, context=f"The code word of {subject} is {answer}.", reasoning=f"The code word of {subject} is {answer}.", split=split)
            row["fact"] = hashlib.sha256(subject.encode()).hexdigest()[:16]
            rows.append(row)
    return rows


def knowledge_dir(folder: Path, text: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", fact_records())
    write_jsonl(folder / "test.jsonl", fact_records("test", (0,))[:2])
    write_json(folder / "manifest.json", {"status": "complete", "split_by": "item", "counts": {}})
    if text is not None:
        source = {"doc": "doc.md", "chunk": 0, "start": 0, "end": 1}
        write_jsonl(folder / "text.jsonl", [{"id": f"{i:016x}", "text": t, "form": "original", "source": source, "split": "train"} for i, t in enumerate(text)])
    return folder


def test_text_trains_on_every_token_and_chat_on_the_assistant(tmp_path, tokenizer):
    data = knowledge_dir(tmp_path / "data", text=["The Velmora ferry leaves from pier 14. " * 3])
    cfg = TrainConfig(data=str(data), recall_probe=0).resolved("knowledge")
    prepared = prepare(cfg, tokenizer, read_data_dir(data))
    text_rows = [r for r in prepared.train if all(r["completion_mask"])]
    chat_rows = [r for r in prepared.train if not all(r["completion_mask"])]
    assert len(text_rows) == 1 and len(chat_rows) == len(FACTS) * 3 and prepared.stats["text_rows"] == 1
    assert text_rows[0]["input_ids"][-1] == tokenizer.eos_token_id
    for row in chat_rows:  # the prompt is masked, the assistant turn (trace + answer) is not
        first = row["completion_mask"].index(1)
        assert 0 < first and all(row["completion_mask"][first:])
        assert "pier 14" in tokenizer.decode(row["input_ids"][first:]) or "pier 14" not in tokenizer.decode(row["input_ids"])
    off = prepare(TrainConfig(data=str(data), recall_probe=0, text=False).resolved("knowledge"), tokenizer, read_data_dir(data))
    assert off.stats["text_rows"] == 0 and len(off.train) == len(chat_rows)
    with pytest.raises(UserError, match="text.jsonl is missing"):
        prepare(TrainConfig(data=str(knowledge_dir(tmp_path / "bare")), text=True).resolved("knowledge"), tokenizer, read_data_dir(tmp_path / "bare"))


def test_the_probe_holds_out_one_phrasing_of_facts_that_keep_two():
    records = fact_records() + fact_records(phrasings=(0, 1))[:2]  # one fact asked twice more: 5 phrasings
    probe = recall_probe(records, 4, seed=0)
    held, taught = probe["held_out"], probe["taught"]
    assert len(held) == len(taught) == 4 and len({r["fact"] for r in held}) == 4
    for h, t in zip(held, taught):
        assert h["fact"] == t["fact"] and h["id"] != t["id"]
    assert recall_probe(records, 4, seed=0) == probe and recall_probe(records, 4, seed=1) != probe
    assert recall_probe(fact_records(phrasings=(0,)), 4, seed=0) == {}  # one phrasing per fact: nothing to hold out


def test_auto_hyperparameters_follow_the_data_kind():
    knowledge, skill = TrainConfig().resolved("knowledge"), TrainConfig().resolved("skill")
    assert (knowledge.epochs, knowledge.lr, knowledge.lora_r) == tuple(DEFAULTS["knowledge"][k] for k in ("epochs", "lr", "lora_r"))
    assert (skill.epochs, skill.lr, skill.lora_r) == tuple(DEFAULTS["skill"][k] for k in ("epochs", "lr", "lora_r"))
    assert TrainConfig(method="full").resolved("knowledge").lr == DEFAULTS["knowledge"]["lr"] / 10
    assert TrainConfig(lr=3e-4, epochs=1).resolved("knowledge").lr == 3e-4  # what the user sets stays


@pytest.mark.integration
def test_the_embedded_student_learns_taught_facts_on_cpu(tmp_path):
    """A small knowledge run with the defaults: recall of the taught questions, probed after every
    epoch, ends high and above where it began; eval reports it beside the held-out test."""
    import subprocess
    import sys

    data = knowledge_dir(tmp_path / "data")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "distill", "train", str(data), "--out", str(tmp_path / "s"), "--json", "-q", "recall_probe=6", "probe_budget=null", "--epochs", "8"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout[done.stdout.index("{"):])
    assert run["data"]["kind"] == "knowledge" and run["config"]["lora_r"] == DEFAULTS["knowledge"]["lora_r"]
    curve = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines() if "recall_train" in line]
    assert len(curve) == 8
    assert curve[-1]["recall_train"] >= 0.8 and curve[-1]["recall_train"] > curve[0]["recall_train"], curve


def test_run_json_lists_every_record_held_out_of_training(tmp_path, tokenizer):
    """The recall probe's held-out phrasings and the validation slice are listed (eval asks none as taught)."""
    data = knowledge_dir(tmp_path / "data")
    cfg = TrainConfig(data=str(data), recall_probe=2, val_fraction=0.2, text=False).resolved("knowledge")
    prepared = prepare(cfg, tokenizer, read_data_dir(data))
    held = set(prepared.stats["held_out_ids"])
    probe = {r["id"] for r in prepared.probe["held_out"]}
    assert len(probe) == 2 and probe <= held and not held & {r["id"] for r in prepared.probe["taught"]}
    assert len(held) == len(probe) + prepared.stats["val_records"]
    assert prepared.stats["records"] == len(FACTS) * 3 - len(held)


def test_training_questions_are_only_those_the_student_trained_on(tmp_path):
    from evaluation.recall import taught_questions, untaught_ids

    train, test = fact_records(), fact_records("test", (0,))
    held = {r["id"] for r in train if r["question"].startswith(OPENINGS[0])}  # e.g. the probe held out phrasing 0
    asked = taught_questions(train, test, 100, held)
    assert asked and not {r["id"] for r in asked} & held and len(asked) == len(train) - len(held)
    no_facts = [{**r, "fact": None} for r in train]
    assert taught_questions(no_facts, test, 100) == []  # no fact ids: off, as docs/train.md says

    student = tmp_path / "student"
    student.mkdir()
    write_json(student / "run.json", {"data": {"held_out_ids": sorted(held)}})
    assert untaught_ids([str(student), str(tmp_path / "not-trained-here")]) == (held, "")
    write_json(student / "run.json", {"data": {}})  # written before run.json listed them: ask none rather than guess
    ids, note = untaught_ids([str(student)])
    assert ids == set() and note.startswith("not asked: ") and "does not list the records it held out" in note


class Clock:
    """time.monotonic for train.callbacks: moved by hand (an epoch's training, a probe's answers)."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def scripted_probe(monkeypatch, tokenizer, metrics, clock, recalls: list[float], cost: float, **kwargs):
    """A RecallProbe whose answers take `cost` seconds and score the next of `recalls` (no model)."""
    from train import callbacks

    monkeypatch.setattr(callbacks, "time", clock)
    probe = callbacks.RecallProbe(recall_probe(fact_records(), 4, seed=0), "closed-book", tokenizer, metrics, **kwargs)
    scores = iter(recalls)

    def answer(model):
        clock.now += cost
        value = next(scores)
        return {"recall_val": value, "recall_val_contains": value, "recall_train": 1.0, "recall_train_contains": 1.0}

    monkeypatch.setattr(probe, "recall", answer)
    return probe


def train_epochs(probe, clock, epochs: range, seconds: float, steps_per_epoch: int = 10) -> list[int]:
    """Call the probe as the Trainer does over `epochs` of `seconds` each; [the epoch it stopped after] or []."""
    from transformers import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    probe.on_train_begin(None, state, control)
    for epoch in epochs:
        clock.now += seconds
        state.global_step, state.epoch = epoch * steps_per_epoch, float(epoch)
        probe.on_epoch_end(None, state, control, model=None)
        if control.should_training_stop:
            return [epoch]
    return []


def test_the_probe_keeps_within_its_share_of_the_training_time(tmp_path, tokenizer, monkeypatch):
    from train.callbacks import Metrics

    clock, metrics = Clock(), Metrics(tmp_path / "metrics.jsonl")
    probe = scripted_probe(monkeypatch, tokenizer, metrics, clock, [0.5] * 10, cost=5.0, budget=0.1)
    train_epochs(probe, clock, range(1, 11), seconds=20.0)
    rows = [r for r in metrics.rows if "recall_val" in r]
    assert [r["epoch"] for r in rows] == [1.0, 5.0, 8.0, 10.0]  # the first measures the cost; then as the budget allows
    assert sum(r["probe_s"] for r in rows) <= 0.1 * rows[-1]["train_s"] == 20.0
    every = scripted_probe(monkeypatch, tokenizer, Metrics(tmp_path / "all.jsonl"), clock, [0.5] * 10, 5.0, budget=None)
    train_epochs(every, clock, range(1, 11), seconds=20.0)
    assert sum("recall_val" in r for r in every.metrics.rows) == 10


def test_a_resumed_run_keeps_the_probes_early_stop(tmp_path, tokenizer, monkeypatch):
    from train.callbacks import Metrics

    recalls = [0.2, 0.5, 0.5, 0.5, 0.5]
    clock, path = Clock(), tmp_path / "metrics.jsonl"
    whole = scripted_probe(monkeypatch, tokenizer, Metrics(path), clock, recalls, cost=1.0, patience=2, budget=None)
    assert train_epochs(whole, clock, range(1, 6), seconds=20.0) == [4]
    # killed after the checkpoint of epoch 3 (step 30): the resumed run reads the probes up to it back
    resumed = scripted_probe(monkeypatch, tokenizer, Metrics(path, 30), clock, recalls[3:], 1.0, budget=None, patience=2)
    assert (resumed.best, resumed.stale, resumed.spent) == (0.5, 1, 3.0)
    assert train_epochs(resumed, clock, range(4, 6), seconds=20.0) == [4]
