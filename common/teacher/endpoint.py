"""One teacher server (a base URL) as a run sees it: its client, the structured-output dialect it
accepts, the rendering of the schema it is sent (`dialects.rendering`), and whether it still answers.

An endpoint is `down` for the rest of the run, and is sent nothing more, when:
- a request failed because the connection was refused or reset, after every retry;
- it rejected the key (401/403) after it had taken it;
- it dropped the connection before its first answer while a schema-constrained request was in
  flight: a server whose grammar engine cannot take the schema may have died of it, so that request
  is not retried (a restarted server would die again) and the run says to try --no-structured;
- DOWN_AFTER requests in a row failed on the server's side (5xx, 429, timeouts, broken answers),
  each after every retry, with no answer in between.
The requests left are then sent to the endpoints still up, or, when none is, fail at once with
one reason (`not sent: the teacher at URL stopped answering ...`) instead of each waiting out
its own retries; the cache does not keep failures, so the next run sends them again.

While other endpoints carry the run, one that is down is tried again `retry_down_s` after it went
down, with one request at a time (no retries): an answer brings it back, a failure puts it off
for another `retry_down_s`. Each request goes to the endpoint with the fewest in flight (`pick`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import openai

from common.teacher.dialects import DIALECTS, rendering
from common.teacher.wire import connection_lost, describe, transient

LOG = logging.getLogger(__name__)
DOWN_AFTER = 3


@dataclass
class Endpoint:
    url: str  # for messages and the manifest: no credentials, no query
    client: openai.AsyncOpenAI
    dialect: int = 0  # index into DIALECTS: the first one this server has not refused
    answered: int = 0
    failing: int = 0  # requests in a row that failed on the server's side
    down: str | None = None  # why nothing more is sent here (until retry_at)
    in_flight: int = 0
    retry_at: float = 0.0  # time.monotonic() after which a down endpoint is tried again
    retry_down_s: float = 30.0
    gbnf_engine: bool = False  # the server says it is llama.cpp's (GET /models): it compiles schemas into GBNF
    schema_rendering: str = "auto"  # the teacher config's choice (auto, full, gbnf)
    constrained: bool = False  # a request with a schema was sent here

    @property
    def dialect_name(self) -> str:
        return DIALECTS[self.dialect]

    @property
    def rendering(self) -> str:
        """How the schema is rendered for this server in its dialect now (full, gbnf, none)."""
        return rendering(self.dialect_name, self.gbnf_engine, self.schema_rendering)

    def schema_killed(self, exc: BaseException) -> bool:
        """The connection was lost before any answer to a schema-constrained request: the schema may have killed it."""
        return self.answered == 0 and self.constrained and connection_lost(exc)

    def refused(self, dialect: int, exc: openai.APIStatusError) -> None:
        """The server refused `dialect`: move to the next one (once, however many requests saw the refusal)."""
        if dialect != self.dialect:
            return
        self.dialect += 1
        LOG.warning("the teacher at %s refused response_format %s (HTTP %s); asking it for %s for the rest of this run", self.url, DIALECTS[dialect], exc.status_code, self.dialect_name)

    def usable(self, now: float) -> bool:
        """Up, or down long enough to be tried again (one request at a time)."""
        return self.down is None or (now >= self.retry_at and self.in_flight == 0)

    def succeeded(self) -> None:
        if self.down is not None:
            LOG.warning("the teacher at %s answers again: it takes requests again", self.url)
        self.answered += 1
        self.failing = 0
        self.down = None

    def failed(self, exc: BaseException, timeout_s: float, key_env: str) -> None:
        """Decide, from a request's final error, whether the server is down."""
        if self.down is not None:  # a retry of a down server failed: try it again later
            self.retry_at = time.monotonic() + self.retry_down_s
            return
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            self.down = f"rejected the API key from ${key_env} (HTTP {exc.status_code}) after {self.answered} answers; put a valid key in that variable"
        elif self.schema_killed(exc):
            self.down = (
                f"stopped answering after the first schema-constrained request ({describe(exc, timeout_s)}); "
                "it may not support JSON schemas of this size: try --no-structured (the prompt alone asks for JSON)"
            )
        elif connection_lost(exc):
            self.down = f"stopped answering after {self.answered} answers ({describe(exc, timeout_s)})"
        elif transient(exc):
            self.failing += 1
            if self.failing >= DOWN_AFTER:
                self.down = f"failed {self.failing} requests in a row, each after every retry (last: {describe(exc, timeout_s)})"
        if self.down is not None:  # a server a schema may have killed is never sent one again: it would die twice
            self.retry_at = math.inf if self.schema_killed(exc) else time.monotonic() + self.retry_down_s

    def not_sent(self) -> str:
        return f"the teacher at {self.url} {self.down}"


def pick(endpoints: list[Endpoint]) -> Endpoint | None:
    """The endpoint for the next request: of those up, the one with the fewest requests in flight
    (a down one that is due for a retry first); None when every endpoint is down."""
    now = time.monotonic()
    if all(e.down is not None for e in endpoints):
        return None
    due = [e for e in endpoints if e.down is not None and e.usable(now)]
    return due[0] if due else min((e for e in endpoints if e.down is None), key=lambda e: e.in_flight)


def public_url(url: str) -> str:
    """A base URL fit for logs and the manifest: without user:password@ and without a query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
