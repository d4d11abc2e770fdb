"""Knowledge measures beside the held-out test (closed-book data): recall of the training
questions themselves (the taught phrasings of the test's facts: learned at all?) and each
student's recall curve over its epochs (from the probe `distill train` runs at the end of epochs, as
often as its probe_budget allows).
"""

from __future__ import annotations

import json
from pathlib import Path

from common.contract import STRING_METRICS, Mode, prompt_messages
from common.graders import string_scores
from evaluation.answering import ModelRun
from evaluation.engines import answer_all
from evaluation.stats import bootstrap_mean


def taught_questions(train: list[dict], test: list[dict], count: int, untaught: set[str] = frozenset()) -> list[dict]:
    """Up to `count` of the `train` records the students trained on (none whose id is in `untaught`):
    first one taught phrasing of each test fact (in test order), then other training records, so that
    taught and held-out recall ask the same facts. None for data without fact ids."""
    train = [r for r in train if r["id"] not in untaught]
    if count == 0 or not any(r.get("fact") for r in train):
        return []
    by_fact: dict[str, list[dict]] = {}
    for record in train:
        if record.get("fact"):
            by_fact.setdefault(record["fact"], []).append(record)
    chosen, used = [], set()
    for record in test:
        match = next((r for r in by_fact.get(record.get("fact") or "", []) if r["id"] not in used), None)
        if match is not None:
            chosen.append(match)
            used.add(match["id"])
    chosen += [r for r in train if r["id"] not in used][: max(0, count - len(chosen))]
    return chosen[:count]


def untaught_ids(students: list[str]) -> tuple[set[str], str]:
    """The ids of training records some student did not train on (its run.json's `data.held_out_ids`:
    the recall probe's held-out phrasings, the validation slice, records too long), and a reason to
    ask no training question at all where a student's run.json does not say (written by an older distill)."""
    ids: set[str] = set()
    for name in students:
        path = Path(name) / "run.json"
        if not path.is_file():
            continue  # not trained by distill on this data: nothing of it was held out
        data = json.loads(path.read_text()).get("data") or {}
        if "held_out_ids" not in data:
            why = f"{name}/run.json does not list the records it held out of training (retrain it to get this recall)"
            return set(), f"not asked: {why}"
        ids.update(data["held_out_ids"])
    return ids, ""


def recall_on_taught(runs: list[ModelRun], records: list[dict], mode: Mode, cfg, answerer) -> dict:
    """The base and every student answer the taught questions; string graders, bootstrap CIs;
    {"questions": n, "models": {label: {"name", "role", "metrics"}}} as metrics.json holds it."""
    conversations = [prompt_messages(r, mode) for r in records]
    models = {}
    fresh = [ModelRun(run.label, run.name, run.role) for run in runs]
    for run, done in zip(runs, answer_all(answerer, fresh, conversations)):
        rows = [string_scores(output, r["answer"], cfg.numeric_tolerance) for output, r in zip(done.outputs, records)]
        per_metric = {m: [row[m] for row in rows] for m in STRING_METRICS}
        stats = {
            m: bootstrap_mean(v, cfg.bootstrap_samples, cfg.seed)
            for m, v in per_metric.items()
            if any(x is not None for x in v)
        }
        models[run.label] = {"name": run.name, "role": run.role, "status": "ok", "metrics": stats}
    return {"questions": len(records), "models": models}


def training_curves(runs: list[ModelRun]) -> dict[str, list[dict]]:
    """{student label: [{"epoch", "recall_val", "recall_train", ...}]} from each student's metrics.jsonl."""
    curves = {}
    for run in runs:
        path = Path(run.name) / "metrics.jsonl"
        if run.role != "student" or not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        points = [r for r in rows if "recall_val" in r]
        if points:
            curves[run.label] = points
    return curves
