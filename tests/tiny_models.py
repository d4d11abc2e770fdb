"""Tiny random students for fast tests: a 2-layer Llama (hidden 32) with the embedded SmolLM2
tokenizer, saved as a merged directory or as a PEFT LoRA adapter made with peft directly."""

from __future__ import annotations

from pathlib import Path

import torch

from common.models import resolve_model


def one_thread():
    """Tiny models run fastest on one thread; with two, a busy 2-core machine makes each step
    40x slower (thread contention). A pytest fixture of the test modules calls this."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return previous


def tiny_model(folder: Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded"))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_adapter(folder: Path, base: Path) -> Path:
    """A LoRA adapter on `base`, saved by peft alone (no tokenizer in the directory)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder)
    return folder


def record(
    n: int,
    question: str,
    answer: str,
    context: str = "A passage about loops.",
    reasoning: str = "Because the passage says so.",
    split: str = "test",
    record_id: str | None = None,
) -> dict:
    """A record valid under schemas/record.schema.json."""
    return {
        "id": record_id or f"{n:016x}",
        "question": question,
        "reasoning": reasoning,
        "answer": answer,
        "evidence": context[:20],
        "context": context,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"},
        ],
        "source": {"doc": "doc.md", "chunk": n, "start": 0, "end": len(context)},
        "teacher": {"backend": "local", "model": "embedded"},
        "split": split,
    }
