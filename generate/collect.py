"""What each teacher answer of `distill gen` means: accepted items, a repair to send, or a rejection.

ask_all sends a stage's prompts through the request cache and re-asks outputs that failed the schema
(with the error shown), up to `repair_attempts` rounds. A Collector settles each answer the moment
it arrives into the run's Outcome: items grounded in their chunk (and, with span answers, answered
by words of their evidence and not given away by the question), or rejects with their reason. The
FactCollector does the same for facts-first listings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from common.teacher.ask import Answer, CachedTeacher, Prompt
from generate.chunk import Chunk
from generate.config import GenConfig
from generate.facts import listed_facts, listing_validator
from generate.progress import GenProgress
from generate.spans import answer_in_evidence, leaks
from generate.tasks import Task
from generate.validate import grounded, parse_output, repair_prompt

REPAIRABLE = ("invalid_json", "schema")


@dataclass
class Outcome:
    """What the run produced, per chunk, plus counters for the manifest."""

    items: dict[str, list[dict]] = field(default_factory=dict)  # chunk key -> accepted items
    rejects: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    tokens: Counter = field(default_factory=Counter)
    text: list[dict] = field(default_factory=list)  # accepted rewrites (text rows)
    interrupted: bool = False
    last_error: str = ""  # of the failed requests (counts["failed_requests"]), for the summary line
    structured_output: dict = field(default_factory=dict)  # base URL -> dialect it was asked in (openai)
    schema_rendering: dict = field(default_factory=dict)  # base URL -> rendering of the schema it was sent (openai)
    facts: dict[str, list[dict]] | None = None  # facts first: chunk key -> the facts its listing named

    def failed(self, error: str) -> None:
        """A teacher request (writer, repair, rewrite or judge) that failed: the run is incomplete."""
        self.counts["failed_requests"] += 1
        self.last_error = error


def ask_all(
    cfg: GenConfig, prompts: list[Prompt], teacher: CachedTeacher, collector: Collector, show_progress: bool, label: str
) -> None:
    """Ask every prompt, then re-ask the outputs that failed the schema (with the error shown),
    up to `repair_attempts` rounds; every answer is settled the moment it arrives."""
    counts = collector.outcome.counts
    with GenProgress(len(prompts), enabled=show_progress, label=label) as bar:
        collector.bar = bar
        counts["requests"] += len(prompts)
        todo = prompts
        for attempt in range(cfg.teacher.repair_attempts + 1):
            collector.attempt, collector.repairs = attempt, []
            asked = teacher.ask(todo, on_answer=collector.settle)
            if attempt == 0:
                counts["cache_hits"] += asked.cache_hits
            counts["sent"] += asked.sent
            if asked.interrupted:
                collector.outcome.interrupted = True
                break
            todo = collector.repairs
            if not todo:
                break


class Collector:
    """Decides what each answer means: accepted items, a repair to send, or a rejection."""

    def __init__(self, cfg: GenConfig, task: Task, outcome: Outcome):
        self.cfg, self.task, self.bar = cfg, task, GenProgress(0, enabled=False)
        self.outcome = outcome
        self.attempt = 0
        self.repairs: list[Prompt] = []

    def validator(self):
        return self.task.validator_for(self.cfg.questions_per_fact)

    def settle(self, answer: Answer) -> None:
        response, chunk, out = answer.response, answer.prompt.tag, self.outcome
        out.tokens.update(prompt=response.prompt_tokens, completion=response.completion_tokens)
        output, reason, detail = parse_output(response, self.validator())
        out.counts["finish_length"] += response.finish_reason == "length"
        if reason == "failed_request":
            out.failed(response.error)
        if output is None and reason in REPAIRABLE and self.attempt < self.cfg.teacher.repair_attempts:
            self.repairs.append(repair_prompt(answer.prompt, response.text, detail))
            out.counts["repairs"] += 1
            return
        if output is None:
            out.rejects.append({"reason": reason, "detail": detail, "chunk": chunk.key, "output": response.text})
            self.bar.advance(chunks=1, rejected=1, tokens=response.completion_tokens)
            return
        self.accept(chunk, output, response)

    def accept(self, chunk: Chunk, output: dict, response) -> None:
        out = self.outcome
        items = self.task.items(output)
        if response.reasoning and self.task.name == "reasoning" and len(output["items"]) == 1:
            for item in items:  # one fact: the native trace is its reasoning, for each of its phrasings
                item["reasoning"] = response.reasoning.strip()
        good = []
        for item in items:
            why = self.rejected(item, chunk)
            if why:
                out.rejects.append({"reason": why[0], "detail": why[1], "chunk": chunk.key, "item": item})
            else:
                good.append(item)
        out.items.setdefault(chunk.key, []).extend(good)  # facts first: a chunk answers in several requests
        rejected = len(items) - len(good)
        self.bar.advance(chunks=1, accepted=len(good), rejected=rejected, tokens=response.completion_tokens)

    def rejected(self, item: dict, chunk: Chunk) -> tuple[str, str] | None:
        """(reason, detail) for an item that cannot be kept, else None."""
        if item["evidence"] and not grounded(item["evidence"], chunk.text):
            return "ungrounded", "evidence is not a quote of the chunk"
        if self.cfg.extractive and not answer_in_evidence(item["answer"], item["evidence"]):
            return "answer_not_in_evidence", "answers: span, and the answer is not words of its evidence"
        if self.cfg.extractive and leaks(item["question"], item["answer"]):
            return "answer_in_question", "answers: span, and the question holds its answer"
        return None


class FactCollector(Collector):
    """The replies of the listing requests (facts first): the grounded facts of every chunk."""

    def validator(self):
        return listing_validator()

    def accept(self, chunk: Chunk, output: dict, response) -> None:
        facts, ungrounded = listed_facts(output, chunk.text)
        for fact in ungrounded:
            reject = {"reason": "ungrounded_fact", "detail": "evidence is not a quote of the chunk", "chunk": chunk.key}
            self.outcome.rejects.append({**reject, "fact": fact})
        self.outcome.facts[chunk.key] = facts
        self.bar.advance(chunks=1, accepted=len(facts), rejected=len(ungrounded), tokens=response.completion_tokens)
