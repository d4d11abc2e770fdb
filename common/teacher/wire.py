"""What can come back from an OpenAI-compatible server, and what each answer means to the run.

- An answer is read up to MAX_BODY_BYTES (a larger body is `TooLarge`) and within the request's
  time limit, the whole of it (a body trickled byte by byte ends in `Deadline`).
- A 200 that is not a chat completion (an HTML page, a JSON without choices) is `NotACompletion`;
  JSON content cut mid-string under a JSON dialect with finish_reason "stop" is `CutShort`.
- Server-side faults are retried (`transient`): timeouts, connection errors, 408, 409, 429, 5xx
  and the three above. Client errors (other 4xx) are not.
- `describe` turns any of them into one line for the manifest: an HTML error page becomes its
  title or text, never the markup.
"""

from __future__ import annotations

import importlib
import importlib.util
import re

import openai

from common.teacher.backends import Response, split_reasoning

MAX_BODY_BYTES = 8 * 2**20  # a chat completion is kilobytes; a body this large is a broken server or proxy
# the HTTP library the openai client is built on: httpx2 from openai 3, httpx before
http = importlib.import_module("httpx2" if importlib.util.find_spec("openai._httpx2") else "httpx")
TAG = re.compile(r"<[^>]+>")
TITLE = re.compile(r"<title>(.*?)</title>", re.I | re.S)


class TooLarge(openai.OpenAIError):
    def __init__(self, size: int):
        super().__init__(f"the answer is larger than {MAX_BODY_BYTES // 2**20} MiB ({size} bytes and more)")


class Deadline(openai.OpenAIError):
    def __init__(self, seconds: float):
        super().__init__(f"timed out after {seconds:g} s")


class NotACompletion(openai.OpenAIError):
    """A 200 whose body is not a chat completion."""


class CutShort(openai.OpenAIError):
    def __init__(self):
        super().__init__('the answer\'s JSON was cut short (finish_reason "stop" under a JSON response_format)')


SERVER_FAULTS = (TooLarge, Deadline, NotACompletion, CutShort)


class CappedStream(http.AsyncByteStream):
    def __init__(self, stream, limit: int):
        self.stream, self.limit, self.read = stream, limit, 0

    async def __aiter__(self):
        async for chunk in self.stream:
            self.read += len(chunk)
            if self.read > self.limit:
                raise TooLarge(self.read)
            yield chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


class CappedTransport(http.AsyncHTTPTransport):
    """The default transport, reading at most `limit` bytes of any answer."""

    def __init__(self, limit: int = MAX_BODY_BYTES, **kwargs):
        super().__init__(**kwargs)
        self.limit = limit

    async def handle_async_request(self, request):
        response = await super().handle_async_request(request)
        declared = int(response.headers.get("content-length") or 0)
        if declared > self.limit:
            await response.aclose()
            raise TooLarge(declared)
        response.stream = CappedStream(response.stream, self.limit)
        return response


def http_client(limit: int = MAX_BODY_BYTES):
    """openai's default async HTTP client (its connection limits, redirects), answers capped at `limit` bytes."""
    from openai._constants import DEFAULT_CONNECTION_LIMITS

    return openai.DefaultAsyncHttpxClient(transport=CappedTransport(limit, limits=DEFAULT_CONNECTION_LIMITS))


def transient(exc: BaseException) -> bool:
    """Worth another try: the server's faults (timeouts, connection errors, 408, 409, 429, 5xx, broken answers)."""
    if isinstance(exc, SERVER_FAULTS) or isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def connection_lost(exc: BaseException) -> bool:
    """The server is gone (refused, reset), as opposed to slow (a timeout)."""
    return isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError)


def describe(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {said(exc.body) or said(exc.message)}"[:400]
    if isinstance(exc, openai.APIConnectionError):
        return f"connection error: {exc.__cause__ or exc}"[:400]
    if isinstance(exc, openai.OpenAIError):
        return str(exc)[:400]
    return f"{type(exc).__name__}: {exc}"[:400]


def said(body) -> str:
    """What an error body says, in one short line: its message, or the title or text of an HTML page."""
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    text = body if isinstance(body, str) else str(body or "")
    if "<html" in text.lower() or "<!doctype" in text.lower():
        title = TITLE.search(text)
        text = f"an HTML page: {title.group(1) if title else TAG.sub(' ', text)}"
    return " ".join(text.split())[:300]


def to_response(key: str, completion) -> Response:
    """The Response of a chat completion; NotACompletion when the 200's body is something else."""
    choices = getattr(completion, "choices", None)
    message = getattr(choices[0], "message", None) if choices else None
    if message is None:
        shown = said(completion) if isinstance(completion, str) else said(repr(completion))
        raise NotACompletion(f"the answer is not a chat completion: {shown or 'an empty body'}"[:400])
    choice = choices[0]
    field = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
    text, trace = split_reasoning(message.content, field if isinstance(field, str) else None)
    usage = getattr(completion, "usage", None)
    return Response(
        key=key,
        text=text,
        reasoning=trace,
        finish_reason=choice.finish_reason or "stop",
        prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
        completion_tokens=(usage.completion_tokens or 0) if usage else 0,
    )
