"""The JSON Schemas that are the contract between stages, and the one helper that loads them."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import fastjsonschema
import jsonschema

HERE = Path(__file__).parent
# Keywords fastjsonschema (drafts 4-7) does not know: a schema using one is checked by jsonschema alone.
NEWER_KEYWORDS = ("prefixItems", "$defs", "unevaluated", "dependentRequired", "dependentSchemas", "$anchor", "$dynamic", "minContains", "maxContains")
_FAST: dict[int, tuple[dict, object]] = {}


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


def fast_check(schema: dict):
    """A compiled validity test of `schema` (fastjsonschema: ~40x faster than jsonschema), or None
    where the schema needs a newer draft. Only a pass is trusted; on a fail, jsonschema explains."""
    found = _FAST.get(id(schema))
    if found is None or found[0] is not schema:
        text = json.dumps(schema)
        try:
            compiled = None if any(k in text for k in NEWER_KEYWORDS) else fastjsonschema.compile({k: v for k, v in schema.items() if k != "$schema"})
        except fastjsonschema.JsonSchemaDefinitionException:
            compiled = None
        found = _FAST[id(schema)] = (schema, compiled)  # the schema is kept, so its id stays unique
    return found[1]


def passes(schema: dict, instance: object) -> bool:
    """True when the fast check accepts `instance` (False means: ask jsonschema)."""
    check = fast_check(schema)
    if check is None:
        return False
    try:
        check(instance)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def errors(name: str, instance: object) -> list[str]:
    """Human-readable validation errors of `instance` against a shipped schema (empty = valid)."""
    if passes(validator(name).schema, instance):
        return []
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator(name).iter_errors(instance)]
