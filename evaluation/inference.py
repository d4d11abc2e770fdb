"""Load a model for generation (embedded, hub id, merged directory or LoRA adapter directory);
its answers come from `common.generation`. Used by `distill ask`, `chat` and `eval`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from common.models import resolve_model


def load_model(name: str, device: str | None = None):
    """(model, tokenizer) ready for batched generation; adapters are loaded onto their base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.teacher.engine import register_decode_attention

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    # on CPU, one-token decode steps use the einsum attention the local teacher uses (SDPA repeats KV heads)
    options = {"dtype": dtype, "attn_implementation": register_decode_attention() if device == "cpu" else None}
    path = resolve_model(name)
    adapter = Path(path) / "adapter_config.json"
    base = path
    if adapter.exists():
        from peft import PeftModel

        base = resolve_model(adapter_base(Path(path)))
        model = AutoModelForCausalLM.from_pretrained(base, **options)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **options)
    tokenizer = AutoTokenizer.from_pretrained(path if has_tokenizer(path) else base)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def adapter_base(adapter: Path) -> str:
    """The base model a PEFT adapter directory names."""
    return json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]


def has_tokenizer(path: str) -> bool:
    """A PEFT adapter directory saved by peft alone carries no tokenizer: use its base's then."""
    folder = Path(path)
    return not folder.is_dir() or any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
