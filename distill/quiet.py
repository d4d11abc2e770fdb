"""Library chatter kept off the terminal; `-v/--verbose` lets it through.

Each notice is named by its logger (or warning module) and its message, never by a whole
category: a warning about the user's run (Unsloth's import order, a deprecated config key, a
CUDA problem) still shows. Nothing here imports an ML library: Unsloth must come before
transformers, peft and trl, and the stage that trains imports it first.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

import click

# environment defaults, read by the libraries when they first log or show a bar
ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# (module regex, message regex) of Python warnings that say nothing about the user's run
NOISY_WARNINGS = ((r"transformers\.", r".*`torch_dtype` is deprecated"),)
# (logger, message regex) of log records that say nothing about the user's run
NOISY_LOGS = (
    # torchao registers its enums through torch's pytree, a deprecation notice of torchao's own code
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported by torch\.compile"),
    # bitsandbytes looks for an optional package of CPU kernels that distill never uses
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU \w+ from kernels-community"),
    # distill's padding-free batches train to the loss of padded ones under sdpa (tests/test_train.py)
    ("trl.trainer.sft_trainer", r"Padding-free training is enabled, but the attention implementation is not set"),
)
# loggers whose records below ERROR are repair notices about a file that distill reports itself
# (pypdf: "Ignoring wrong pointing object ..." for a damaged PDF, read best effort or skipped with one line)
QUIET_LOGGERS = ("pypdf",)


class DropMessages(logging.Filter):
    """Drops records whose message matches one of `patterns`; the logger's other records pass."""

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


_installed: dict = {"env": [], "warnings": [], "filters": [], "levels": []}


def quiet_libraries() -> None:
    """Hide the notices above (idempotent); `show_libraries` undoes it."""
    show_libraries()
    for key, value in ENV.items():
        if key not in os.environ:
            os.environ[key] = value
            _installed["env"].append(key)
    for module, message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
        _installed["warnings"].append(warnings.filters[0])
    by_logger: dict[str, list[str]] = {}
    for name, message in NOISY_LOGS:
        by_logger.setdefault(name, []).append(message)
    for name, patterns in by_logger.items():
        drop = DropMessages(patterns)
        logging.getLogger(name).addFilter(drop)
        _installed["filters"].append((name, drop))
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        _installed["levels"].append((name, logger.level))
        logger.setLevel(logging.ERROR)


def show_libraries() -> None:
    """Let every library notice through again (`-v`): undo what quiet_libraries did."""
    for key in _installed["env"]:
        os.environ.pop(key, None)
    for entry in _installed["warnings"]:
        if entry in warnings.filters:
            warnings.filters.remove(entry)
    getattr(warnings, "_filters_mutated", lambda: None)()  # warnings caches its decisions per call site
    for name, drop in _installed["filters"]:
        logging.getLogger(name).removeFilter(drop)
    for name, level in _installed["levels"]:
        logging.getLogger(name).setLevel(level)
    for value in _installed.values():
        value.clear()


def _verbose(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        show_libraries()


def verbose_option(command):
    """`-v/--verbose` on a command: library warnings and notices are shown (before any library is imported)."""
    return click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_verbose, help="Show library warnings and notices (hidden by default).")(command)
