"""The `openai` teacher: any OpenAI-compatible chat-completions server, through the official async client.

vLLM `serve`, SGLang, llama.cpp server, Ollama, LM Studio and hosted APIs all speak this protocol.
`generate()` is a plain iterator: an asyncio loop in a background thread runs `concurrency`
workers, each sending its next request to the base URL with the fewest in flight (a faster server
simply takes more requests), and every answer is handed back the moment it arrives.

Faults: retries are tenacity's (the client's own are off, so that the backoff is ours to set):
exponential backoff with jitter on the server's faults (`wire.transient`), a server's Retry-After
honoured. A request that still fails becomes `Response(error=...)`, never an exception: the cache
does not keep it, so the next run sends it again. An unreachable server or a rejected key stops
the run before any request is sent; a server that stops answering mid-run is marked down and sent
nothing more (`endpoint.py`): its requests go to the other servers, or fail at once with one reason.

Structured output: each endpoint is asked in the first dialect of `dialects.DIALECTS` it has not
refused (json_schema, json_object with a schema, json_object, the prompt alone), remembered for
the run and reported in `structured_output`; the schema goes in the rendering its engine digests
(`dialects.rendering`: gbnf for llama.cpp's servers), reported in `schema_rendering`; validation
checks every answer against the full schema either way. A server that drops the connection before
its first answer to a schema-constrained request is not sent that request again (`endpoint.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import deque
from email.utils import parsedate_to_datetime
from typing import Iterator

import openai
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from common.errors import UserError
from common.teacher.backends import Request, Response
from common.teacher.config import TeacherConfig
from common.teacher.dialects import (
    DIALECTS,
    GBNF_ENGINES,
    PROMPT_ONLY,
    WITH_SCHEMA,
    cut_short,
    refuses,
    render,
    response_format,
)
from common.teacher.endpoint import Endpoint, pick, public_url
from common.teacher.wire import CutShort, Deadline, NotACompletion, describe, http, http_client, to_response, transient

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
        self.backoff = wait_exponential_jitter(multiplier=cfg.backoff_s, max=cfg.backoff_max_s, jitter=cfg.backoff_s)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="distill-openai", daemon=True)
        self.thread.start()
        self.urls = cfg.base_url or [None]  # None: the client's default (OPENAI_BASE_URL or api.openai.com)
        self.endpoints: list[Endpoint] = []
        try:
            self._call(self._connect())
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

    @property
    def structured_output(self) -> dict[str, str]:
        """The dialect each endpoint is asked in now (base URL without credentials -> dialect)."""
        return {e.url: e.dialect_name for e in self.endpoints}

    @property
    def schema_rendering(self) -> dict[str, str]:
        """The rendering of the schema each endpoint is sent now (base URL -> full, gbnf or none)."""
        return {e.url: e.rendering for e in self.endpoints}

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

    async def _connect(self) -> None:
        first = 0 if self.cfg.structured else PROMPT_ONLY
        for url in self.urls:
            client = openai.AsyncOpenAI(base_url=url, api_key=self.key, timeout=self.cfg.timeout_s, max_retries=0, http_client=http_client())
            shown = public_url(url or str(client.base_url))
            endpoint = Endpoint(shown, client, dialect=first, retry_down_s=self.cfg.retry_down_s,
                                schema_rendering=self.cfg.schema_rendering)
            self.endpoints.append(endpoint)
        for endpoint in self.endpoints:
            await self._probe(endpoint)

    async def _disconnect(self) -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:  # requests of an interrupted run
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for endpoint in self.endpoints:
            await endpoint.client.close()

    async def _probe(self, endpoint: Endpoint) -> None:
        """Fail fast: the server answers and takes the key (GET /models, no retries); one that takes
        the connection but does not answer within PROBE_TIMEOUT_S is busy, and asked all the same."""
        quick = endpoint.client.with_options(max_retries=0, timeout=min(self.cfg.timeout_s, PROBE_TIMEOUT_S))
        try:
            page = await quick.models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise UserError(
                f"the teacher at {endpoint.url} rejected the API key from ${self.cfg.api_key_env} (HTTP {exc.status_code}); "
                "put a valid key in that variable or name another with --api-key-env"
            ) from None
        except openai.APIConnectionError as exc:
            if isinstance(exc.__cause__, http.ReadTimeout):  # connected, but busy: llama-cpp-python answers GET
                LOG.info("the teacher at %s is busy (no model list in %.0f s)", endpoint.url, PROBE_TIMEOUT_S)
                return  # /models only between two generations, and a killed run's requests still run there
            raise UserError(f"cannot reach the teacher at {endpoint.url}; start the server or fix --base-url") from None
        except openai.OpenAIError:
            return  # the server is up but lists no models: that is enough
        listed = getattr(page, "data", None) or []
        endpoint.gbnf_engine = any(getattr(m, "owned_by", None) in GBNF_ENGINES for m in listed)
        served = [m.id for m in listed if getattr(m, "id", None)]
        if served and self.model not in served:
            LOG.warning("model %r is not among those served at %s (%s); requests may fail", self.model, endpoint.url, ", ".join(served[:5]))

    async def _serve(self, requests: list[Request], put) -> None:
        try:
            todo = deque(requests)
            await asyncio.gather(*(self._worker(todo, put) for _ in range(min(self.cfg.concurrency, len(todo)))))
            if todo:
                reason = "; ".join(e.not_sent() for e in self.endpoints)
                for request in todo:
                    put(Response(request.key, error=self._scrub(f"not sent: {reason}")))
        finally:
            put(DONE)

    async def _worker(self, todo: deque, put) -> None:
        """Send requests, each to the endpoint with the fewest in flight, until none is left or all are down."""
        while todo and (endpoint := pick(self.endpoints)) is not None:
            request = todo.popleft()
            endpoint.in_flight += 1
            try:
                response = await self._answer(endpoint, request)
            finally:
                endpoint.in_flight -= 1
            if response.error is not None and endpoint.down is not None and any(e.down is None for e in self.endpoints):
                todo.append(request)  # its server is down: another one takes it
                continue
            put(response)

    async def _answer(self, endpoint: Endpoint, request: Request) -> Response:
        attempts = self.cfg.max_retries + 1
        retrying = AsyncRetrying(
            stop=lambda state: state.attempt_number >= attempts or endpoint.down is not None,
            wait=self._wait,
            retry=retry_if_exception(lambda exc: transient(exc) and not endpoint.schema_killed(exc)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._ask(endpoint, request)
        except Exception as exc:  # noqa: BLE001 - one failed request is recorded, never fatal to the run
            was_up = endpoint.down is None
            endpoint.failed(exc, self.cfg.timeout_s, self.cfg.api_key_env)
            others = [e for e in self.endpoints if e.down is None]
            if was_up and endpoint.down is not None and others:  # said once; when none is left, the run's summary says it
                LOG.warning("%s; its requests go to the %d other server(s)", self._scrub(endpoint.not_sent()), len(others))
            return Response(request.key, error=self._scrub(describe(exc, self.cfg.timeout_s)))
        endpoint.succeeded()
        return response

    async def _ask(self, endpoint: Endpoint, request: Request) -> Response:
        """One attempt, in the endpoint's dialect; a refused dialect moves it to the next one at once."""
        kwargs = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_new_tokens,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
        }
        if self.cfg.seed is not None:
            kwargs["seed"] = self.cfg.seed
        while True:
            dialect = endpoint.dialect
            schema = render(request.schema, endpoint.rendering) if request.schema is not None else None
            wanted = response_format(schema, DIALECTS[dialect]) if schema is not None else None
            endpoint.constrained |= wanted is not None and DIALECTS[dialect] in WITH_SCHEMA
            # response_format rides in extra_body: the same JSON on the wire, without the client's
            # type-directed walk over the schema (a quarter of its CPU per request, measured)
            extra = {**self.cfg.extra_body, "response_format": wanted} if wanted else self.cfg.extra_body
            try:
                completion = await self._create(endpoint, kwargs | ({"extra_body": extra} if extra else {}))
            except openai.APIStatusError as exc:
                if wanted is None or not refuses(exc):
                    raise
                endpoint.refused(dialect, exc)
                continue
            response = to_response(request.key, completion)
            if wanted is not None and response.finish_reason == "stop" and cut_short(response.text):
                raise CutShort()
            return response

    async def _create(self, endpoint: Endpoint, kwargs: dict):
        """The request within the time limit, all of it (a body trickled byte by byte never trips a read timeout)."""
        try:
            return await asyncio.wait_for(endpoint.client.chat.completions.create(**kwargs), self.cfg.timeout_s)
        except asyncio.TimeoutError:
            raise Deadline(self.cfg.timeout_s) from None
        except ValueError as exc:  # a 200 with a JSON content type and a body that is not JSON
            raise NotACompletion(f"the answer is not JSON: {exc}"[:400]) from None

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
