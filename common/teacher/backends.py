"""What every teacher backend takes and returns, and how one is chosen.

A backend is a small object with `name`, `model`, `generate(requests)` (an iterator of
`Response`s, in completion order) and `close()`. Callers do not use backends directly: they ask
through `common.teacher.ask.CachedTeacher`, which makes the backend (`ask.make_teacher`) and caches
every answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from common.contract import split_trace
from common.teacher.config import TeacherConfig


@dataclass(frozen=True)
class Request:
    key: str  # cache key: hash of everything that determines the answer
    messages: list[dict]
    schema: dict | None  # JSON Schema the reply must follow; None: free text
    max_new_tokens: int


@dataclass
class Response:
    key: str
    text: str = ""
    reasoning: str | None = None  # the teacher's native trace, where the provider returns one
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # set when the request failed after retries (it is retried next run)


def request_key(messages: list[dict], schema: dict | None, model: str, params: dict) -> str:
    """Hash of prompt (which holds the chunk text and template), schema, teacher model and generation parameters."""
    blob = json.dumps({"messages": messages, "schema": schema, "model": model, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def sampling_params(cfg: TeacherConfig, max_new_tokens: int | None = None) -> dict:
    """The generation parameters that change an answer (and so belong in the cache key)."""
    params = {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "repetition_penalty": cfg.repetition_penalty,
        "max_new_tokens": max_new_tokens or cfg.max_new_tokens,
        "seed": cfg.seed,
        "structured": cfg.structured,
    }
    if cfg.extra_body:  # server-side options (e.g. thinking on/off) change answers; absent, keys stay as before
        params["extra_body"] = cfg.extra_body
    return params


def split_reasoning(content: str | None, reasoning: str | None = None) -> tuple[str, str | None]:
    """(answer text, trace or None) of a teacher reply. Providers return a native trace as a
    `reasoning_content` or `reasoning` field (vLLM/SGLang with a reasoning parser, DeepSeek,
    OpenRouter), as an inline `<think>...</think>` block, or, for R1-style models served without
    a parser, as a trace followed by a lone `</think>`. A field trace wins over an inline one."""
    trace, text = split_trace(content or "")
    field_trace = (reasoning or "").strip()
    return text, field_trace or trace or None
