"""Load the student for training with plain transformers + PEFT (the `hf` backend), and the
checks both backends share: quantisation needs, dtype, sequence length.

lora: 16-bit (or float32 on CPU) base + LoRA; qlora: 4-bit NF4 base + LoRA; 8bit: int8 base +
LoRA (both through bitsandbytes, CUDA only); full: every weight trainable.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from common.errors import UserError

QUANTIZED = ("qlora", "8bit")


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bfloat16 matrix products run natively (faster than float32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(cfg) -> tuple[torch.dtype, bool]:
    """(dtype the weights are loaded in, whether to train under bfloat16 autocast)."""
    if cfg.dtype != "auto":
        chosen = getattr(torch, cfg.dtype)
        return (chosen, False) if device() == "cuda" else (torch.float32, chosen == torch.bfloat16)
    if device() == "cuda":
        return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), False
    return torch.float32, cpu_has_bf16()


def check_method(cfg) -> None:
    """qlora and 8bit need bitsandbytes on a CUDA GPU; say so before anything is loaded."""
    if cfg.method not in QUANTIZED:
        return
    if device() != "cuda":
        raise UserError(f"--method {cfg.method} quantizes the base with bitsandbytes, which needs a CUDA GPU; none is visible here: use --method lora")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"--method {cfg.method} needs bitsandbytes: pip install bitsandbytes (or use --method lora)")


def resolve_optim(cfg) -> str:
    """auto: Adam with 8-bit state (bitsandbytes) on a CUDA GPU, as Unsloth's notebooks train; adamw_torch elsewhere."""
    if cfg.optim != "auto":
        return cfg.optim
    if device() == "cuda" and importlib.util.find_spec("bitsandbytes") is not None:
        return "adamw_8bit"
    return "adamw_torch"


def model_context(path: str) -> int | None:
    """The longest sequence the model supports (max_position_embeddings), if its config says."""
    config_file = Path(path) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path).to_dict()
    config = config.get("text_config", config)
    return config.get("max_position_embeddings")


def check_seq_len(cfg, path: str) -> None:
    """An explicit max_seq_length beyond the model's context is an error; the default is clamped to it."""
    limit = model_context(path)
    if limit and cfg.max_seq_length > limit and "max_seq_length" not in cfg.model_fields_set:
        cfg.max_seq_length = limit
    elif limit and cfg.max_seq_length > limit:
        raise UserError(f"max_seq_length={cfg.max_seq_length} is longer than the model supports ({limit} tokens); pass --max-seq-length {limit} or less")


def quantization(cfg, dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    if cfg.method == "qlora":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    if cfg.method == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_hf(cfg, path: str):
    """(model ready for training, tokenizer) with transformers + PEFT."""
    from transformers import AutoTokenizer

    model = load_hf_base(cfg, path)
    if cfg.method != "full":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(cfg))
    return model, AutoTokenizer.from_pretrained(path)


def load_hf_base(cfg, path: str):
    """The base model in the dtype and quantisation cfg asks for (prepared for k-bit training if quantised)."""
    from transformers import AutoModelForCausalLM

    dtype, _ = resolve_dtype(cfg)
    quant = quantization(cfg, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        attn_implementation="sdpa",
        quantization_config=quant,
        device_map={"": 0} if quant is not None else None,
    )
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=use_checkpointing(cfg))
    return model


def load_hf_adapter(cfg, base: str, adapter: str):
    """The base with a saved LoRA adapter on it, trainable (to train an SFT adapter further)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(load_hf_base(cfg, base), adapter, is_trainable=True)


def use_checkpointing(cfg) -> bool:
    """auto: on for GPUs (memory is the limit there), off on CPU (time is)."""
    if cfg.gradient_checkpointing == "auto":
        return device() == "cuda"
    return cfg.gradient_checkpointing is not False
