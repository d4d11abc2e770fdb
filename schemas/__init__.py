"""The JSON Schemas that are the contract between stages, and the one helper that loads them."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import jsonschema

HERE = Path(__file__).parent


def path(name: str) -> Path:
    """`record` -> schemas/record.schema.json."""
    return HERE / f"{name}.schema.json"


@cache
def _load(name: str) -> str:
    return path(name).read_text()


def load(name: str) -> dict:
    """A fresh copy of a shipped schema (callers may modify it)."""
    return json.loads(_load(name))


def digest(schema: dict) -> str:
    """Stable short hash of a schema, for manifests and cache keys."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = load(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def errors(name: str, instance: object) -> list[str]:
    """Human-readable validation errors of `instance` against a shipped schema (empty = valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator(name).iter_errors(instance)]
