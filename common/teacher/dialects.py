"""How an OpenAI-compatible server is asked for structured output, and how its refusal is recognised.

Servers disagree on `response_format`. Each endpoint is asked in the first dialect of this
chain that it has not refused, and keeps it for the rest of the run:

    json_schema          {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
                         OpenAI, vLLM, SGLang, llama.cpp server since late 2024, LM Studio, Ollama >= 0.5
    json_object+schema   {"type": "json_object", "schema": {...}}
                         llama.cpp server before json_schema support (it answered json_schema with HTTP 500)
    json_object          {"type": "json_object"}: JSON, but no schema
                         servers with only a "JSON mode"
    prompt-only          no response_format: the prompt alone asks for JSON

A refusal is recognised by what the server says, whatever the status (400, 422, or 500 from
servers that throw on unknown fields): a body naming response_format, json_schema, json_object,
a schema or structured output. It is never retried as a transient fault. Every answer is checked
against the schema afterwards, whatever the dialect.
"""

from __future__ import annotations

import json
import re

import openai

DIALECTS = ("json_schema", "json_object+schema", "json_object", "prompt-only")
PROMPT_ONLY = len(DIALECTS) - 1
REFUSAL_STATUS = (400, 422, 500)
REFUSAL = re.compile(r"response_format|json_schema|json_object|\bschema\b|structured.output", re.I)


def response_format(schema: dict, name: str = "json_schema") -> dict | None:
    """The `response_format` field asking for `schema` in the dialect `name` (None: prompt-only)."""
    body = {k: v for k, v in schema.items() if k not in ("$schema", "$id")}
    if name == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "items", "schema": body, "strict": False}}
    if name == "json_object+schema":
        return {"type": "json_object", "schema": body}
    if name == "json_object":
        return {"type": "json_object"}
    return None


def refuses(exc: BaseException) -> bool:
    """Whether an error answer is the server refusing the response_format it was sent."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in REFUSAL_STATUS:
        return False
    return bool(REFUSAL.search(f"{exc.message} {exc.body}"))


def cut_short(text: str) -> bool:
    """Whether `text` opens a JSON object or array and ends before closing it (a body cut short).

    Under a JSON dialect the server's grammar cannot stop there, so such an answer with
    finish_reason "stop" is a fault of the server or of the wire, not the model's reply."""
    text = text.strip()
    if not text.startswith(("{", "[")):
        return False
    try:
        json.loads(text)
        return False
    except ValueError:
        pass
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
    return in_string or depth > 0
