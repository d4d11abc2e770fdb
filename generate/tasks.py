"""Tasks: a prompt template + a JSON Schema of the teacher output + a mapping to records.

Built-in: `qa` (factual questions, short reasoning) and `reasoning` (multi-step questions;
the trace is the point). A custom task is a template file and a schema file. Template fields
are `{chunk}`, `{n}` and `{schema}`; other braces are left alone, so JSON examples need no escaping.
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

BUILTIN = ("qa", "reasoning")
PROMPTS = Path(__file__).parent / "prompts"
SYSTEM = "You are a careful domain expert who writes training data for a student model. You reply with JSON only."
QUOTE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
MAX_QUOTES = 48

FIELD = re.compile(r"\{(chunk|n|schema)\}")  # the template fields, filled in one pass


@dataclass(frozen=True)
class Task:
    name: str
    template: str
    schema: dict

    @cached_property
    def validator(self) -> jsonschema.protocols.Validator:
        return jsonschema.validators.validator_for(self.schema)(self.schema)

    def messages(self, chunk: str, n: int) -> list[dict]:
        fields = {"chunk": chunk, "n": str(n), "schema": json.dumps(self.schema)}
        prompt = FIELD.sub(lambda match: fields[match.group(1)], self.template)  # one pass: the chunk's own braces stay
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]

    def request_schema(self, n: int, chunk: str | None = None) -> dict:
        """The schema sent to the teacher: exactly `n` items; with `chunk`, evidence limited to its sentences."""
        schema = copy.deepcopy(self.schema)
        items = schema["properties"]["items"]
        items["minItems"] = items["maxItems"] = n
        quotes = quotable_sentences(chunk) if chunk else []
        evidence = items["items"].get("properties", {}).get("evidence")
        if quotes and evidence is not None:
            evidence.pop("minLength", None)
            evidence.pop("maxLength", None)
            evidence["enum"] = quotes
        return schema

    def items(self, output: dict) -> list[dict]:
        """Teacher output (already schema-valid) -> item dicts with the four record fields."""
        return [
            {
                "question": str(item["question"]).strip(),
                "reasoning": str(item.get("reasoning", "")).strip(),
                "answer": str(item["answer"]).strip(),
                "evidence": str(item.get("evidence", "")).strip(),
            }
            for item in output["items"]
        ]


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
