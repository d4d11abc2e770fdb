"""Run a command of the CLI and SIGKILL it in the middle of a write to its output directory: a test
wrapper, no part of distill.

    python tests/crashpoints.py train DATA --out OUT ...      # = python -m distill train ..., with crash points

Every write under OUT is an event, counted in order: a file saved by torch.save or safetensors,
a file opened for writing or appending (metrics.jsonl, trainer_state.json, tokenizer files,
loss.png), a folder removed (checkpoint rotation, the final clean-up) and a file moved into
place (the atomic writes: COMPLETE markers, train_config.json, run.json).
DISTILL_CRASH_AT=N kills the process at the N-th event (N:REGEX: the N-th whose `kind path`
matches REGEX, e.g. `1:rmtree .*/checkpoints$` for the final clean-up), leaving that write half
done: a file saved then cut to a random share of its bytes, a file opened for writing and left
empty (one opened for appending, untouched), a folder with its files removed but for COMPLETE
markers (the worst order an rmtree can take), a file not yet moved into place (its temporary
file left). DISTILL_CRASH_LOG=path appends one line per event (`kind path`).
"""

from __future__ import annotations

import builtins
import io
import os
import random
import re
import runpy
import shutil
import signal
import sys
from pathlib import Path

OUT = Path(sys.argv[sys.argv.index("--out") + 1]).resolve() if "--out" in sys.argv else None
AT, _, PATTERN = (os.environ.get("DISTILL_CRASH_AT") or "0").partition(":")
LOG = os.environ.get("DISTILL_CRASH_LOG")
RNG = random.Random(AT + PATTERN)
seen = 0


def event(kind: str, path) -> bool:
    """Count one write; True when this one is to be cut short (the caller does so, then calls die())."""
    global seen
    if OUT is None or not Path(os.fspath(path)).resolve().is_relative_to(OUT):
        return False
    if LOG:
        with real_open(LOG, "a") as handle:
            handle.write(f"{kind} {path}\n")
    if PATTERN and not re.search(PATTERN, f"{kind} {path}"):
        return False
    seen += 1
    return seen == int(AT)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def cut(path) -> None:
    """Keep a random share of a written file's bytes."""
    size = os.path.getsize(path)
    os.truncate(path, int(size * RNG.random()))
    die()


real_open, real_io_open, real_rmtree, real_replace = builtins.open, io.open, shutil.rmtree, os.replace


def opened(file, mode: str) -> None:
    """An open for writing or appending is an event; cut short, a written file is left empty."""
    if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and event("open", file):
        if "a" not in mode:
            real_open(file, "wb").close()
        die()


def patched_open(file, mode="r", *args, **kwargs):
    opened(file, mode)
    return real_open(file, mode, *args, **kwargs)


def patched_io_open(file, mode="r", *args, **kwargs):
    opened(file, mode)
    return real_io_open(file, mode, *args, **kwargs)


def patched_rmtree(path, *args, **kwargs):
    if event("rmtree", path):
        for p in Path(path).rglob("*"):
            if p.is_file() and p.name != "COMPLETE":
                p.unlink()
        die()
    return real_rmtree(path, *args, **kwargs)


def patched_replace(src, dst, *args, **kwargs):
    if event("replace", dst):
        die()
    return real_replace(src, dst, *args, **kwargs)


def install() -> None:
    import safetensors.torch
    import torch

    real_torch_save, real_save_file = torch.save, safetensors.torch.save_file

    def torch_save(obj, f, *args, **kwargs):
        hit = isinstance(f, (str, os.PathLike)) and event("torch.save", f)
        real_torch_save(obj, f, *args, **kwargs)
        if hit:
            cut(f)

    def save_file(tensors, filename, *args, **kwargs):
        hit = event("safetensors", filename)
        real_save_file(tensors, filename, *args, **kwargs)
        if hit:
            cut(filename)

    torch.save, safetensors.torch.save_file = torch_save, save_file
    builtins.open, io.open, shutil.rmtree, os.replace = patched_open, patched_io_open, patched_rmtree, patched_replace


if __name__ == "__main__":
    install()
    sys.argv = ["distill", *sys.argv[1:]]
    runpy.run_module("distill", run_name="__main__", alter_sys=True)
