"""Typed configuration: YAML file < CLI flags < `key=value` overrides, unknown keys rejected.

Each stage owns a pydantic model (`generate.config.GenConfig`, `train.config.TrainConfig`, ...);
this module only loads and merges. Secrets never live in a config: it names environment
variables (`api_key_env`) instead, and `redact` removes anything that looks like a key anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from common.errors import UserError

M = TypeVar("M", bound=BaseModel)
SECRET_WORDS = {"token", "secret", "password", "apikey", "key"}  # words of a key's name (max_new_tokens is no secret)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a user error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML ({exc.__class__.__name__}); fix its syntax") from exc
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `a.b=1` strings into a nested dict; values are parsed as YAML scalars/lists."""
    flat: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {pair!r} is not of the form key=value")
        flat[key.strip()] = yaml.safe_load(raw) if raw else ""
    return nest(flat)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge `extra` into a copy of `base`; nested mappings merge, other values replace."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_keys(model: type[BaseModel], data: dict[str, Any], where: str) -> None:
    """Reject keys the model does not define, naming the valid ones (recursing into sub-models)."""
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise UserError(f"unknown key '{where}{key}'; valid keys here: {valid}")
        sub = sub_model(fields[key].annotation)
        if isinstance(value, dict) and sub is not None:
            check_keys(sub, value, f"{where}{key}.")


def sub_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, also when optional (`TeacherConfig | None`)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def build(model: type[M], data: dict[str, Any], where: str = "") -> M:
    """Validate merged data into the model; every problem (unknown key, bad value, broken
    cross-field rule) is reported at once, in one user error."""
    problems = problems_of(model, data, where)
    if problems:
        raise UserError("; ".join(problems))
    return model.model_validate(data)


def problems_of(model: type[BaseModel], data: dict[str, Any], where: str = "") -> list[str]:
    """What is wrong with `data` as a `model`, one message per problem (empty: it validates)."""
    try:
        check_keys(model, data, where)
        model.model_validate(data)
    except UserError as exc:
        return [str(exc)]
    except ValidationError as exc:
        first: dict[str, dict] = {}  # a value failing every branch of a union (`float | "auto"`) is one problem, told once
        for error in exc.errors():
            first.setdefault(".".join(field_path(model, error["loc"])), error)
        return [explain(loc, error, where) for loc, error in first.items()]
    return []


def field_path(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The config keys of an error location, without pydantic's union-branch tags."""
    path = []
    for part in loc:
        if model is None or part not in model.model_fields:
            break
        path.append(part)
        model = sub_model(model.model_fields[part].annotation)
    return path


def explain(loc: str, error: dict, where: str) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if not loc:  # a rule across fields (a model validator) names its own fields
        return f"{where.rstrip('.')}: {message}" if where else message
    return f"config value '{where}{loc}' is invalid: {message}"


def load_config(
    model: type[M],
    yaml_path: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> M:
    """Defaults < YAML file < flags that were given < key=value overrides."""
    data: dict[str, Any] = read_yaml(yaml_path) if yaml_path else {}
    given = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    data = deep_merge(data, nest(given))
    data = deep_merge(data, parse_overrides(overrides or []))
    return build(model, data)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """`{"teacher.model": x}` -> `{"teacher": {"model": x}}` (dotted names reach sub-configs)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def redact(data: Any) -> Any:
    """Copy of a config dict with secret-looking values replaced (names of env vars are kept)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            words = key.lower().replace("-", "_").split("_")
            secret = bool(SECRET_WORDS & set(words)) and words[-1] != "env"
            out[key] = "***" if secret and value else redact(value)
        return out
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def describe(model: type[BaseModel], prefix: str = "") -> str:
    """Every key (sub-configs as dotted keys) with its default and meaning, for `--help-config`."""
    lines = []
    for name, field in model.model_fields.items():
        sub = sub_model(field.annotation)
        if sub is not None:
            lines.append(f"  {prefix}{name}: {field.description or ''}")
            lines.append(describe(sub, f"{prefix}{name}."))
            continue
        default = "" if field.is_required() else f" (default: {field.get_default(call_default_factory=True)!r})"
        lines.append(f"  {prefix}{name}{default}: {field.description or ''}")
    return "\n".join(lines)
