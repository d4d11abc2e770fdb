"""`distill eval` as one program: setup -> answer -> grade -> save.

setup:  read test.jsonl and the data manifest (or data brought in another format, common/formats.py),
        choose the prompt mode (closed-book for item split, open-book for document split, closed-book
        without a manifest, unless told), check every model path up front.
answer: the base student, each trained student and the teacher answer the same questions
        (greedy); a teacher that cannot be reached is reported missing, the rest go on.
grade:  string graders on the part after </think>, and `correctness` (GRPO's correctness reward,
        the per-reference auto grader); optionally the judge (common.judge: GRPO's judge reward)
        grades every answer and compares every student with the teacher in both orders (through the cache).
save:   predictions.jsonl, metrics.json (means, 95% bootstrap CIs, gap closed, speed, status),
        report.md, report.html and an lm-evaluation-harness task for the same questions.
        Failed teacher or judge requests make the status `incomplete` (the CLI exits 3; a rerun
        sends only those); otherwise `complete`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from common import formats, graders
from common.config import redact
from common.contract import METRICS, STRING_METRICS, Mode, mode_for_split, prompt_messages
from common.errors import UserError
from common.io import write_json, write_jsonl
from common.judge import judge_prompt, judge_teacher, pairwise_prompt
from common.models import EMBEDDED, resolve_model
from common.teacher.ask import CachedTeacher
from common.versions import versions
from evaluation.answering import ModelRun, answer_teacher, answering_config, ask_judge
from evaluation.config import EvalConfig
from evaluation.engines import answer_all, choose_engine, make_answerer
from evaluation.lmeval import write_task
from evaluation.recall import recall_on_taught, taught_questions, training_curves, untaught_ids
from evaluation.report import document_recall, write_report
from evaluation.stats import bootstrap_mean, gap_closed

CACHE = "cache.sqlite"
CLOSED_BOOK_TEACHER = "closed-book: the teacher answers from its own knowledge, without the documents it wrote the questions from"
OPEN_BOOK_TEACHER = "the teacher is the base model itself: it answers open-book (with the passage) as the ceiling for gap closed"


@dataclass
class Plan:
    out: Path
    records: list[dict]
    data: formats.Data  # what was read (format, source); its records are `records` before max_questions
    mode: Mode
    mode_source: str
    runs: list[ModelRun]  # base and students, in report order (the teacher is added when answered)
    taught: list[dict]  # training questions of the test's facts (closed-book data), for recall of what was taught
    teacher_open_book: bool  # the teacher is the base itself: it reads the passage, as the ceiling
    engine: str = "transformers"  # what generates the base's and the students' answers (evaluation.engines)
    failures: dict = field(default_factory=dict)  # {"teacher": n, "judge": n, "last_error": text}: requests that failed
    notes: dict = field(default_factory=dict)  # what was not measured, and why (metrics.json notes)


def run_eval(cfg: EvalConfig, show_progress: bool = True) -> dict:
    started = time.time()
    console = Console(quiet=not show_progress, stderr=True)
    plan = setup(cfg)
    answerer = make_answerer(plan.engine, [run.name for run in plan.runs], cfg)
    try:  # the students' engine is freed before the teacher (a vllm teacher wants the GPU) and the judge run
        runs = answer(cfg, plan, console, answerer)
        knowledge = {"curves": training_curves(plan.runs)}
        if plan.taught:
            with console.status(f"the base and the students answer {len(plan.taught)} of their training questions"):
                knowledge["train_questions"] = recall_on_taught(plan.runs, plan.taught, plan.mode, cfg, answerer)
    finally:
        answerer.close()
    if cfg.teacher is not None:
        runs.append(answer_as_teacher(cfg, plan, console))
    scores, notes = grade(cfg, plan, runs, console)
    notes = {**plan.notes, **notes}
    return save(cfg, plan, runs, scores, notes, knowledge, started)


# ---------------------------------------------------------------- setup


def setup(cfg: EvalConfig) -> Plan:
    data = formats.load(cfg.data, cfg.split, hint="; pass the --out directory of `distill gen`, a file of questions, or name the split with split=NAME")
    records = data.records[: cfg.max_questions]
    if not records:
        raise UserError(f"{data.source} holds no questions; rerun `distill gen` with a larger test_fraction or more documents, or point at a file with questions")
    mode, source = choose_mode(cfg, data)
    formats.check_mode(data, mode, "--mode")
    runs = []
    if cfg.include_base:
        base = cfg.base or base_of(cfg.students) or EMBEDDED
        resolve_model(base)
        runs.append(ModelRun("base", base, "base"))
    for label, name in zip(unique_labels(cfg.students), cfg.students):
        resolve_model(name)  # a directory that is not a model fails here, before anything runs
        runs.append(ModelRun(label, name, "student"))
    if not runs and cfg.teacher is None:
        raise UserError("nothing to evaluate: give --student, keep include_base, or set a teacher")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    taught, untaught_note = [], ""
    if mode == "closed-book":
        untaught, untaught_note = untaught_ids([run.name for run in runs if run.role == "student"])
        if not untaught_note:
            taught = taught_questions(training_records(cfg), records, cfg.train_questions, untaught)
    base = runs[0].name if cfg.include_base else None
    same = cfg.teacher is not None and base is not None and cfg.teacher.backend == "local" and same_model(cfg.teacher.model, base)
    passages = all("context" in r for r in records)  # the teacher reads the passage only where the records have one
    engine = choose_engine(cfg.engine) if runs else "transformers"
    plan = Plan(out, records, data, mode, source, runs, taught, same and passages and mode == "closed-book", engine)
    if untaught_note:
        plan.notes["train_questions"] = untaught_note
    return plan


def choose_mode(cfg: EvalConfig, data: formats.Data) -> tuple[Mode, str]:
    """(prompt mode, what chose it): --mode, else the manifest's split, else closed-book."""
    if cfg.mode != "auto":
        return cfg.mode, "--mode"
    if data.manifest is None:
        return "closed-book", f"no manifest ({data.format} data): closed-book by default"
    split_by = data.manifest.get("split_by", "item")
    return mode_for_split(split_by), f"split_by={split_by}"


