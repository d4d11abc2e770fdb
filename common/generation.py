"""Batched answers of a loaded model to chat prompts (transformers `generate`, greedy by default):
what `distill eval` grades, and what training's recall probe asks between epochs."""

from __future__ import annotations

import torch


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
