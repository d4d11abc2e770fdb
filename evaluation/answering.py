"""Who answers the test questions in `distill eval`, and how the judge is asked.

Students and the base answer in-process with `evaluation.inference` (transformers batching,
greedy). The teacher and the judge are asked through the cached-teacher path
(`common.teacher.ask`), so a rerun sends only what is missing: the local backend answers free
text without a grammar, greedy and without a repetition penalty, as the students do.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from common.generation import generate_counted
from common.teacher.ask import CachedTeacher, Prompt
from common.teacher.config import TeacherConfig
from evaluation.inference import load_model

JUDGE_TOKENS = 32


@dataclass
class ModelRun:
    """One model's answers to every question, with timing; status 'missing' keeps the reason."""

    label: str
    name: str
    role: str  # base | student | teacher
    outputs: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    load_s: float = 0.0
    status: str = "ok"
    reason: str = ""

    def perf(self) -> dict:
        written = sum(self.tokens)
        return {
            "questions": len(self.outputs),
            "output_tokens": written,
            "mean_output_tokens": written / len(self.tokens) if self.tokens else None,
            "wall_s": round(self.wall_s, 3),
            "load_s": round(self.load_s, 3),
            "tokens_per_s": written / self.wall_s if self.wall_s > 0 else None,
            "questions_per_s": len(self.outputs) / self.wall_s if self.wall_s > 0 else None,
        }


def answer_local(run: ModelRun, conversations: list[list[dict]], max_new_tokens: int, batch_size: int) -> ModelRun:
    """Load the model (adapter or merged), answer every conversation, free the model."""
    started = time.perf_counter()
    model, tokenizer = load_model(run.name)
    run.load_s = time.perf_counter() - started
    started = time.perf_counter()
    run.outputs, run.tokens = generate_counted(model, tokenizer, conversations, max_new_tokens, batch_size)
    run.wall_s = time.perf_counter() - started
    del model
    gc.collect()
    return run


def answer_teacher(cfg: TeacherConfig, conversations: list[list[dict]], max_new_tokens: int, teacher: CachedTeacher) -> ModelRun:
    """The teacher's answers; any failure (unreachable server, missing backend) makes it 'missing'
    with the reason, so that the other models are still evaluated and reported."""
    run = ModelRun("teacher", cfg.model, "teacher")
    started = time.perf_counter()
    try:
        asked = teacher.ask([Prompt(c, None, max(16, max_new_tokens)) for c in conversations])
    except Exception as exc:  # noqa: BLE001 - an unreachable teacher must not stop the evaluation
        return missing(run, f"{type(exc).__name__}: {exc}")
    run.wall_s = time.perf_counter() - started
    if asked.interrupted:
        raise KeyboardInterrupt
    failed = [a.response for a in asked.answers if a.response.error is not None]
    if failed:
        return missing(run, f"{len(failed)} of {len(conversations)} requests failed ({failed[0].error}); rerun to retry them")
    run.outputs = [a.response.text.strip() for a in asked.answers]
    run.tokens = [a.response.completion_tokens for a in asked.answers]
    return run


def answering_config(cfg: TeacherConfig) -> TeacherConfig:
    """The teacher as an answerer: greedy free text, no repetition penalty (as the students answer)."""
    return cfg.model_copy(update={"structured": False, "temperature": 0.0, "repetition_penalty": 1.0})


def missing(run: ModelRun, reason: str) -> ModelRun:
    run.status, run.reason = "missing", " ".join(reason.split())[:300]
    run.outputs, run.tokens = [], []
    return run


def judge_config(cfg: TeacherConfig) -> TeacherConfig:
    """The judge: the given model, greedy, answering in the grader's JSON Schema."""
    return cfg.model_copy(update={"temperature": 0.0, "structured": True, "max_new_tokens": JUDGE_TOKENS, "repair_attempts": 0})


def ask_judge(teacher: CachedTeacher, prompts: list[tuple[list[dict], dict]]) -> tuple[list[str | None], str]:
    """The judge's reply text to every (messages, schema) prompt (None where it failed), and the
    reason when the judge could not be asked at all (empty otherwise)."""
    try:
        asked = teacher.ask([Prompt(messages, schema, JUDGE_TOKENS) for messages, schema in prompts])
    except Exception as exc:  # noqa: BLE001 - a judge that cannot run leaves its metrics out
        return [None] * len(prompts), " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    if asked.interrupted:
        raise KeyboardInterrupt
    return [None if a.response.error else a.response.text for a in asked.answers], ""
