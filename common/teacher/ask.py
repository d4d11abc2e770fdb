"""The one path to a teacher, for every stage that asks one (gen's writer and its repairs, the
curation judge, eval's teacher answers and its judge, GRPO's judge reward):

    with CachedTeacher(cfg, out / "cache.sqlite") as teacher:
        asked = teacher.ask([Prompt(messages, schema)], parse=my_parse, on_answer=bar_update)
        for answer in asked.answers: ...   # answer.response, answer.value = my_parse(response)

`ask` builds each prompt's cache key (messages, schema, model, the parameters that change an
answer), answers from the cache what it holds, sends the misses to the backend (which bounds
concurrency: `concurrency` requests in flight for openai, `batch_size` rows for local and vllm),
stores every answer the moment it arrives, and on Ctrl-C stops sending and returns what came
back (`interrupted`), so that a rerun sends only what is missing. Failed requests are not
cached: a rerun sends them again. Tests script a teacher in one place: `ask.make_teacher`, which imports each backend lazily so that a
missing optional dependency (vLLM) only matters when it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.teacher.backends import Request, Response, request_key, sampling_params
from common.teacher.cache import Cache
from common.teacher.config import TeacherConfig


def make_teacher(cfg: TeacherConfig):
    """The backend object for `cfg.backend` (local, openai or vllm)."""
    if cfg.backend == "local":
        from common.teacher.backend_local import LocalTeacher

        return LocalTeacher(cfg)
    if cfg.backend == "openai":
        from common.teacher.backend_openai import OpenAITeacher

        return OpenAITeacher(cfg)
    from common.teacher.backend_vllm import VLLMTeacher

    return VLLMTeacher(cfg)


@dataclass(frozen=True)
class Prompt:
    """What to ask: the conversation, the JSON Schema of the reply (None: free text), and the
    most tokens the reply may take (None: the teacher config's max_new_tokens)."""

    messages: list[dict]
    schema: dict | None = None
    max_new_tokens: int | None = None
    tag: Any = field(default=None, compare=False)  # the caller's bookkeeping (e.g. the chunk); not part of the key


@dataclass
class Answer:
    prompt: Prompt
    key: str
    response: Response | None = None  # None: not answered (the run was interrupted first)
    cached: bool = False
    value: Any = None  # parse(response) where a parser was given and the request did not fail


@dataclass
class Asked:
    answers: list[Answer]
    cache_hits: int = 0
    sent: int = 0
    interrupted: bool = False


class CachedTeacher:
    """A teacher config bound to a request cache; the backend is started at the first cache miss."""

    def __init__(self, cfg: TeacherConfig, cache: str | Path, shard: str | None = None):
        """`shard`: this worker's name, when several ask at once (cache.py: answers are read from the
        run's cache and every shard, and written to this worker's own shard)."""
        self.cfg = cfg
        self.cache = Cache(cache, shard)
        self.backend = None
        self.seen: dict[str, dict[str, str]] = {}  # report -> {base URL -> value}, of the backends stopped so far

    def __enter__(self) -> "CachedTeacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def key(self, prompt: Prompt) -> str:
        return prompt_key(self.cfg, prompt)

    def ask(self, prompts: list[Prompt], parse: Callable[[Response], Any] | None = None, on_answer: Callable[[Answer], None] | None = None) -> Asked:
        """One Answer per prompt, in order; a Ctrl-C while sending ends the call with `interrupted`."""
        answers = [Answer(prompt, self.key(prompt)) for prompt in prompts]
        found = self.cache.get_many([a.key for a in answers])
        waiting: dict[str, list[Answer]] = {}
        for answer in answers:
            if answer.key in found:
                settle(answer, found[answer.key], True, parse, on_answer)
            else:
                waiting.setdefault(answer.key, []).append(answer)
        asked = Asked(answers, cache_hits=len(answers) - sum(map(len, waiting.values())))
        if not waiting:
            return asked
        requests = [Request(key, same[0].prompt.messages, same[0].prompt.schema, same[0].prompt.max_new_tokens or self.cfg.max_new_tokens) for key, same in waiting.items()]
        try:
            self.backend = self.backend or make_teacher(self.cfg)
            for response in self.backend.generate(requests):
                self.cache.put(response)
                asked.sent += 1
                for answer in waiting.pop(response.key, []):
                    settle(answer, response, False, parse, on_answer)
        except KeyboardInterrupt:
            asked.interrupted = True
            self.stop()
            return asked
        for key, same in waiting.items():  # a backend that dropped a request without a Response
            for answer in same:
                settle(answer, Response(key, error="no response"), False, parse, on_answer)
        return asked

    @property
    def structured_output(self) -> dict[str, str]:
        """Where the backend reports it (openai), the dialect each server was asked in at the end (base URL -> dialect)."""
        return self.reported("structured_output")

    @property
    def schema_rendering(self) -> dict[str, str]:
        """Where the backend reports it (openai), the rendering of the schema each server was sent at the end
        (base URL -> full, gbnf or none)."""
        return self.reported("schema_rendering")

    def reported(self, name: str) -> dict[str, str]:
        return {**self.seen.get(name, {}), **getattr(self.backend, name, {})}

    def stop(self) -> None:
        """Stop the backend (freeing its model or connections); the next miss starts it again."""
        if self.backend is not None:
            self.seen = {name: self.reported(name) for name in ("structured_output", "schema_rendering")}
            self.backend.close()
            self.backend = None

    def close(self) -> None:
        self.stop()
        self.cache.close()


def prompt_key(cfg: TeacherConfig, prompt: Prompt) -> str:
    """The cache key of a prompt asked of this teacher (model and the parameters that change an answer)."""
    return request_key(prompt.messages, prompt.schema, cfg.model, sampling_params(cfg, prompt.max_new_tokens))


def settle(answer: Answer, response: Response, cached: bool, parse, on_answer) -> None:
    answer.response, answer.cached = response, cached
    if parse is not None and response.error is None:
        answer.value = parse(response)
    if on_answer is not None:
        on_answer(answer)
