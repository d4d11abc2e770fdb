"""Command-line options made from the stage configs, so that every key is defined once.

A flag names a config key (`Flag("teacher.model", "-m", "--model")`); its type, choices and
help text come from the pydantic field, so `--help`, `--help-config`, YAML files and
`key=value` overrides always agree. Every subcommand also gets `-c/--config`, `--help-config`,
`--json`, `-q/--quiet` and `-v/--verbose` (library warnings), and reads its positional words with one splitter: paths, then
`key=value` overrides.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from common.config import describe, sub_model
from distill.quiet import verbose_option


@dataclass(frozen=True)
class Flag:
    """A command-line flag for one config key; `decls` default to `--last-part-of-the-key`."""

    key: str
    decls: tuple[str, ...] = ()
    envvar: str | None = None

    def __init__(self, key: str, *decls: str, envvar: str | None = None):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "decls", decls or ("--" + key.split(".")[-1].replace("_", "-"),))
        object.__setattr__(self, "envvar", envvar)

    @property
    def dest(self) -> str:
        return self.key.replace(".", "__")


# how every subcommand that asks a teacher names it
TEACHER_FLAGS = (
    Flag("teacher.backend", "--teacher"),
    Flag("teacher.model", "-m", "--model"),
    Flag("teacher.base_url", "--base-url", envvar="DISTILL_BASE_URL"),
    Flag("teacher.api_key_env"),
    Flag("teacher.structured"),  # --no-structured: the prompt alone asks for JSON (for servers that choke on schemas)
)


def field_of(model: type[BaseModel], key: str) -> FieldInfo:
    """The pydantic field behind a dotted key (`teacher.model` reaches into a sub-config)."""
    *parents, leaf = key.split(".")
    for part in parents:
        model = sub_model(model.model_fields[part].annotation)
    return model.model_fields[leaf]


def click_kind(annotation: Any) -> tuple[Any, bool, bool]:
    """(click type, is an on/off flag, repeatable) for a field annotation."""
    options = [a for a in (get_args(annotation) if is_union(annotation) else (annotation,)) if a is not type(None)]
    if len(options) != 1:
        return click.STRING, False, False  # e.g. float | "auto": pydantic parses the text
    kind = options[0]
    if get_origin(kind) is list:
        item, _, _ = click_kind(get_args(kind)[0])
        return item, False, True
    if get_origin(kind) is Literal:
        return click.Choice([str(v) for v in get_args(kind)]), False, False
    if kind is bool:
        return bool, True, False
    return {int: click.INT, float: click.FLOAT}.get(kind, click.STRING), False, False


def is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


def option(model: type[BaseModel], flag: Flag):
    field = field_of(model, flag.key)
    kind, on_off, many = click_kind(field.annotation)
    text = field.description or ""
    default = field.get_default(call_default_factory=True)  # a default_factory's value, not PydanticUndefined
    if not field.is_required() and default not in (None, [], {}) and not on_off:
        text += f" [default: {default}]"
    decls = flag.decls
    if on_off:
        long = next(d for d in decls if d.startswith("--"))
        decls = tuple(d for d in decls if d != long) + (f"{long}/--no-{long[2:]}",)
        return click.option(*decls, flag.dest, default=None, help=text, envvar=flag.envvar)
    return click.option(*decls, flag.dest, type=kind, multiple=many, default=None, help=text, envvar=flag.envvar, show_envvar=bool(flag.envvar))


def config_command(name: str, model: type[BaseModel], flags: tuple[Flag, ...], args_metavar: str, examples: str):
    """A click command whose options are `flags` of `model`, plus the options every subcommand has;
    the function gets `args` (positional words), `config_path`, `as_json`, `quiet` and `flags`
    (the given flags, as dotted config keys)."""

    dests = {flag.dest: flag.key for flag in flags}

    def decorate(function):
        def command(args, config_path, as_json, quiet, **given):
            chosen = {dests[d]: (list(v) or None if isinstance(v, tuple) else v) for d, v in given.items() if d in dests}  # () : not given
            extra = {d: v for d, v in given.items() if d not in dests}  # the command's own options
            return function(args=args, config_path=config_path, as_json=as_json, quiet=quiet, flags=chosen, **extra)

        command.__doc__ = function.__doc__
        command.__click_params__ = list(getattr(function, "__click_params__", []))
        for flag in reversed(flags):
            command = option(model, flag)(command)
        command = click.option("-q", "--quiet", is_flag=True, help="No progress, no tables.")(command)
        command = verbose_option(command)
        command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, for scripts.")(command)
        command = click.option("--help-config", is_flag=True, expose_value=False, is_eager=True, callback=print_keys(model), help="List every config key with its default and meaning, and exit.")(command)
        command = click.option("-c", "--config", "config_path", type=click.Path(), help=f"YAML file of {model.__name__} keys (precedence: YAML < flags < key=value).")(command)
        command = click.argument("args", nargs=-1, metavar=args_metavar)(command)
        return click.command(name, epilog=examples)(command)

    return decorate


def print_keys(model: type[BaseModel]):
    def callback(ctx: click.Context, _param, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(describe(model))
            ctx.exit()

    return callback


def split_args(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Positional words are paths, except `key=value` words that are no existing path."""
    paths, overrides = [], []
    for arg in args:
        is_override = "=" in arg and not Path(arg).exists() and arg.split("=", 1)[0].replace(".", "_").isidentifier()
        (overrides if is_override else paths).append(arg)
    return paths, overrides


def one_path(args: tuple[str, ...], what: str) -> tuple[str | None, list[str]]:
    """(the one positional path or None, overrides); more than one path is a usage error."""
    paths, overrides = split_args(args)
    if len(paths) > 1:
        raise click.UsageError(f"one {what} expected, got {len(paths)}: {' '.join(paths)}")
    return (paths[0] if paths else None), overrides
