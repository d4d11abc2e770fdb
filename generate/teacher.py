"""What every teacher backend takes and returns, and how one is chosen.

A backend is a small object with `name`, `model`, `generate(requests)` (an iterator of
`Response`s in completion order) and `close()`. Backends are imported lazily so that a
missing optional dependency (vLLM) only matters when it is asked for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from generate.config import TeacherConfig


@dataclass(frozen=True)
class Request:
    key: str  # cache key: hash of everything that determines the answer
    messages: list[dict]
    schema: dict
    max_new_tokens: int
    chunk: str = ""  # the chunk key, for bookkeeping


@dataclass
class Response:
    key: str
    text: str = ""
    reasoning: str | None = None  # the teacher's native trace, where the provider returns one
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # set when the request failed after retries (it is retried next run)
    extra: dict = field(default_factory=dict)


class Teacher(Protocol):
    name: str
    model: str

    def generate(self, requests: list[Request]) -> Iterator[Response]: ...

    def close(self) -> None: ...


def request_key(messages: list[dict], schema: dict, model: str, params: dict) -> str:
    """Hash of prompt (which holds the chunk text and template), schema, teacher model and generation parameters."""
    blob = json.dumps({"messages": messages, "schema": schema, "model": model, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def sampling_params(cfg: TeacherConfig) -> dict:
    """The generation parameters that change an answer (and so belong in the cache key)."""
    params = {
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "repetition_penalty": cfg.repetition_penalty,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.seed,
        "structured": cfg.structured,
    }
    if cfg.extra_body:  # server-side options (e.g. thinking on/off) change answers; absent, keys stay as before
        params["extra_body"] = cfg.extra_body
    return params


def make_teacher(cfg: TeacherConfig) -> Teacher:
    if cfg.backend == "local":
        from generate.teacher_local import LocalTeacher

        return LocalTeacher(cfg)
    if cfg.backend == "openai":
        from generate.teacher_openai import OpenAITeacher

        return OpenAITeacher(cfg)
    from generate.teacher_vllm import VLLMTeacher

    return VLLMTeacher(cfg)
