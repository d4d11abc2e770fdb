"""Continued-pretraining text (`rewrites` > 0): every chunk as the document has it, and teacher
rewrites of it in turn as a paraphrase, Q&A-style notes and a summary naming every entity.

A fact is learned closed-book only from many representations of it (synthetic continued
pretraining, Yang et al. 2025; Physics of Language Models 3.1), so `distill train` trains on
this text (loss on every token) beside the chat records. Rewrites are free-text requests asked
through the cached-teacher path like every other request: cached, resumable, never sent twice.
Text of documents held out by the document split never reaches text.jsonl.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from common.teacher.ask import Answer, CachedTeacher, Prompt
from generate.chunk import Chunk
from generate.progress import GenProgress
from generate.tasks import fence

FORMS = ("paraphrase", "notes", "summary")
PROMPTS = Path(__file__).parent / "prompts"


@cache
def template(form: str) -> str:
    return (PROMPTS / f"rewrite_{form}.txt").read_text()


def rewrite_prompts(chunks: list[Chunk], count: int) -> list[Prompt]:
    """`count` prompts per chunk, cycling through the forms; each names its version, so that two
    rewrites of one form are two requests (and two cache entries)."""
    prompts = []
    for chunk in chunks:
        for n in range(count):
            form = FORMS[n % len(FORMS)]
            version = f"version {n // len(FORMS) + 1}"
            text = template(form).replace("{version}", version).replace("{fence}", fence(chunk.text)).replace("{chunk}", chunk.text)
            prompts.append(Prompt([{"role": "user", "content": text}], None, tag=(chunk, form)))
    return prompts


def rewrite(prompts: list[Prompt], teacher: CachedTeacher, outcome, show_progress: bool) -> list[dict]:
    """Ask for every rewrite; returns the accepted ones as text rows, in prompt order (a failed
    request or an empty reply is a reject with its reason)."""

    def settle(answer: Answer) -> None:
        chunk, form = answer.prompt.tag
        response = answer.response
        outcome.tokens.update(prompt=response.prompt_tokens, completion=response.completion_tokens)
        if accepted(answer):
            outcome.counts["rewrites_cut"] += response.finish_reason == "length"
            bar.advance(chunks=1, accepted=1, tokens=0 if answer.cached else response.completion_tokens)
            return
        reason = "failed_request" if response.error is not None else "empty_rewrite"
        if response.error is not None:
            outcome.failed(response.error)
        outcome.rejects.append({"reason": reason, "detail": response.error or "the teacher wrote no text", "chunk": chunk.key, "form": form})
        bar.advance(chunks=1, rejected=1)

    with GenProgress(len(prompts), enabled=show_progress, label="rewrites") as bar:
        asked = teacher.ask(prompts, on_answer=settle)
    outcome.counts["sent"] += asked.sent
    outcome.interrupted |= asked.interrupted
    return [text_row(*answer.prompt.tag, answer.response.text.strip()) for answer in asked.answers if answer.response is not None and accepted(answer)]


def accepted(answer: Answer) -> bool:
    return answer.response.error is None and bool(answer.response.text.strip())


def text_row(chunk: Chunk, form: str, text: str) -> dict:
    digest = hashlib.sha256("\x1f".join([chunk.key, form, text]).encode()).hexdigest()[:16]
    source = {"doc": chunk.doc, "chunk": chunk.index, "start": chunk.start, "end": chunk.end}
    return {"id": digest, "text": text, "form": form, "source": source, "split": "train"}


def text_rows(chunks: list[Chunk], rewrites: list[dict], held_out_docs: set[str]) -> list[dict]:
    """text.jsonl: each chunk, then its rewrites, in corpus order; held-out documents left out."""
    by_chunk: dict[tuple[str, int], list[dict]] = {}
    for row in rewrites:
        by_chunk.setdefault((row["source"]["doc"], row["source"]["chunk"]), []).append(row)
    rows = []
    for chunk in chunks:
        if chunk.doc not in held_out_docs:
            rows += [text_row(chunk, "original", chunk.text)] + by_chunk.get((chunk.doc, chunk.index), [])
    return rows
