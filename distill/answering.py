"""Who answers the test questions in `distill eval`, and how the judge is asked.

Students and the base answer in-process with `distill.inference` (transformers batching,
greedy). The teacher answers through its generation backend (`generate.teacher`): the
`local` backend is answered with `distill.inference` on the teacher model (free text needs no
grammar), other backends through `make_teacher`. Backend calls (teacher answers and every
judge call) go through the request cache, so a rerun sends only what is missing.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from distill.inference import generate_counted, load_model
from generate.cache import Cache
from generate.config import TeacherConfig
from generate.teacher import Request, Response, make_teacher, request_key, sampling_params

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


def answer_teacher(cfg: TeacherConfig, conversations: list[list[dict]], max_new_tokens: int, batch_size: int, cache: Cache) -> ModelRun:
    """The teacher's answers; any failure (unreachable server, missing backend) makes it 'missing'
    with the reason, so that the other models are still evaluated and reported."""
    run = ModelRun("teacher", cfg.model, "teacher")
    try:
        if cfg.backend == "local":
            return answer_local(run, conversations, max_new_tokens, batch_size)
        backend_cfg = cfg.model_copy(update={"structured": False, "temperature": 0.0, "max_new_tokens": max(16, max_new_tokens)})
        requests = [backend_request(backend_cfg, c, None) for c in conversations]
        started = time.perf_counter()
        responses = ask_backend(backend_cfg, requests, cache)
        run.wall_s = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - an unreachable teacher must not stop the evaluation
        return missing(run, f"{type(exc).__name__}: {exc}")
    failed = [r for r in requests if responses[r.key].error is not None]
    if failed:
        return missing(run, f"{len(failed)} of {len(requests)} requests failed ({responses[failed[0].key].error}); rerun to retry them")
    run.outputs = [responses[r.key].text.strip() for r in requests]
    run.tokens = [responses[r.key].completion_tokens for r in requests]
    return run


def missing(run: ModelRun, reason: str) -> ModelRun:
    run.status, run.reason = "missing", " ".join(reason.split())[:300]
    run.outputs, run.tokens = [], []
    return run


def backend_request(cfg: TeacherConfig, messages: list[dict], schema: dict | None) -> Request:
    key = request_key(messages, schema, cfg.model, sampling_params(cfg))
    return Request(key, messages, schema, cfg.max_new_tokens)


def ask_backend(cfg: TeacherConfig, requests: list[Request], cache: Cache) -> dict[str, Response]:
    """Responses by key: cached ones first, the rest sent to the backend and cached as they arrive."""
    found = cache.get_many([r.key for r in requests])
    todo = list({r.key: r for r in requests if r.key not in found}.values())
    if todo:
        teacher = make_teacher(cfg)
        try:
            for response in teacher.generate(todo):
                cache.put(response)
                found[response.key] = response
        finally:
            teacher.close()
    for request in todo:  # a backend that dropped a request without a Response
        found.setdefault(request.key, Response(request.key, error="no response"))
    return found


def judge_config(cfg: TeacherConfig) -> TeacherConfig:
    """The judge: the given model, greedy, answering in the grader's JSON Schema."""
    return cfg.model_copy(update={"temperature": 0.0, "structured": True, "max_new_tokens": JUDGE_TOKENS, "repair_attempts": 0})


def ask_judge(cfg: TeacherConfig, prompts: list[tuple[list[dict], dict]], cache: Cache) -> tuple[list[str | None], str]:
    """The judge's reply text to every (messages, schema) prompt (None where it failed), and the
    reason when the judge could not be asked at all (empty otherwise)."""
    judge = judge_config(cfg)
    requests = [backend_request(judge, messages, schema) for messages, schema in prompts]
    try:
        responses = ask_backend(judge, requests, cache)
    except Exception as exc:  # noqa: BLE001 - a judge that cannot run leaves its metrics out
        return [None] * len(requests), " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return [None if responses[r.key].error else responses[r.key].text for r in requests], ""
