"""A real OpenAI chat-completions server on 127.0.0.1 (aiohttp in a background thread), scripted per test.

    with FakeOpenAI(script) as server:      # script(call) -> Reply
        ... base_url=server.url ...
    server.answered                          # prompt -> good answers sent (status 200, a chat completion, not a fault)
    server.replies                           # (time.monotonic(), prompt, status) of every reply, in order

A prompt is identified by the first user message (the chunk prompt), so a repair of the same
chunk counts as a second call of that prompt. The default script writes valid, grounded JSON
(evidence copied from the passage), or a judge verdict for judge requests.

`dialect` makes the server answer `response_format` as a real server does (`DIALECTS`: which
server each mimics, and where its answers are documented), grammar engine included where one
dies of a schema it cannot compile (`KILLED`: the server drops that connection and every later
one); `owned_by` is what GET /models says owns each model; `port` starts it on a given port
(a server "restarted" after `__exit__`). A `Reply` can also be a fault on the wire: a raw body
(an HTML page, 20 MB), another content type, a body trickled byte by byte.
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

PASSAGE = re.compile(r'^("{3,})\n(.*?)\n\1$', re.S | re.M)  # the block between two fence lines (generate.tasks.fence)
FACTS = re.compile(r"pick (\d+) different")
PHRASINGS = re.compile(r"write (\d+) question")
EVIDENCE = re.compile(r'^\d+\. .* Evidence: "(.*)"$', re.M)  # the facts an item request names (generate.facts.facts_note)


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
    raw: bytes | None = None  # sent as the body instead of the completion or error JSON
    content_type: str = "application/json"
    trickle_s: float = 0.0  # seconds between the bytes of the body (0: all at once)
    chunked: bool = False  # no Content-Length: the client learns the size by reading
    fault: bool = False  # a broken answer (the test's fault): not counted in `answered`
    drop: bool = False  # close the connection without answering (a server process that died)


def first_user(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def good_output(body: dict) -> dict:
    """What a good teacher writes for a chunk prompt: n facts, each quoting one sentence, asked in
    k phrasings ("questions") or one ("question"), as the prompt asks; facts first, the listing
    names every sentence (no heading) a fact, and an item request quotes the evidence it names."""
    text = first_user(body)
    passage = PASSAGE.search(text).group(2)
    if text.startswith("List every fact"):
        listed = [q for q in quotable_sentences(passage) if not q.startswith("#")][:24]
        return {"facts": [{"evidence": q, "fact": f"The passage states: {q}"[:160]} for q in listed]}
    n = int(FACTS.search(text).group(1)) if FACTS.search(text) else 2
    k = int(PHRASINGS.search(text).group(1)) if PHRASINGS.search(text) else 1
    quotes = EVIDENCE.findall(text[PASSAGE.search(text).end() :]) or quotable_sentences(passage) or [passage.strip()]
    items = []
    for i in range(n):
        quote = quotes[i % len(quotes)]
        asked = [f"{opening} {quote.rstrip('.')[:90]}?" for opening in ("Which statement says that", "What does the text state about", "Where is it said that")[:k]]
        fact = {"evidence": quote, "reasoning": "Step 1: the passage states this word for word. Step 2: so it is the answer.", "answer": quote}
        items.append({"questions": asked, **fact} if k > 1 else {"question": asked[0], **fact})
    return {"items": items}


def good_json(call: Call, score: int = 4) -> str:
    if call.judge:
        return json.dumps({"why": "Supported by the passage.", "injection": False, "faithfulness": score, "usefulness": score})
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


# ---------------------------------------------------------------- structured-output dialects
# How real servers answer a response_format they do not take (the request is refused before the
# script runs). Each returns None (taken) or (status, body, content type).

KILLED = "killed"  # a dialect's verdict: the schema took the server down
AXUM = "Failed to deserialize the JSON body into the target type: response_format: {} at line 1 column 2961"


def takes_everything(fmt: dict) -> None:
    """OpenAI, SGLang, vLLM and llama.cpp server since their json_schema support (llama.cpp:
    ggml-org/llama.cpp#9527, Sept 2024)."""
    return None


def lm_studio(fmt: dict):
    """LM Studio 0.3: json_schema only; json_object is a 400 with a bare string as the error
    (lmstudio-ai/lmstudio-bug-tracker#169 and #189)."""
    if fmt["type"] == "json_object":
        return 400, {"error": "'response_format.type' must be 'json_schema' or 'text'"}, "application/json"
    return None


def llama_cpp_2024(fmt: dict):
    """llama.cpp server before json_schema support: an unknown type throws std::runtime_error, which
    the server answers with HTTP 500; json_object takes an optional `schema` (ggml-org/llama.cpp#9522,
    and oaicompat_completion_params_parse in examples/server/utils.hpp of that time)."""
    if fmt["type"] not in ("text", "json_object"):
        message = f'response_format type must be one of "text" or "json_object", but got: {fmt["type"]}'
        return 500, {"error": {"code": 500, "message": message, "type": "server_error"}}, "application/json"
    return None


def vllm_2024(fmt: dict):
    """vLLM before its json_schema support (asked for in vllm-project/vllm#7656, Aug 2024): `type`
    was a pydantic Literal["text", "json_object"], so json_schema is a 400 listing the validation
    error in vLLM's ErrorResponse shape; extra keys such as `schema` are ignored."""
    if fmt["type"] not in ("text", "json_object"):
        error = [{"type": "literal_error", "loc": ["body", "response_format", "type"], "msg": "Input should be 'text' or 'json_object'", "input": fmt["type"]}]
        return 400, {"object": "error", "message": json.dumps(error), "type": "BadRequestError", "param": None, "code": 400}, "application/json"
    return None


def json_mode_only(fmt: dict):
    """A Rust (axum + serde) gateway with a JSON mode only: json_schema is a 422 in plain text
    (the wording seen in karakeep-app/karakeep#1160); a `schema` inside json_object is refused as
    serde's deny_unknown_fields words it (assumed, not observed)."""
    if fmt["type"] == "json_schema":
        return 422, AXUM.format("response_format.type `json_schema` is unavailable now"), "text/plain"
    if set(fmt) - {"type"}:
        return 422, AXUM.format("unknown field `schema`, expected `type`"), "text/plain"
    return None


def tgi(fmt: dict):
    """text-generation-inference without huggingface/text-generation-inference#3276: its own
    {"type": "json", "value": schema} only; json_schema is an unknown variant and json_object
    lacks `value`, both 422 in plain text (huggingface/text-generation-inference#2899)."""
    if fmt["type"] == "json_schema":
        return 422, AXUM.format("unknown variant `json_schema`, expected `json` or `regex`"), "text/plain"
    if "value" not in fmt:
        return 422, AXUM.format("missing field `value`"), "text/plain"
    return None


def gbnf_fatal(schema) -> bool:
    """Whether llama-cpp-python 0.3.36's grammar engine fails on `schema`: its converter
    (llama_cpp.llama_grammar.json_schema_to_gbnf) turns a `pattern` with an escape such as `\\s` (the
    built-in question's), and an enum string holding a double quote, into a grammar llama.cpp's
    parser rejects ("failed to parse grammar"; measured with tests/grammar_probe.py, 2026-12-04;
    maxLength spans up to 600 parse)."""
    if isinstance(schema, list):
        return any(gbnf_fatal(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    quoted = any(isinstance(v, str) and '"' in v for v in schema.get("enum", []))
    inner = (value for key, value in schema.items() if key not in ("enum", "const"))
    escaped = re.search(r"\\[A-Za-z.]", str(schema.get("pattern", "")))  # measured: \\s \\d \\w \\. fail, \\? parses
    return bool(escaped) or quoted or any(gbnf_fatal(value) for value in inner)


def llama_cpp_python(fmt: dict):
    """llama-cpp-python[server] 0.3.36 (issue 27): json_schema is refused as llama.cpp-2024 refuses it (HTTP 500);
    json_object takes a `schema`, compiled into a GBNF grammar; a grammar llama.cpp cannot parse
    takes the server process down (`KILLED`)."""
    refusal = llama_cpp_2024(fmt)
    if refusal is None and gbnf_fatal(fmt.get("schema")):
        return KILLED
    return refusal


DIALECTS = {
    "json_schema": takes_everything,
    "llama.cpp": takes_everything,  # llama.cpp's own server today: json_schema; GET /models: owned_by "llamacpp"
    "llama-cpp-python": llama_cpp_python,
    "lm-studio": lm_studio,
    "llama.cpp-2024": llama_cpp_2024,
    "vllm-2024": vllm_2024,
    "json-mode-only": json_mode_only,
    "tgi": tgi,
}


class FakeOpenAI:
    def __init__(
        self,
        script=default_script,
        api_key: str | None = None,
        models: tuple[str, ...] = ("teacher",),
        dialect: str = "json_schema",
        port: int = 0,
        owned_by: str | None = None,
    ):
        self.script, self.api_key, self.models = script, api_key, models
        self.refuse, self.port = DIALECTS[dialect], port
        self.owned_by = owned_by or {"llama.cpp": "llamacpp", "llama-cpp-python": "me"}.get(dialect, "test")
        self.dead = False  # a schema killed it: every connection is dropped from then on
        self.models_wait_s = 0.0  # GET /models waits this long (llama-cpp-python's, while it generates)
        self.dropped = 0  # connections dropped
        self.calls: Counter = Counter()  # prompt -> requests received (refused response_formats not included)
        self.answered: Counter = Counter()  # prompt -> good answers sent
        self.refused: list[dict] = []  # response_formats refused
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
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
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
        await asyncio.sleep(self.models_wait_s)
        if self.dead:
            return self._drop(request)
        denied = self._unauthorized(request)
        listed = [{"id": m, "object": "model", "owned_by": self.owned_by} for m in self.models]
        return denied or web.json_response({"object": "list", "data": listed})

    def _drop(self, request: web.Request) -> web.Response:
        """Close the connection without a word, as a process that died does."""
        self.dropped += 1
        request.transport.close()
        return web.Response(status=500)  # never reaches the client: its connection is gone

    async def _chat(self, request: web.Request) -> web.Response:
        denied = self._unauthorized(request)
        if denied:
            return denied
        body = await request.json()
        refusal = self.refuse(body["response_format"]) if "response_format" in body and not self.dead else None
        self.dead = self.dead or refusal == KILLED
        if self.dead:
            return self._drop(request)
        if refusal is not None:
            self.refused.append(body["response_format"])
            status, answer, kind = refusal
            text = answer if isinstance(answer, str) else json.dumps(answer)
            return web.Response(text=text, status=status, content_type=kind)
        self.bodies.append(body)
        self.times.append(time.monotonic())
        prompt = hashlib.sha256(first_user(body).encode()).hexdigest()[:16]
        self.calls[prompt] += 1
        repair = any(m["role"] == "assistant" for m in body["messages"])
        judge = "reviewer" in body["messages"][0]["content"]
        reply = self.script(Call(body, prompt, self.calls[prompt], repair, judge))
        if reply.drop:
            return self._drop(request)
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
            payload = {"error": {"message": reply.error, "type": "server_error", "param": None, "code": None}}
        else:
            payload = completion(body, reply)
        data = reply.raw if reply.raw is not None else json.dumps(payload).encode()
        headers = {**reply.headers, "Content-Type": reply.content_type}
        response = await self._stream(request, reply, data) if reply.trickle_s or reply.chunked else web.Response(body=data, status=reply.status, headers=headers)
        if reply.status == 200 and reply.raw is None and not reply.fault:
            self.answered[prompt] += 1
        return response

    async def _stream(self, request: web.Request, reply: Reply, data: bytes) -> web.StreamResponse:
        """The body in pieces: byte by byte every `trickle_s` seconds, or in 1 MiB chunks without a length."""
        response = web.StreamResponse(status=reply.status, headers={**reply.headers, "Content-Type": reply.content_type})
        if reply.trickle_s:
            response.content_length = len(data)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        step = 1 if reply.trickle_s else 2**20
        for start in range(0, len(data), step):
            await response.write(data[start : start + step])
            if reply.trickle_s:
                await asyncio.sleep(reply.trickle_s)
        await response.write_eof()
        return response


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
