"""Tasks: a prompt template + a JSON Schema of the teacher output + a mapping to records.

Built-in: `qa` (factual questions, short reasoning) and `reasoning` (multi-step questions;
the trace is the point). A custom task is a template file and a schema file. Template fields
are `{chunk}`, `{fence}` (a run of double quotes to put on the lines before and after the chunk:
three, or one more than the longest run in the chunk, so that no passage can close its block
early), `{n}` (facts), `{k}` (phrasings per fact), `{schema}` (the task schema) and `{shape}` (a
JSON example of the reply asked for); other braces are left alone, so JSON examples need no escaping.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import jsonschema

import schemas
from common.errors import UserError
from generate.spans import answer_spans, question_pattern

BUILTIN = ("qa", "reasoning")
PROMPTS = Path(__file__).parent / "prompts"
SYSTEM = "You are a careful domain expert who writes training data for a student model. You reply with JSON only."
QUOTE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
MAX_QUOTES = 48

FIELD = re.compile(r"\{(chunk|fence|n|k|schema|shape)\}")  # the template fields, filled in one pass
QUOTES = re.compile(r'"+')
DIVERSE = (
    "Make the questions differ in form, not in a word or two: change the question word (What, Which, Who, When, How many), "
    'the voice (active or passive), where the subject stands, or write an order ("Name the ...", "Give the ...").'
)
SPANS_NOTE = (
    "\n\nWrite each item's evidence first, then its answer: the few words of the evidence that answer the questions "
    "(a name, a number, a date, a place), copied exactly; then the questions, which ask for that answer without containing it."
)
PHRASINGS_NOTE = "\n\nFor every fact, write {k} questions that ask for it (list them in \"questions\"); all of them share its evidence, reasoning and answer. " + DIVERSE


@dataclass(frozen=True)
class Task:
    name: str
    template: str
    schema: dict

    @cached_property
    def validator(self) -> jsonschema.protocols.Validator:
        """Checks a reply of one question per fact."""
        return self.validator_for(1)

    def validator_for(self, phrasings: int) -> jsonschema.protocols.Validator:
        """Checks a reply asking each fact in `phrasings` questions (any number of facts); built once."""
        made = self.__dict__.setdefault("_validators", {})  # a frozen dataclass still has its __dict__
        if phrasings not in made:
            schema = self.reply_schema(phrasings)
            made[phrasings] = jsonschema.validators.validator_for(schema)(schema)
        return made[phrasings]

    def reply_schema(self, phrasings: int = 1) -> dict:
        """The task schema; with `phrasings` > 1, each item asks its fact in that many `questions`."""
        schema = copy.deepcopy(self.schema)
        fact = schema["properties"]["items"]["items"]
        properties = fact.get("properties", {})
        if phrasings > 1 and "question" in properties:
            asked = {"type": "array", "items": properties["question"], "minItems": phrasings, "maxItems": phrasings}
            fact["properties"] = {("questions" if key == "question" else key): (asked if key == "question" else value) for key, value in properties.items()}
            fact["required"] = ["questions" if key == "question" else key for key in fact.get("required", [])]
        return schema

    def messages(self, chunk: str, n: int, phrasings: int = 1, note: str = "", spans: bool = False) -> list[dict]:
        """The request's messages; `note` is appended to the prompt (facts first: the facts to ask);
        `spans`: answers copied from the evidence (generate/spans.py), asked for in the prompt too."""
        asked = self.request_schema(n, None, phrasings, spans=spans)
        fields = {"chunk": chunk, "fence": fence(chunk), "n": str(n), "k": str(phrasings), "schema": json.dumps(self.schema), "shape": shape(asked)}
        prompt = FIELD.sub(lambda match: fields[match.group(1)], self.template)  # one pass: the chunk's own braces stay
        if phrasings > 1 and "{k}" not in self.template:
            prompt += PHRASINGS_NOTE.format(k=phrasings)
        if spans and self.extractive:
            prompt += SPANS_NOTE
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt + note}]

    @property
    def extractive(self) -> bool:
        """Whether the task's items have the evidence and answer strings `answers: span` needs."""
        properties = self.schema["properties"]["items"]["items"].get("properties", {})
        return {"evidence", "answer"} <= properties.keys()

    def request_schema(
        self, n: int, chunk: str | None = None, phrasings: int = 1, quotes: list[str] | None = None, spans: bool = False
    ) -> dict:
        """The schema sent to the teacher: exactly `n` items; with `chunk`, evidence limited to its
        sentences (or to `quotes` where given); with `phrasings` > 1, each item asks one fact in that
        many distinct `questions`; with `spans`, evidence and answer first, the answer a span of the
        evidence (one branch per sentence, generate/spans.py), and where `quotes` are given (the facts
        of a facts-first request, one item each) item i quotes quotes[i]."""
        schema = self.reply_schema(phrasings)
        items = schema["properties"]["items"]
        items["minItems"] = items["maxItems"] = n
        given = list(dict.fromkeys(quotes)) if quotes and chunk else None
        quotes = (given or quotable_sentences(chunk)) if chunk else []
        if spans and self.extractive and given and len(given) == n:
            item, recite = items.pop("items"), self.name == "qa"
            others = quotable_sentences(chunk)  # a question names a word none of the chunk's other sentences has
            items["prefixItems"] = [extractive_item(item, [quote], recite, others) for quote in given]
            items["items"] = False
            return schema
        if spans and self.extractive:
            items["items"] = extractive_item(items["items"], quotes, recite=self.name == "qa")
            return schema
        evidence = items["items"].get("properties", {}).get("evidence")
        if quotes and evidence is not None:
            evidence.pop("minLength", None)
            evidence.pop("maxLength", None)
            evidence["enum"] = quotes
        return schema

    def items(self, output: dict) -> list[dict]:
        """Teacher output (already schema-valid) -> item dicts with the record fields; the
        phrasings of one fact share its evidence, reasoning and answer."""
        found = []
        for item in output["items"]:
            shared = {
                "reasoning": str(item.get("reasoning", "")).strip(),
                "answer": str(item["answer"]).strip(),
                "evidence": str(item.get("evidence", "")).strip(),
            }
            questions = item["questions"] if "questions" in item else [item["question"]]
            found += [{"question": str(question).strip(), **shared} for question in questions]
        return found


