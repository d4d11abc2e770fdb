"""The `openai` teacher: any OpenAI-compatible chat-completions server, through the official async client.

vLLM `serve`, SGLang, llama.cpp server, Ollama and hosted APIs all speak this protocol.
`generate()` is a plain iterator: an asyncio loop in a background thread runs `concurrency`
workers spread over the base URLs (a faster server simply takes more requests), and every
answer is handed back the moment it arrives.

Faults: retries are tenacity's (the client's own are off, so that the backoff is ours to set):
exponential backoff with jitter on 408, 409, 429, 5xx, timeouts and connection errors, a
server's Retry-After honoured. A request that still fails becomes `Response(error=...)`, never
an exception: the cache does not keep it, so the next run sends it again. An unreachable
server or a rejected key stops the run before any request is sent.

Structured output: `response_format` of type json_schema with the request's schema. A server
that rejects it (400/422 naming response_format or json_schema) is asked, for the rest of the
run, for JSON by the prompt alone; validation checks every answer either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Iterator

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from common.errors import UserError
from common.teacher.backends import Request, Response, split_reasoning
from common.teacher.config import TeacherConfig

LOG = logging.getLogger(__name__)
RETRY_AFTER_MAX_S = 120.0
PROBE_TIMEOUT_S = 10.0
NO_KEY = "EMPTY"  # local servers take any key
DONE = object()


class OpenAITeacher:
    name = "openai"

    def __init__(self, cfg: TeacherConfig):
        self.cfg, self.model = cfg, cfg.model
        self.key = api_key(cfg)
        self.structured = cfg.structured  # turned off, for the run, by a server that rejects response_format
        self.backoff = wait_exponential_jitter(multiplier=cfg.backoff_s, max=cfg.backoff_max_s, jitter=cfg.backoff_s)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="distill-openai", daemon=True)
        self.thread.start()
        self.urls = cfg.base_url or [None]  # None: the client's default (OPENAI_BASE_URL or api.openai.com)
        try:
            self.clients = self._call(self._connect())
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ public

    def generate(self, requests: list[Request]) -> Iterator[Response]:
        if not requests:
            return
        results: queue.SimpleQueue = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(self._serve(requests, results.put), self.loop)
        try:
            while (response := results.get()) is not DONE:
                yield response
            future.result()
        finally:
            future.cancel()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        if self.thread.is_alive():
            try:
                self._call(self._disconnect(), timeout=5)
            except Exception:  # noqa: BLE001 - closing sockets of a dead run is best effort
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()

    # ------------------------------------------------------------ the loop thread

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self) -> list[openai.AsyncOpenAI]:
        clients = [openai.AsyncOpenAI(base_url=url, api_key=self.key, timeout=self.cfg.timeout_s, max_retries=0) for url in self.urls]
        self.clients = clients
        for url, client in zip(self.urls, clients):
            await self._probe(url, client)
        return clients

    async def _disconnect(self) -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:  # requests of an interrupted run
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for client in getattr(self, "clients", []):
            await client.close()

    async def _probe(self, url: str | None, client: openai.AsyncOpenAI) -> None:
        """Fail fast: the server answers and takes the key (GET /models, no retries)."""
        where = url or str(client.base_url)
        quick = client.with_options(max_retries=0, timeout=min(self.cfg.timeout_s, PROBE_TIMEOUT_S))
        try:
            page = await quick.models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise UserError(
                f"the teacher at {where} rejected the API key from ${self.cfg.api_key_env} (HTTP {exc.status_code}); "
                "put a valid key in that variable or name another with --api-key-env"
            ) from None
        except openai.APIConnectionError:
            raise UserError(f"cannot reach the teacher at {where}; start the server or fix --base-url") from None
        except openai.APIStatusError:
            return  # the server is up but lists no models: that is enough
        served = [m.id for m in page.data]
        if served and self.model not in served:
            LOG.warning("model %r is not among those served at %s (%s); requests may fail", self.model, where, ", ".join(served[:5]))

    async def _serve(self, requests: list[Request], put) -> None:
        try:
            pending = iter(requests)

            async def worker(client: openai.AsyncOpenAI) -> None:
                for request in pending:
                    put(await self._answer(client, request))

            count = min(self.cfg.concurrency, len(requests))
            await asyncio.gather(*(worker(self.clients[i % len(self.clients)]) for i in range(count)))
        finally:
            put(DONE)

    async def _answer(self, client: openai.AsyncOpenAI, request: Request) -> Response:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.cfg.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    completion = await self._create(client, request)
            return to_response(request.key, completion)
        except Exception as exc:  # noqa: BLE001 - one failed request is recorded, never fatal to the run
            return Response(request.key, error=self._scrub(describe(exc, self.cfg.timeout_s)))

    async def _create(self, client: openai.AsyncOpenAI, request: Request):
        kwargs = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_new_tokens,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
        }
        if self.cfg.seed is not None:
            kwargs["seed"] = self.cfg.seed
        if self.cfg.extra_body:
            kwargs["extra_body"] = self.cfg.extra_body
        if self.structured and request.schema is not None:
            # response_format rides in extra_body: the same JSON on the wire, without the client's
            # type-directed walk over the schema (a quarter of its CPU per request, measured)
            body = {**self.cfg.extra_body, "response_format": response_format(request.schema)}
            try:
                return await client.chat.completions.create(**kwargs | {"extra_body": body})
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if not rejects_response_format(exc):
                    raise
                self._fall_back(exc)
        return await client.chat.completions.create(**kwargs)

    def _fall_back(self, exc: openai.APIStatusError) -> None:
        if self.structured:
            self.structured = False
            LOG.warning("the teacher rejected response_format (HTTP %s); asking for JSON by the prompt alone for the rest of this run", exc.status_code)

    def _wait(self, state) -> float:
        after = retry_after(state.outcome.exception())
        return after if after is not None else self.backoff(state)

    def _scrub(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key != NO_KEY else text


# ---------------------------------------------------------------- helpers


def api_key(cfg: TeacherConfig) -> str:
    """The key from the environment variable named by the config; local servers need none."""
    key = os.environ.get(cfg.api_key_env, "").strip()
    if key:
        return key
    if cfg.base_url:
        return NO_KEY
    raise UserError(
        f"no API key: ${cfg.api_key_env} is not set; export it, name another variable with --api-key-env, "
        "or pass --base-url of a local server"
    )


def response_format(schema: dict) -> dict:
    body = {k: v for k, v in schema.items() if k not in ("$schema", "$id")}
    return {"type": "json_schema", "json_schema": {"name": "items", "schema": body, "strict": False}}


def rejects_response_format(exc: openai.APIStatusError) -> bool:
    text = f"{exc.message} {exc.body}".lower()
    return "response_format" in text or "json_schema" in text


def transient(exc: BaseException) -> bool:
    """Worth another try: timeouts, connection errors, 408, 409, 429 and 5xx."""
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (Retry-After: seconds or HTTP date; retry-after-ms), capped."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms"):
            seconds = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after"):
            raw = headers["retry-after"]
            seconds = float(raw) if raw.strip().replace(".", "", 1).isdigit() else parsedate_to_datetime(raw).timestamp() - time.time()
        else:
            return None
    except (TypeError, ValueError):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, openai.APIStatusError):
        said = exc.body.get("message") if isinstance(exc.body, dict) else None
        return f"HTTP {exc.status_code}: {said or exc.message}"[:400]
    if isinstance(exc, openai.APIConnectionError):
        return f"connection error: {exc.__cause__ or exc}"[:400]
    return f"{type(exc).__name__}: {exc}"[:400]


def to_response(key: str, completion) -> Response:
    choice = completion.choices[0]
    message = choice.message
    field = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
    text, trace = split_reasoning(message.content, field if isinstance(field, str) else None)
    usage = completion.usage
    return Response(
        key=key,
        text=text,
        reasoning=trace,
        finish_reason=choice.finish_reason or "stop",
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )
