"""Load a model for generation (embedded, hub id, merged directory or LoRA adapter directory)
and answer batches of chat prompts with transformers. Used by `distill ask`, `chat` and `eval`.
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

        base = resolve_model(json.loads(adapter.read_text())["base_model_name_or_path"])
        model = AutoModelForCausalLM.from_pretrained(base, **options)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **options)
    tokenizer = AutoTokenizer.from_pretrained(path if has_tokenizer(path) else base)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def has_tokenizer(path: str) -> bool:
    """A PEFT adapter directory saved by peft alone carries no tokenizer: use its base's then."""
    folder = Path(path)
    return not folder.is_dir() or any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))


def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 256, batch_size: int = 16, temperature: float = 0.0) -> list[str]:
    """Answer each conversation (greedy by default); results keep the input order."""
    return generate_counted(model, tokenizer, conversations, max_new_tokens, batch_size, temperature)[0]


@torch.inference_mode()
def generate_counted(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 256, batch_size: int = 16, temperature: float = 0.0) -> tuple[list[str], list[int]]:
    """`generate`, plus the number of tokens written for each answer (up to and including EOS)."""
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    counts: list[int] = [0] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        sample = temperature > 0
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
        for i, row in zip(idx, out[:, enc["input_ids"].shape[1] :]):
            answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            counts[i] = written_tokens(row.tolist(), tokenizer)
    return answers, counts


def written_tokens(ids: list[int], tokenizer) -> int:
    """Tokens a row really wrote: up to its first EOS (included); the padding after it is not counted."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    end = next((n for n, t in enumerate(ids) if t in stops), None)
    return len(ids) if end is None else end + 1