def extractive_item(item: dict, quotes: list[str], recite: bool, others: list[str] | None = None) -> dict:
    """An item with its evidence and answer first; with `quotes`, one branch per quote and answer
    span of it (generate/spans.py; a quote without spans, e.g. a heading, is left out); `recite`
    (the qa task): its reasoning the quote itself (the reasoning task keeps its own traces). A
    question names a word that no other sentence of `others` (default: `quotes`) has."""
    others = quotes if others is None else others
    rest = {key: value for key, value in item["properties"].items() if key not in ("evidence", "answer")}
    ordered = {**item, "properties": {"evidence": item["properties"]["evidence"], "answer": item["properties"]["answer"], **rest}}
    branches = []
    for quote in quotes:
        for answer in answer_spans(quote):
            pinned = {"evidence": {"type": "string", "enum": [quote]}, "answer": {"type": "string", "enum": [answer]}}
            branches.append({**ordered, "properties": {**pinned, **held_to_words(rest, quote, answer, others, recite)}})
    return {"anyOf": branches} if branches else ordered


def held_to_words(properties: dict, quote: str, answer: str, quotes: list[str], recite: bool) -> dict:
    """The question (or each of the questions) made of the quote's words (generate/spans.py), and with
    `recite` the reasoning the quote itself: a small teacher's own reasoning is noise, and a student
    that recalls the sentence before it answers has learned the sentence."""
    held = copy.deepcopy(properties)
    question = held["questions"]["items"] if "questions" in held else held.get("question")
    if question is not None:
        question["pattern"] = question_pattern(quote, answer, quotes)
    if recite and held.get("reasoning", {}).get("type") == "string":
        held["reasoning"] = {"type": "string", "enum": [quote]}
    return held