def training_records(cfg: EvalConfig) -> list[dict]:
    """The train split beside the evaluated one, where the data has one (for recall of taught questions)."""
    if cfg.train_questions == 0 or cfg.split == "train" or not formats.has_split(cfg.data, "train"):
        return []
    return formats.load(cfg.data, "train").records


def same_model(name: str, other: str) -> bool:
    """Whether two names are one model (a name that resolves to nothing is reported where it is used)."""
    try:
        return resolve_model(name) == resolve_model(other)
    except UserError:
        return False


def base_of(students: list[str]) -> str | None:
    """The base model a trained student names: adapter_config.json, else run.json."""
    for name in students:
        folder = Path(name)
        adapter, run = folder / "adapter_config.json", folder / "run.json"
        if adapter.is_file():
            return json.loads(adapter.read_text()).get("base_model_name_or_path")
        if run.is_file():
            info = json.loads(run.read_text())
            base = info.get("base_model") or (info.get("config") or {}).get("model")
            return base.get("name") if isinstance(base, dict) else base
    return None


def unique_labels(names: list[str]) -> list[str]:
    labels: list[str] = []
    for name in names:
        label = Path(name).name or name
        while label in labels or label in ("base", "teacher"):
            label += "'"
        labels.append(label)
    return labels


# ---------------------------------------------------------------- answer


def answer(cfg: EvalConfig, plan: Plan, console: Console, answerer) -> list[ModelRun]:
    conversations = [prompt_messages(r, plan.mode) for r in plan.records]

    def shown(run: ModelRun) -> None:
        console.print(f"{run.label}: {run.perf()['wall_s']} s")

    with console.status(f"{len(plan.runs)} models answer {len(conversations)} questions ({plan.engine})"):
        return answer_all(answerer, plan.runs, conversations, shown)


def answer_as_teacher(cfg: EvalConfig, plan: Plan, console: Console) -> ModelRun:
    asking = [prompt_messages(r, "open-book" if plan.teacher_open_book else plan.mode) for r in plan.records]
    status = console.status(f"teacher ({cfg.teacher.backend}: {cfg.teacher.model}) answers")
    with status, CachedTeacher(answering_config(cfg.teacher), plan.out / CACHE) as asked:
        teacher = answer_teacher(cfg.teacher, asking, cfg.max_new_tokens, asked)
    if teacher.status != "ok":
        console.print(f"[yellow]teacher missing[/]: {teacher.reason}")
    if teacher.failed:
        plan.failures.update(teacher=teacher.failed, last_error=teacher.last_error)
    return teacher


# ---------------------------------------------------------------- grade


def grade(cfg: EvalConfig, plan: Plan, runs: list[ModelRun], console: Console) -> tuple[dict, dict]:
    """Per model, per question, every grader's score (None where it does not apply)."""
    references = [r["answer"] for r in plan.records]
    scores = {
        run.label: [graders.string_scores(out, ref, cfg.numeric_tolerance) for out, ref in zip(run.outputs, references)]
        for run in runs
        if run.status == "ok"
    }
    notes: dict[str, str] = {}
    if cfg.judge or cfg.pairwise:
        with console.status("the judge grades"):
            notes = judge_all(cfg, plan, runs, scores)
    return scores, notes


