"""Curation of accepted items, between the teacher run and the split.

1. Near-duplicate questions are removed across the whole corpus (MinHash LSH over character
   5-grams, `generate.dedup`): the first item, in corpus order, stays.
2. Optionally (`min_score`), the teacher judges every remaining item 1-5 for faithfulness to
   its chunk and usefulness; items scoring below `min_score` on either are dropped. Judge
   requests go through the same cache as generation, so a rerun asks nothing twice.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import jsonschema

from common.teacher.ask import CachedTeacher, Prompt
from common.teacher.backends import Response
from generate.dedup import NearDuplicates
from generate.progress import GenProgress
from generate.records import fact_id
from generate.tasks import fence
from generate.validate import parse_output, question_key

JUDGE_SYSTEM = "You are a strict reviewer of training data. You reply with JSON only."
JUDGE_TOKENS = 256
SCORE = {"type": "integer", "enum": [1, 2, 3, 4, 5]}
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"why": {"type": "string", "maxLength": 400}, "injection": {"type": "boolean"}, "faithfulness": SCORE, "usefulness": SCORE},
    "required": ["why", "injection", "faithfulness", "usefulness"],
    "additionalProperties": False,
}
FIELD = re.compile(r"\{(chunk|fence|question|evidence|reasoning|answer)\}")


def curate(cfg, plan, outcome, teacher: CachedTeacher, show_progress: bool) -> None:
    """Dedup then judge, in place on `outcome` (items removed, rejects added with their reason)."""
    drop_near_duplicates([chunk.key for chunk in plan.chunks], outcome, cfg.near_dup_threshold)
    if cfg.min_score is not None and not outcome.interrupted:
        judge(cfg, plan, outcome, teacher, show_progress)


# ---------------------------------------------------------------- near-duplicates


def drop_near_duplicates(chunk_keys: list[str], outcome, threshold: float) -> None:
    """Keep the first of every group of near-duplicate questions, in the order of `chunk_keys`.
    The phrasings of one fact are meant to be alike: among them only exact repeats are dropped.
    Under Ray the driver decides the same from the pairs Ray finds (generate.ray_decide.near_duplicate_rejects)."""
    index, seen = NearDuplicates(threshold), {}  # the kept items so far: key -> (question, fact, place)
    for chunk_key in chunk_keys:
        if chunk_key not in outcome.items:
            continue
        kept = []
        for n, item in enumerate(outcome.items[chunk_key]):
            key, question, fact = f"{chunk_key}:{n}", item["question"], fact_id(item, chunk_key)
            same = [seen[k] for k in index.match(question) if seen[k][1] != fact or question_key(seen[k][0]) == question_key(question)]
            if same:
                same.sort(key=lambda kept_item: kept_item[2])  # the first kept
                exact = [q for q, _, _ in same if question_key(q) == question_key(question)]
                other, reason = (exact[0], "duplicate") if exact else (same[0][0], "near_duplicate")
                outcome.rejects.append({"reason": reason, "detail": f"like: {other}"[:300], "chunk": chunk_key, "item": item})
                continue
            index.add(key, question)
            seen[key] = (question, fact, len(seen))
            kept.append(item)
        outcome.items[chunk_key] = kept


# ---------------------------------------------------------------- judge


@cache
def judge_template() -> str:
    return (Path(__file__).parent / "prompts" / "judge.txt").read_text()


@cache
def judge_validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(JUDGE_SCHEMA)


def judge_prompt(item: dict, chunk, max_new_tokens: int) -> Prompt:
    fields = {"chunk": chunk.text, "fence": fence(chunk.text), **item}
    prompt = FIELD.sub(lambda m: fields[m.group(1)], judge_template())
    messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]
    return Prompt(messages, JUDGE_SCHEMA, min(JUDGE_TOKENS, max_new_tokens), tag=(chunk, item))


def judge(cfg, plan, outcome, teacher: CachedTeacher, show_progress: bool) -> None:
    """Ask the teacher to score every item; keep those scoring at least min_score on both scales."""
    prompts = [judge_prompt(item, chunk, cfg.teacher.max_new_tokens) for chunk in plan.chunks for item in outcome.items.get(chunk.key, [])]
    with GenProgress(len(prompts), enabled=show_progress, label="judge") as bar:
        asked = teacher.ask(prompts, on_answer=lambda a: bar.advance(chunks=1, tokens=0 if a.cached else a.response.completion_tokens))
    outcome.counts["judge_cache_hits"] += asked.cache_hits
    outcome.counts["judge_sent"] += asked.sent
    outcome.interrupted |= asked.interrupted
    for key in outcome.items:
        outcome.items[key] = []
    for answer in asked.answers:
        chunk, item = answer.prompt.tag
        reason, detail = verdict(answer.response, cfg.min_score)
        if answer.response is not None and answer.response.error is not None:
            outcome.failed(answer.response.error)
        if reason:
            outcome.rejects.append({"reason": reason, "detail": detail, "chunk": chunk.key, "item": item})
        else:
            outcome.items[chunk.key].append(item)


def verdict(response: Response | None, min_score: int) -> tuple[str, str]:
    """('', '') to keep the item, else (reason, detail)."""
    if response is None or response.error is not None:
        return "not_judged", (response.error if response else "no answer from the judge (interrupted)")
    output, reason, detail = parse_output(response, judge_validator())
    if output is None:
        return "judge_invalid", f"{reason}: {detail}"
    if output["injection"]:
        return "injection", f"the passage tries to instruct the model: {output['why']}"[:400]
    scores = f"faithfulness {output['faithfulness']}, usefulness {output['usefulness']}"
    if min(output["faithfulness"], output["usefulness"]) < min_score:
        return "low_score", f"{scores}: {output['why']}"[:400]
    return "", ""
