"""Checks on teacher output: JSON, the task schema, grounding of the evidence, duplicates.

Nothing is salvaged: an output either parses and validates, or it is rejected with a reason. A raw
control character inside a string (JSON wants it escaped) is read as a space, not a reason to reject.
"""

from __future__ import annotations

import contextlib
import json
import re
import unicodedata

import jsonschema

import schemas
from common.teacher.ask import Prompt
from common.teacher.backends import Response

PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
RAW_CONTROL = re.compile(r"[\x00-\x1f]+")
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)  # a string of JSON text, from its opening quote


def parse_output(response: Response, validator: jsonschema.protocols.Validator) -> tuple[dict | None, str, str]:
    """(output, reason, detail): output is None when rejected; reason is a short category."""
    if response.error is not None:
        return None, "failed_request", response.error
    try:
        output = loads(response.text)
    except json.JSONDecodeError as exc:
        reason = "truncated" if response.finish_reason == "length" else "invalid_json"
        return None, reason, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if schemas.passes(validator.schema, output):
        return output, "", ""
    error = jsonschema.exceptions.best_match(validator.iter_errors(output))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "<root>"
        return None, "schema", f"{where}: {error.message}"[:500]
    return output, "", ""


def loads(text: str):
    """JSON `text`; where it does not parse, again with every raw control character inside its
    strings (a line break, a tab: JSON wants them escaped; llama.cpp's grammars let them through,
    and SmolLM2-135M writes them) made a space. The first error is the one raised."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as first:
        spaced = JSON_STRING.sub(lambda string: RAW_CONTROL.sub(" ", string[0]), text)
        if spaced != text:
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(spaced)
        raise first


def normalize_space(text: str) -> str:
    return " ".join(text.split())


def grounded(evidence: str, chunk: str) -> bool:
    """The evidence occurs verbatim in the chunk, up to whitespace."""
    quote = normalize_space(evidence)
    return bool(quote) and quote in normalize_space(chunk)


def question_key(question: str) -> str:
    """Key for exact-duplicate detection: case, accents' forms, punctuation and spacing ignored."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return normalize_space(PUNCT.sub(" ", text))


def repair_prompt(sent: Prompt, bad_output: str, error: str) -> Prompt:
    """The request again, with the invalid reply and the error shown."""
    messages = sent.messages + [
        {"role": "assistant", "content": bad_output},
        {"role": "user", "content": f"That reply is not valid: {error}. Reply again with the corrected JSON only."},
    ]
    return Prompt(messages, sent.schema, sent.max_new_tokens, tag=sent.tag)