def judge_all(cfg: EvalConfig, plan: Plan, runs: list[ModelRun], scores: dict) -> dict:
    """Add 'judge' and 'pairwise_vs_teacher' scores; returns notes on what could not be judged."""
    answered = [run for run in runs if run.status == "ok"]
    teacher = next((run for run in answered if run.role == "teacher"), None)
    prompts, slots = [], []  # slots[i] = (label, question index, kind)
    for run in answered:
        for q, record in enumerate(plan.records):
            mine = run.outputs[q]
            if cfg.judge:
                prompts.append(judge_prompt(record["question"], record["answer"], mine))
                slots.append((run.label, q, "judge"))
            if cfg.pairwise and teacher is not None and run is not teacher:
                theirs = teacher.outputs[q]
                for order, pair in (("student_first", (mine, theirs)), ("teacher_first", (theirs, mine))):
                    prompts.append(pairwise_prompt(record["question"], record["answer"], *pair))
                    slots.append((run.label, q, order))
    notes = {}
    if cfg.pairwise and teacher is None:
        notes["pairwise_vs_teacher"] = "not judged: the teacher has no answers"
    with CachedTeacher(judge_teacher(cfg.judge_model or cfg.teacher), plan.out / CACHE) as judge:
        judged = ask_judge(judge, prompts)
    replies = judged.replies
    if judged.failed:
        notes["judge"] = f"{judged.failed} of {len(prompts)} judge requests failed: {judged.last_error}"
        plan.failures.update(judge=judged.failed, last_error=judged.last_error)
    verdicts: dict[tuple[str, int], dict] = {}
    for (label, q, kind), reply in zip(slots, replies):
        if kind == "judge":
            scores[label][q]["judge"] = None if reply is None else graders.parse_judge(reply)
        else:
            verdicts.setdefault((label, q), {})[kind] = None if reply is None else graders.parse_pairwise(reply)
    for (label, q), pair in verdicts.items():
        scores[label][q]["pairwise_vs_teacher"] = graders.pairwise_preference(pair.get("student_first"), pair.get("teacher_first"))
    return notes


# ---------------------------------------------------------------- save


def save(cfg: EvalConfig, plan: Plan, runs: list[ModelRun], scores: dict, notes: dict, knowledge: dict, started: float) -> dict:
    write_jsonl(plan.out / "predictions.jsonl", prediction_rows(plan, runs, scores))
    metrics = {**summarize(cfg, plan, runs, scores, notes, started), **knowledge}
    write_task(plan.out / "lm_eval", plan.records, plan.mode, cfg.max_new_tokens)
    metrics["files"] = write_report(plan.out, metrics, plan.records, runs, scores)
    metrics["files"].update(predictions="predictions.jsonl", metrics="metrics.json", lm_eval="lm_eval/distill_test.yaml")
    write_json(plan.out / "metrics.json", metrics)
    return metrics


def prediction_rows(plan: Plan, runs: list[ModelRun], scores: dict) -> list[dict]:
    rows = []
    for run in runs:
        for q, output in enumerate(run.outputs):
            record = plan.records[q]
            rows.append({
                "id": record["id"],
                "model": run.label,
                "role": run.role,
                "question": record["question"],
                "reference": record["answer"],
                "output": output,
                "answer": graders.final_answer(output),
                "output_tokens": run.tokens[q],
                "scores": scores[run.label][q],
            })
    return rows


def summarize(cfg: EvalConfig, plan: Plan, runs: list[ModelRun], scores: dict, notes: dict, started: float) -> dict:
    models = {}
    for run in runs:
        entry = {"name": run.name, "role": run.role, "status": run.status, "perf": run.perf()}
        if run.status != "ok":
            entry["reason"] = run.reason
        else:
            per_metric = {m: [row.get(m) for row in scores[run.label]] for m in METRICS}
            entry["metrics"] = {m: bootstrap_mean(v, cfg.bootstrap_samples, cfg.seed) for m, v in per_metric.items() if any(x is not None for x in v)}
        if run.role == "teacher" and plan.mode == "closed-book":
            entry["note"] = OPEN_BOOK_TEACHER if plan.teacher_open_book else CLOSED_BOOK_TEACHER
        models[run.label] = entry
    failed = plan.failures.get("teacher", 0) + plan.failures.get("judge", 0)
    return {
        "status": "incomplete" if failed else "complete",
        **({"failures": {"requests": failed, **plan.failures}} if failed else {}),
        "mode": plan.mode,
        "mode_source": plan.mode_source,
        "engine": plan.engine,
        "data": cfg.data,
        "data_format": plan.data.format,
        "data_source": plan.data.source,
        "questions": len(plan.records),
        "models": models,
        "gap_closed": gaps(cfg, runs, scores),
        "per_document": document_recall(plan.records, runs, scores),
        "notes": notes,
        "wall_time_s": round(time.time() - started, 3),
        "config": redact(cfg.model_dump(mode="json")),
        "versions": versions(),
    }


def gaps(cfg: EvalConfig, runs: list[ModelRun], scores: dict) -> dict:
    """(student - base) / (teacher - base) per student and metric, where both ends were answered."""
    if "base" not in scores or "teacher" not in scores:
        return {}
    out = {}
    for run in runs:
        if run.role != "student" or run.label not in scores:
            continue
        per = {}
        for metric in STRING_METRICS + ("judge",):
            values = [[row.get(metric) for row in scores[label]] for label in (run.label, "base", "teacher")]
            per[metric] = gap_closed(*values, samples=cfg.bootstrap_samples, seed=cfg.seed)
        out[run.label] = per
    return out
