"""A real OpenAI chat-completions server on 127.0.0.1 (aiohttp in a background thread), scripted per test.

    with FakeOpenAI(script) as server:      # script(call) -> Reply
        ... base_url=server.url ...
    server.answered                          # prompt -> replies with status 200
    server.replies                           # (time.monotonic(), prompt, status) of every reply, in order

A prompt is identified by the first user message (the chunk prompt), so a repair of the same
chunk counts as a second call of that prompt. The default script writes valid, grounded JSON
(evidence copied from the passage), or a judge verdict for judge requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from generate.tasks import quotable_sentences

PASSAGE = re.compile(r'"""\n(.*?)\n"""', re.S)
FACTS = re.compile(r"pick (\d+) different")
PHRASINGS = re.compile(r"write (\d+) question")


@dataclass
class Call:
    body: dict
    prompt: str  # hash of the first user message
    attempt: int  # 1 for the first call of this prompt
    repair: bool  # the conversation already holds an answer (a repair request)
    judge: bool  # a judge request (curation)


@dataclass
class Reply:
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    error: str = "scripted error"
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    hold: threading.Event | None = None  # wait for this event, then reply (with `status`)


def first_user(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def good_output(body: dict) -> dict:
    """What a good teacher writes for a chunk prompt: n facts, each quoting one sentence, asked in
    k phrasings ("questions") or one ("question"), as the prompt asks."""
    text = first_user(body)
    passage = PASSAGE.search(text).group(1)
    n = int(FACTS.search(text).group(1)) if FACTS.search(text) else 2
    k = int(PHRASINGS.search(text).group(1)) if PHRASINGS.search(text) else 1
    quotes = quotable_sentences(passage) or [passage.strip()]
    items = []
    for i in range(n):
        quote = quotes[i % len(quotes)]
        asked = [f"{opening} {quote.rstrip('.')[:90]}?" for opening in ("Which statement says that", "What does the text state about", "Where is it said that")[:k]]
        fact = {"evidence": quote, "reasoning": "Step 1: the passage states this word for word. Step 2: so it is the answer.", "answer": quote}
        items.append({"questions": asked, **fact} if k > 1 else {"question": asked[0], **fact})
    return {"items": items}


def good_json(call: Call, score: int = 4) -> str:
    if call.judge:
        return json.dumps({"why": "Supported by the passage.", "faithfulness": score, "usefulness": score})
    return json.dumps(good_output(call.body))


def make_docs(folder, docs: int = 3, paragraphs: int = 4, seed: int = 0) -> None:
    """Markdown documents of made-up words: every sentence differs, so every question does too."""
    import random

    rng = random.Random(seed)
    vocab = ["".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))) for _ in range(2000)]
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        text = [f"# Topic {d}"]
        for _ in range(paragraphs):
            sentences = [" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 14))).capitalize() + "." for _ in range(4)]
            text.append(" ".join(sentences))
        (folder / f"doc{d}.md").write_text("\n\n".join(text) + "\n")


def default_script(call: Call) -> Reply:
    return Reply(good_json(call))


class FakeOpenAI:
    def __init__(self, script=default_script, api_key: str | None = None, models: tuple[str, ...] = ("teacher",)):
        self.script, self.api_key, self.models = script, api_key, models
        self.calls: Counter = Counter()  # prompt -> requests received
        self.answered: Counter = Counter()  # prompt -> 200 replies sent
        self.bodies: list[dict] = []
        self.replies: list[tuple[float, str, int]] = []  # (monotonic time, prompt, status) of every reply sent
        self.times: list[float] = []
        self.inflight = self.peak = 0  # requests being handled now / at most at once

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "FakeOpenAI":
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        started.set()
        self.loop.run_forever()

    # ------------------------------------------------------------ handlers

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        error = {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"}
        return web.json_response({"error": error}, status=401)

    async def _models(self, request: web.Request) -> web.Response:
        denied = self._unauthorized(request)
        return denied or web.json_response({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"} for m in self.models]})

    async def _chat(self, request: web.Request) -> web.Response:
        denied = self._unauthorized(request)
        if denied:
            return denied
        body = await request.json()
        self.bodies.append(body)
        self.times.append(time.monotonic())
        prompt = hashlib.sha256(first_user(body).encode()).hexdigest()[:16]
        self.calls[prompt] += 1
        repair = any(m["role"] == "assistant" for m in body["messages"])
        judge = "reviewer" in body["messages"][0]["content"]
        reply = self.script(Call(body, prompt, self.calls[prompt], repair, judge))
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            while reply.hold is not None and not reply.hold.is_set():
                await asyncio.sleep(0.01)
            if reply.delay:
                await asyncio.sleep(reply.delay)
        finally:
            self.inflight -= 1
        self.replies.append((time.monotonic(), prompt, reply.status))
        if reply.status != 200:
            error = {"message": reply.error, "type": "server_error", "param": None, "code": None}
            return web.json_response({"error": error}, status=reply.status, headers=reply.headers)
        self.answered[prompt] += 1
        return web.json_response(completion(body, reply))


def completion(body: dict, reply: Reply) -> dict:
    message = {"role": "assistant", "content": reply.content}
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    if reply.reasoning is not None:
        message["reasoning"] = reply.reasoning
    words = len((reply.content or "").split())
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "teacher"),
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words},
    }
