"""A scripted, exact teacher: an OpenAI-compatible server on 127.0.0.1 that knows a corpus's facts.json.

    .venv/bin/python bench/exact_teacher.py FOLDER [--port 8000]     # FOLDER holds facts.json

    with ExactTeacher(folder) as teacher:   # in-process: a background thread, a free port
        ... base_url=teacher.url, model="exact" ...
    teacher.counts                           # requests answered, by kind

It answers `POST /v1/chat/completions` (model `exact`, listed by `GET /v1/models`) by the kind
of request, judged from the body alone:
- facts: a json_schema whose properties hold `facts` (the listing of `distill gen`'s facts first):
  every fact the passage states, in passage order, at most maxItems, each as `evidence` (its
  sentence) and `fact` (its summary line, "Mayor of X: Y."), the properties the schema names.
- qa: `response_format` json_schema whose properties hold `items`. The passage is the text
  between two fence lines (three or more `"`) of the first user message; the facts whose evidence (or one of
  its rewrite sentences) occurs in it, whitespace collapsed, are returned in passage order (only
  those whose sentence the evidence `enum` offers, where the schema has one), at
  most maxItems of them, each with only the item properties the schema names (`question`: the
  first phrasing; `questions`: the first K = maxItems phrasings; `evidence`; `reasoning`; `answer`).
- judge: a json_schema with a property faithfulness, usefulness, score or better (or no schema
  and one of them quoted in the prompt): the top value of each property (max of an enum or of
  minimum..maximum, "tie" where allowed). Any other json_schema without a passage too.
- rewrite: a passage and no `Question:` line: the passage's facts restated as a paraphrase,
  Q/A notes or a summary, by the keyword of the instruction (outside the passage) found first:
  "paraphras", "note" or "question", "summar"; none: by a hash of the instruction. Plain text,
  or, under a json_schema, the schema's first string property.
- answer: otherwise: the last `Question:` line of the last user message (or all of it) looked
  up among every phrasing of every fact, case and spacing ignored; the answer alone, or "I don't know.".
The script prints the counts when stopped (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

MODEL = "exact"
PASSAGE = re.compile(r'^[ \t]*("{3,})[ \t]*\n(.*?)\n[ \t]*\1[ \t]*$', re.DOTALL | re.MULTILINE)  # fence: generate.tasks.fence
QUESTION = re.compile(r"^\s*Question:\s*(.+?)\s*$", re.MULTILINE)
FORMS = {"paraphras": "paraphrase", "note": "notes", "question": "notes", "summar": "summary"}
UNKNOWN = "I don't know."
JUDGE_KEYS = {"faithfulness", "usefulness", "score", "better"}


def squash(text: str) -> str:
    return " ".join(text.split())


def key(question: str) -> str:
    return squash(question).casefold()


def text_of(message: dict) -> str:
    content = message.get("content") or ""
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if isinstance(p, dict))


def user_texts(body: dict) -> list[str]:
    return [text_of(m) for m in body.get("messages", []) if m.get("role") == "user"] or [""]


# ---------------------------------------------------------------- the facts


class Facts:
    """facts.json, indexed: every phrasing -> answer, and every sentence that states a fact."""

    def __init__(self, folder):
        data = json.loads((Path(folder) / "facts.json").read_text())
        self.facts = data["facts"]
        self.answers = {key(q): f["answer"] for f in self.facts for q in f["questions"]}
        self.sentences = [(squash(s), f) for f in self.facts for s in [f["evidence"], *f["rewrites"].values()]]

    def in_passage(self, passage: str) -> list[tuple[str, dict]]:
        """(sentence, fact) for each fact the passage states, in passage order (a fact once)."""
        text, found, seen = squash(passage), [], set()
        for sentence, fact in self.sentences:
            at = text.find(sentence)
            if at >= 0 and fact["id"] not in seen:
                seen.add(fact["id"])
                found.append((at, sentence, fact))
        return [(sentence, fact) for _, sentence, fact in sorted(found, key=lambda row: row[0])]


# ---------------------------------------------------------------- the four kinds of reply


def listing(schema: dict, found: list[tuple[str, dict]]) -> dict:
    facts = schema["properties"]["facts"]
    n = facts.get("maxItems") or len(found)
    props = facts.get("items", {}).get("properties", {})
    out = []
    for sentence, fact in found[:n]:
        values = {"evidence": sentence, "fact": fact["rewrites"]["summary"]}
        out.append({name: values[name] for name in props if name in values})
    return {"facts": out}


def qa_items(schema: dict, found: list[tuple[str, dict]]) -> dict:
    items = schema["properties"]["items"]
    n = items.get("maxItems") or items.get("minItems") or len(found)
    props = items.get("items", {}).get("properties", {})
    offered = props.get("evidence", {}).get("enum")
    if offered is not None:  # facts first: the request offers only the evidence of the facts it asks
        offered = {squash(quote) for quote in offered}
        found = [(sentence, fact) for sentence, fact in found if sentence in offered]
    out = []
    for sentence, fact in found[:n]:
        values = {"question": fact["questions"][0], "evidence": sentence, "reasoning": f"The documents state: {sentence}", "answer": fact["answer"]}
        if "questions" in props:
            k = props["questions"].get("maxItems") or props["questions"].get("minItems") or 1
            values["questions"] = fact["questions"][:k]
        out.append({name: values[name] for name in props if name in values})
    return {"items": out}


def top(name: str, prop: dict):
    """The best value a judge can give for one property."""
    if "enum" in prop:
        values = prop["enum"]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return "tie" if "tie" in values else max(numbers) if numbers else values[-1]
    kind = prop.get("type")
    if kind in ("integer", "number"):
        return prop.get("maximum", 5)
    if kind == "boolean":
        return name != "injection"  # the judge of gen: no passage of the corpus instructs the model
    return "The exact teacher checked it against the documents."


def judge_output(schema: dict | None, prompt: str) -> dict:
    if schema is None:
        if '"better"' in prompt:
            return {"better": "tie"}
        if "faithfulness" in prompt:
            return {"why": top("why", {}), "injection": False, "faithfulness": 5, "usefulness": 5}
        return {"score": 5}
    return {name: top(name, prop) for name, prop in schema.get("properties", {}).items()}


def rewrite(instruction: str, passage: str, found: list[tuple[str, dict]]) -> str:
    if not found:
        return squash(passage)
    hits = {form: at for word, form in FORMS.items() if (at := instruction.casefold().find(word)) >= 0}
    forms = ("paraphrase", "notes", "summary")
    form = min(hits, key=hits.get) if hits else forms[int(hashlib.sha256(instruction.encode()).hexdigest(), 16) % 3]
    title = found[0][1]["title"]
    lines = [fact["rewrites"][form] for _, fact in found]
    if form == "paraphrase":
        return f"{title}\n\n" + " ".join(lines)
    return f"{'Notes on' if form == 'notes' else 'Summary of'} {title}\n\n" + "\n".join(lines)


def reply(body: dict, facts: Facts) -> tuple[str, str]:
    """(kind, content) of the answer to one chat-completion body."""
    users = user_texts(body)
    fmt = body.get("response_format") or {}
    schema = fmt.get("json_schema", {}).get("schema") if fmt.get("type") == "json_schema" else None
    passage = PASSAGE.search(users[0])
    if schema is not None and "facts" in schema.get("properties", {}):
        return "facts", json.dumps(listing(schema, facts.in_passage(passage.group(2)) if passage else []))
    if schema is not None and "items" in schema.get("properties", {}):
        found = facts.in_passage(passage.group(2)) if passage else []
        return "qa", json.dumps(qa_items(schema, found))
    props = (schema or {}).get("properties", {})
    questions = QUESTION.findall(users[-1])
    judged = JUDGE_KEYS & props.keys() if schema is not None else any(f'"{word}"' in users[0] for word in JUDGE_KEYS)
    if passage and not questions and not judged:
        instruction = users[0][: passage.start()] + users[0][passage.end() :]
        text = rewrite(instruction, passage.group(2), facts.in_passage(passage.group(2)))
        if schema is None:
            return "rewrite", text
        first = next((name for name, prop in props.items() if prop.get("type") == "string"), None)
        return "rewrite", json.dumps({name: text if name == first else top(name, prop) for name, prop in props.items()})
    if judged or schema is not None:
        return "judge", json.dumps(judge_output(schema, users[0]))
    question = questions[-1] if questions else users[-1]
    return "answer", facts.answers.get(key(question), UNKNOWN)


def completion(body: dict, content: str) -> dict:
    prompt = sum(len(text_of(m)) for m in body.get("messages", [])) // 4
    usage = {"prompt_tokens": prompt, "completion_tokens": len(content) // 4, "total_tokens": prompt + len(content) // 4}
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": None}
    return {"id": f"chatcmpl-exact-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", MODEL), "choices": [choice], "usage": usage}


# ---------------------------------------------------------------- the server


class ExactTeacher:
    def __init__(self, folder, port: int = 0):
        self.facts, self.port = Facts(folder), port
        self.counts: Counter = Counter()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            kind, content = reply(body, self.facts)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.counts["bad_request"] += 1
            error = {"message": f"exact teacher: cannot read this request ({exc!r})", "type": "invalid_request_error", "param": None, "code": None}
            return web.json_response({"error": error}, status=400)
        self.counts[kind] += 1
        return web.json_response(completion(body, content))

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ExactTeacher:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="corpus folder holding facts.json (bench/knowledge_corpus.py)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if not (Path(args.folder) / "facts.json").is_file():
        raise SystemExit(f"error: {args.folder}/facts.json not found; write it with bench/knowledge_corpus.py {args.folder}")
    teacher = ExactTeacher(args.folder, args.port)

    async def serve() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await teacher.start()
        print(f"exact teacher on {teacher.url} ({len(teacher.facts.facts)} facts); Ctrl-C stops", flush=True)
        await stop.wait()
        await teacher.runner.cleanup()

    asyncio.run(serve())
    print(f"requests: {dict(teacher.counts)}", flush=True)


if __name__ == "__main__":
    main()