def fence(passage: str) -> str:
    """The delimiter of a passage block: a run of double quotes longer than any in the passage
    (three at least, as the prompts always had), so no run of quotes in the passage can end its block."""
    longest = max((len(run) for run in QUOTES.findall(passage)), default=0)
    return '"' * max(3, longest + 1)


def shape(schema: dict) -> str:
    """A one-line JSON example of what `schema` asks for ("..." for every string), for prompts."""

    def example(node: dict):
        kind = node.get("type")
        if kind == "object":
            return {key: example(value) for key, value in node.get("properties", {}).items()}
        if kind == "array":
            return [example(node.get("items", {}))] * min(node.get("minItems") or 1, 3)
        return "..."

    return json.dumps(example(schema))


def worst_case_tokens(schema: dict) -> int | None:
    """The most tokens a reply following `schema` can take, or None where a string or array is
    unbounded. Every token writes at least one character, and every character of a string at
    most two (an escape such as \\n), so bounded strings bound the reply: a budget this large
    never cuts a constrained reply inside a string (\\uXXXX escapes aside; a string with a pattern
    counts by its maxLength, which its pattern must imply: common/teacher/backend_local.py)."""
    if "enum" in schema:
        return max(len(json.dumps(value)) for value in schema["enum"])
    if "anyOf" in schema:
        bounds = [worst_case_tokens(branch) for branch in schema["anyOf"]]
        return None if None in bounds or not bounds else max(bounds)
    kind = schema.get("type")
    if kind == "string":
        return None if "maxLength" not in schema else 2 + 2 * schema["maxLength"]
    if kind == "array" and "prefixItems" in schema and schema.get("items") is False:
        bounds = [worst_case_tokens(item) for item in schema["prefixItems"]]
        return None if None in bounds else 2 + sum(bound + 2 for bound in bounds)
    if kind == "array":
        inner = worst_case_tokens(schema.get("items", {}))
        return None if inner is None or "maxItems" not in schema else 2 + schema["maxItems"] * (inner + 2)
    if kind == "object":
        parts = [worst_case_tokens(value) for value in schema.get("properties", {}).values()]
        if None in parts or schema.get("additionalProperties", True) is not False:
            return None
        return 2 + sum(part + len(json.dumps(key)) + 4 for key, part in zip(schema["properties"], parts))
    return None


def quotable_sentences(chunk: str) -> list[str]:
    """Sentences of the chunk that make sensible evidence quotes (verbatim up to whitespace, 20-400 characters)."""
    seen: dict[str, None] = {}
    for piece in QUOTE_SPLIT.split(chunk):
        piece = " ".join(piece.split())
        if 20 <= len(piece) <= 400 and '"""' not in piece:
            seen.setdefault(piece)
    return list(seen)[:MAX_QUOTES]


def load_task(name: str, prompt_file: str | None = None, schema_file: str | None = None) -> Task:
    template = _read(prompt_file, "prompt") if prompt_file else None
    schema = _load_schema(schema_file) if schema_file else None
    if name in BUILTIN:
        template = template or (PROMPTS / f"{name}.txt").read_text()
        schema = schema or schemas.load(name)
    elif template is None or schema is None:
        raise UserError(f"unknown task '{name}'; use one of {', '.join(BUILTIN)} or give prompt_file and schema_file")
    return Task(name, template, schema)


def _read(path: str, what: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{what} file {path} does not exist")
    return file.read_text()


def _load_schema(path: str) -> dict:
    try:
        schema = json.loads(_read(path, "schema"))
    except json.JSONDecodeError as exc:
        raise UserError(f"schema file {path} is not valid JSON (line {exc.lineno}: {exc.msg}); fix it") from exc
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UserError(f"schema file {path} is not a valid JSON Schema: {exc.message}") from exc
    item = schema.get("properties", {}).get("items", {}).get("items", {})
    required = set(item.get("required", []))
    if schema.get("type") != "object" or not {"question", "answer"} <= required:
        raise UserError(
            f"schema file {path} must describe an object whose 'items' array holds objects requiring "
            "'question' and 'answer' (optionally 'reasoning' and 'evidence')"
        )
    return schema
