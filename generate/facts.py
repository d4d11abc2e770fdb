"""Facts first (`pairs_per_chunk: auto`, the default for knowledge data): list the facts, then ask them.

1. listing: one request per chunk (prompts/facts.txt under `listing_schema`): every fact the chunk
   states, each with its evidence (a sentence of the chunk, verbatim) and a short statement. The
   list and its strings are bounded, so the local teacher's grammar bounds the reply.
2. items: the task's own request (qa, reasoning or a custom one) for the listed facts,
   FACTS_PER_REQUEST at a time, the facts named in the prompt and the evidence limited to theirs;
   as many requests as the list needs.
Both kinds go through the request cache like every request: the item requests are built from the
(cached) listings, so a rerun builds the same prompts and re-sends only what is missing.
With span answers (`answers: span`, the embedded teacher's default) there is no listing request:
the facts are the chunk's sentences that hold an answer span (`sentence_facts`), and each item of
a request is held to its own fact's sentence, in order.

Coverage: a *factual sentence* is a sentence of a chunk (split as evidence is quoted: after . ! ?
and at blank lines) of at least MIN_WORDS words that is not a Markdown heading (`#` first); it is
covered when the evidence of a training item is that sentence, holds it, or lies inside it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jsonschema

from generate.spans import answer_spans
from generate.tasks import FIELD, QUOTE_SPLIT, SYSTEM, fence, quotable_sentences, shape
from generate.validate import grounded, normalize_space

FACTS_PER_REQUEST = 4  # listed facts asked in one item request
MAX_FACTS = 24  # facts one listing may hold
FACT_CHARS = 160  # bound of a fact's statement
# a shorter sentence (a label, a fragment: "See below.") is not a factual sentence; "Steiskrostel has 3133
# inhabitants." is (at 5, such facts were neither counted nor, with span answers, asked: bench/knowledge.py)
MIN_WORDS = 4
TEMPLATE = Path(__file__).parent / "prompts" / "facts.txt"


def listing_schema(chunk: str | None = None) -> dict:
    """The reply of a listing request; with `chunk`, the evidence is one of its quotable sentences."""
    # a heading states no fact
    quotes = [q for q in quotable_sentences(chunk) if not q.startswith("#")] if chunk else []
    evidence = {"type": "string", "enum": quotes} if quotes else {"type": "string", "minLength": 8, "maxLength": 400}
    entry = {
        "type": "object",
        "properties": {"evidence": evidence, "fact": {"type": "string", "minLength": 8, "maxLength": FACT_CHARS}},
        "required": ["evidence", "fact"],
        "additionalProperties": False,
    }
    most = min(MAX_FACTS, 2 * len(quotes)) if quotes else MAX_FACTS
    facts = {"type": "array", "minItems": 1, "maxItems": most, "items": entry}
    return {"type": "object", "properties": {"facts": facts}, "required": ["facts"], "additionalProperties": False}


@cache
def listing_validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(listing_schema())


def listing_messages(chunk: str) -> list[dict]:
    fields = {"chunk": chunk, "fence": fence(chunk), "shape": shape(listing_schema())}
    prompt = FIELD.sub(lambda match: fields.get(match.group(1), match.group(0)), TEMPLATE.read_text())
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def listed_facts(output: dict, chunk: str) -> tuple[list[dict], list[dict]]:
    """(facts, ungrounded) of a valid listing reply: each fact once, its evidence a quote of the chunk."""
    kept, ungrounded, seen = [], [], set()
    for entry in output["facts"]:
        fact = {"fact": normalize_space(entry["fact"]), "evidence": normalize_space(entry["evidence"])}
        if not grounded(fact["evidence"], chunk):
            ungrounded.append(fact)
        elif (fact["evidence"].casefold(), fact["fact"].casefold()) not in seen:
            seen.add((fact["evidence"].casefold(), fact["fact"].casefold()))
            kept.append(fact)
    return kept, ungrounded


def sentence_facts(chunk: str) -> list[dict]:
    """Span answers: the facts of a chunk are its sentences that state something and hold an answer
    span, in order, with no listing request. The teacher span answers exist for (the embedded 135M),
    asked to list, named 41 facts for 115 factual sentences (bench/knowledge.py, docs/eval.md)."""
    factual = set(factual_sentences(chunk))
    return [{"fact": s, "evidence": s} for s in quotable_sentences(chunk) if s in factual and answer_spans(s)]


def sentence_listing(chunks) -> dict[str, list[dict]]:
    """Facts first with span answers: each chunk's facts, by chunk key (the listing no teacher is asked for)."""
    return {chunk.key: sentence_facts(chunk.text) for chunk in chunks}


def batches(facts: list[dict]) -> list[list[dict]]:
    return [facts[i : i + FACTS_PER_REQUEST] for i in range(0, len(facts), FACTS_PER_REQUEST)]


# ---------------------------------------------------------------- coverage


def factual_sentences(text: str) -> list[str]:
    """The sentences of `text` that state something (see the module docstring), spacing collapsed."""
    found: dict[str, None] = {}
    for piece in QUOTE_SPLIT.split(text):
        sentence = normalize_space(piece)
        if len(sentence.split()) >= MIN_WORDS and not sentence.startswith("#"):
            found.setdefault(sentence)
    return list(found)


def covers(evidence: str, sentence: str) -> bool:
    quote = normalize_space(evidence).casefold()
    return bool(quote) and (sentence.casefold() in quote or quote in sentence.casefold())


def facts_note(facts: list[dict]) -> str:
    """The part of an item request that names its facts (appended to the task's prompt)."""
    lines = [f'{n}. {f["fact"]} Evidence: "{f["evidence"]}"' for n, f in enumerate(facts, 1)]
    head = (
        f"The facts are already chosen: write exactly one item for each of these {len(facts)} facts, "
        "in this order, quoting the evidence given:"
    )
    return "\n\n" + head + "\n" + "\n".join(lines)
