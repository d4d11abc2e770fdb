"""Who answers the test questions in `distill eval`, and how the judge is asked.

Students and the base answer in-process with `evaluation.inference` (transformers batching,
greedy). The teacher and the judge are asked through the cached-teacher path
(`common.teacher.ask`), so a rerun sends only what is missing: the local backend answers free
text without a grammar, greedy and without a repetition penalty, as the students do. The judge is
`common.judge`'s, the one GRPO's judge reward uses. A failed teacher or judge request is counted
(`failed`, `last_error`): eval then ends `incomplete` (exit 3) and a rerun sends only those.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from common.generation import generate_counted
from common.teacher.ask import CachedTeacher, Prompt
from common.teacher.config import TeacherConfig
from evaluation.inference import load_model


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
    failed: int = 0  # teacher requests that failed (a rerun sends them again)
    last_error: str = ""

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


def answer_teacher(
    cfg: TeacherConfig, conversations: list[list[dict]], max_new_tokens: int, teacher: CachedTeacher
) -> ModelRun:
    """The teacher's answers; any failure (unreachable server, missing backend) makes it 'missing'
    with the reason, so that the other models are still evaluated and reported."""
    run = ModelRun("teacher", cfg.model, "teacher")
    started = time.perf_counter()
    try:
        asked = teacher.ask([Prompt(c, None, max(16, max_new_tokens)) for c in conversations])
    except Exception as exc:  # noqa: BLE001 - an unreachable teacher must not stop the evaluation
        run.failed, run.last_error = len(conversations), one_line(f"{type(exc).__name__}: {exc}")
        return missing(run, run.last_error)
    run.wall_s = time.perf_counter() - started
    if asked.interrupted:
        raise KeyboardInterrupt
    failed = [a.response for a in asked.answers if a.response.error is not None]
    if failed:
        run.failed, run.last_error = len(failed), one_line(failed[-1].error)
        reason = f"{len(failed)} of {len(conversations)} requests failed ({failed[-1].error}); rerun to retry them"
        return missing(run, reason)
    run.outputs = [a.response.text.strip() for a in asked.answers]
    run.tokens = [a.response.completion_tokens for a in asked.answers]
    return run


def answering_config(cfg: TeacherConfig) -> TeacherConfig:
    """The teacher as an answerer: greedy free text, no repetition penalty (as the students answer)."""
    return cfg.model_copy(update={"structured": False, "temperature": 0.0, "repetition_penalty": 1.0})


def missing(run: ModelRun, reason: str) -> ModelRun:
    run.status, run.reason = "missing", one_line(reason)
    run.outputs, run.tokens = [], []
    return run


def one_line(text: str) -> str:
    return " ".join(text.split())[:300]


@dataclass
class Judged:
    """The judge's reply text to every prompt (None where it failed), how many failed, the last error."""

    replies: list[str | None]
    failed: int = 0
    last_error: str = ""


def ask_judge(teacher: CachedTeacher, prompts: list[Prompt]) -> Judged:
    """Ask the judge (`common.judge`'s prompts) every prompt; a judge that cannot be asked at all
    fails every request, with the reason as the last error."""
    try:
        asked = teacher.ask(prompts)
    except Exception as exc:  # noqa: BLE001 - a judge that cannot run leaves its metrics out
        return Judged([None] * len(prompts), len(prompts), one_line(f"{type(exc).__name__}: {exc}"))
    if asked.interrupted:
        raise KeyboardInterrupt
    errors = [a.response.error for a in asked.answers if a.response.error]
    replies = [None if a.response.error else a.response.text for a in asked.answers]
    return Judged(replies, len(errors), one_line(errors[-1]) if errors else "")
