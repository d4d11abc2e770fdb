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
from train.spec import LoraSettings, ModelSpec

QUANTIZED = ("qlora", "8bit")


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX, with torch's AVX-512 kernels in use: bfloat16 matrix products run natively
    (faster than float32). Under lower kernels (ATEN_CPU_CAPABILITY=avx2, as on a CPU without
    AVX-512) bfloat16 is emulated: a LoRA step on the embedded student took minutes, not seconds."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    native = "AVX512" in torch.backends.cpu.get_cpu_capability()
    return native and (" avx512_bf16" in flags or " amx_bf16" in flags)


def resolve_dtype(dtype: str) -> tuple[torch.dtype, bool]:
    """(dtype the weights are loaded in, whether to train under bfloat16 autocast) for the config's `dtype`."""
    if dtype != "auto":
        chosen = getattr(torch, dtype)
        return (chosen, False) if device() == "cuda" else (torch.float32, chosen == torch.bfloat16)
    if device() == "cuda":
        return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), False
    return torch.float32, cpu_has_bf16()


def check_method(method: str) -> None:
    """qlora and 8bit need bitsandbytes on a CUDA GPU; say so before anything is loaded."""
    if method not in QUANTIZED:
        return
    if device() != "cuda":
        raise UserError(
            f"--method {method} quantizes the base with bitsandbytes, which needs a CUDA GPU; none is visible here: "
            "use --method lora"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"--method {method} needs bitsandbytes: pip install bitsandbytes (or use --method lora)")


def resolve_optim(optim: str) -> str:
    """auto: Adam with 8-bit state (bitsandbytes) on a CUDA GPU, as Unsloth's notebooks train; adamw_torch elsewhere."""
    if optim != "auto":
        return optim
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


def seq_len(requested: int, explicit: bool, path: str) -> int:
    """The max_seq_length to train with: an explicit one beyond the model's context is an error; the default
    is clamped to it."""
    limit = model_context(path)
    if not limit or requested <= limit:
        return requested
    if explicit:
        raise UserError(
            f"max_seq_length={requested} is longer than the model supports ({limit} tokens); "
            f"pass --max-seq-length {limit} or less"
        )
    return limit


def quantization(spec: ModelSpec):
    from transformers import BitsAndBytesConfig

    if spec.method == "qlora":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=spec.dtype,
        )
    if spec.method == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def lora_config(lora: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_hf(spec: ModelSpec):
    """(model ready for training, tokenizer) with transformers + PEFT: a new LoRA adapter on the base, the
    spec's adapter trained further, or (full) the base itself."""
    from transformers import AutoTokenizer

    model = load_hf_base(spec)
    if spec.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter, is_trainable=True)
    elif spec.method != "full":
        from peft import get_peft_model

        model = cast_adapter(get_peft_model(model, lora_config(spec.lora)), spec.lora)
    return model, AutoTokenizer.from_pretrained(spec.path)


def cast_adapter(model, lora: LoraSettings):
    """A new adapter's trainable weights in lora.dtype (PEFT and Unsloth make them float32), in place, before
    any optimizer sees them: bfloat16 halves the adapter's weights and gradients (and the 8-bit Adam state
    follows the weights)."""
    if lora.dtype == "bfloat16":
        for param in model.parameters():
            if param.requires_grad and param.is_floating_point():
                param.data = param.data.to(torch.bfloat16)
    return model


def load_hf_base(spec: ModelSpec):
    """The base model in the spec's dtype and quantisation (prepared for k-bit training if quantised)."""
    from transformers import AutoModelForCausalLM

    quant = quantization(spec)
    model = AutoModelForCausalLM.from_pretrained(
        spec.path,
        dtype=spec.dtype,
        attn_implementation="sdpa",
        quantization_config=quant,
        device_map={"": 0} if quant is not None else None,
    )
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        checkpointing = use_checkpointing(spec.gradient_checkpointing)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    return model


def use_checkpointing(setting: bool | str) -> bool:
    """auto: on for GPUs (memory is the limit there), off on CPU (time is)."""
    if setting == "auto":
        return device() == "cuda"
    return setting is not False
