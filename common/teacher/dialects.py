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
against the full schema afterwards, whatever the dialect and rendering.

Renderings: the schema sent is the task's own (`full`) or, for engines that compile it into a
GBNF grammar (llama.cpp server, llama-cpp-python, what is built on them), a `gbnf` rendering
they can digest. llama-cpp-python 0.3.36's converter turns the question `pattern` into a grammar
llama.cpp's parser rejects, and an enum string holding a double quote or a backslash into a
literal it mis-escapes (rejected too), and its server dies of the rejection (issue 27); a
`maxLength` is spelled out as one nested optional group per character (600: 5,000 characters of
grammar for one string). The gbnf rendering keeps types, required keys, item counts and enums
(the evidence quotes; where one holds a `"`, sent as a pattern instead: quotes_pattern) and a
`pattern` in a form the converter spells (gbnf_pattern: the question still opens with a question
word), but drops other patterns, the enum strings such a converter cannot spell (the enum itself
where none is left), and a `maxLength` (or `maxItems`) that leaves more than
GBNF_MAX_SPAN optional repeats (400: the qa strings but a free evidence keep their bounds, so a
small model cannot write an answer of 600 characters; no slower a token than 32, measured against
llama-cpp-python 0.3.36); `max_tokens` bounds the reply instead, and the reply is still
validated, and repaired, against the full schema.
"""

from __future__ import annotations

import json
import re

import openai

DIALECTS = ("json_schema", "json_object+schema", "json_object", "prompt-only")
PROMPT_ONLY = len(DIALECTS) - 1
REFUSAL_STATUS = (400, 422, 500)
REFUSAL = re.compile(r"response_format|json_schema|json_object|\bschema\b|structured.output", re.I)
WITH_SCHEMA = ("json_schema", "json_object+schema")
GBNF_ENGINES = ("llamacpp",)  # `owned_by` of GET /models on llama.cpp's server (llama-cpp-python says "me")
UNSPELLABLE = re.compile(r'["\\\x00-\x1f\x7f]')  # characters JSON escapes with a backslash
GBNF_MAX_SPAN = 400  # most optional repeats (maxLength - minLength, maxItems - minItems) kept in a gbnf rendering
GBNF_CHAR = '[^"\\\\]'  # `.` of a gbnf pattern: a character JSON holds unescaped (the converter's `.` takes `"`)
REPEAT = re.compile(r"\{(\d+),(\d+)\}")
METACHAR = re.compile(r"[.*+?()\[{}|$]")
UNQUOTABLE = re.compile(r"[\\\]^\x00-\x1f\x7f]")
SUBSCHEMA = ("items", "additionalProperties", "not", "contains", "if", "then", "else", "propertyNames")
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "dependentSchemas")


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


def rendering(dialect: str, gbnf_engine: bool, choice: str = "auto") -> str:
    """The rendering of the schema an endpoint is sent: none where its dialect sends no schema;
    gbnf where `choice` says so, for a server known to compile schemas into GBNF, and for
    json_object+schema (only llama.cpp's servers enforce a schema sent that way); else full."""
    if dialect not in WITH_SCHEMA:
        return "none"
    if choice != "auto":
        return choice
    return "gbnf" if gbnf_engine or dialect == "json_object+schema" else "full"


def render(schema: dict, name: str) -> dict:
    """`schema` as an endpoint of rendering `name` is sent it (the gbnf rendering is a new dict)."""
    return for_gbnf(schema) if name == "gbnf" else schema


def for_gbnf(node):
    """A schema GBNF converters digest: patterns they spell, an enum with `"` as a pattern, no long span (above)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "pattern" and isinstance(value, str):
            value = gbnf_pattern(value)
            if value is None:
                continue
        if long_span(node, key):
            continue
        if key == "enum" and isinstance(value, list) and any(unspellable(v) for v in value):
            if all(isinstance(v, str) for v in value) and "pattern" not in node:
                key, value = "pattern", quotes_pattern(value)  # the quotes with `"` too, as a pattern spells them
            else:
                value = [v for v in value if not unspellable(v)]
            if not value:
                continue
        if key in SUBSCHEMA:
            out[key] = for_gbnf(value)
        elif key in SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [for_gbnf(item) for item in value]
        elif key in SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: for_gbnf(item) for name, item in value.items()}
        else:
            out[key] = value
    return out


def gbnf_pattern(pattern: str) -> str | None:
    """`pattern` as llama-cpp-python's converter turns it into a grammar llama.cpp parses, or None
    (dropped) where it holds an escape other than `\\s`: `\\s` becomes a space (a raw tab or newline
    is not JSON), `.` a character of a JSON string that needs no escape, and a repeat `{m,n}` of
    more than GBNF_MAX_SPAN optional copies `{m,}` (max_tokens bounds it). Its language is near the
    full one's (the question still opens with its question word and ends with ? or .), and the
    reply is still checked against the full pattern."""
    if "[]" in pattern or "[^]" in pattern:
        return None  # a class opening on `]`: llama-cpp-python 0.3.36's converter loops forever on it
    out, in_class, i = [], False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if pattern[i + 1 : i + 2] != "s" or in_class:
                return None  # llama.cpp's parser takes few escapes: `\\.` and `\\d` fail ("unknown escape")
            out.append(" ")
            i += 2
            continue
        in_class = (in_class and char != "]") or (not in_class and char == "[")
        out.append(GBNF_CHAR if char == "." and not in_class else char)
        i += 1
    return REPEAT.sub(lambda m: m[0] if int(m[2]) - int(m[1]) <= GBNF_MAX_SPAN else f"{{{m[1]},}}", "".join(out))


def unspellable(value) -> bool:
    """Whether an enum value is a string the converter mis-escapes in an enum (`"`, `\\`, controls)."""
    return isinstance(value, str) and bool(UNSPELLABLE.search(value))


def quotes_pattern(quotes: list[str]) -> str | None:
    """The `quotes` the converter can spell, as one pattern over the JSON text of the string (None:
    none of them). llama-cpp-python's converter writes a pattern's characters into the JSON string
    as they are, so a `"` is spelled `\\\\"` (its escape in JSON: the reply decodes to the quote; an
    enum's `"` it mis-escapes, and a bare one in a pattern ends the string); a regex metacharacter
    sits in a class of its own (`[.]`: llama.cpp's parser rejects `\\.`); a quote holding `\\`, `]`
    (`[]]` sends the converter into an endless loop), `^` or a control character is left out."""
    kept = [q for q in quotes if q and not UNQUOTABLE.search(q)]
    spelled = [METACHAR.sub(r"[\g<0>]", q).replace('"', '\\\\"') for q in kept]
    return "^(" + "|".join(spelled) + ")$" if kept else None


def long_span(node: dict, key: str) -> bool:
    """Whether `key` is a maxLength or maxItems leaving more than GBNF_MAX_SPAN optional repeats."""
    low = {"maxLength": "minLength", "maxItems": "minItems"}.get(key)
    return low is not None and isinstance(node[key], int) and node[key] - int(node.get(low, 0)) > GBNF_MAX_SPAN


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
