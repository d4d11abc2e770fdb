"""In-process vLLM, shared by the stages that can generate with it (gen's `vllm` teacher,
`distill eval --engine vllm`): whether it can run here, its import with a one-line error, and a
LoRA adapter as vLLM serves it. vLLM is an optional extra, imported only where it is chosen."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

from common.errors import UserError

INSTALL = "pip install 'distill[vllm]'"
# the ranks vLLM's LoRA config accepts as max_lora_rank (vllm/config/lora.py)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def available() -> bool:
    """vLLM is installed and a CUDA GPU is visible (what `auto` asks before choosing vLLM)."""
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def import_vllm(who: str, instead: str):
    """The vllm module; without it, a UserError naming who needed it and what to use instead."""
    try:
        import vllm
    except ImportError as exc:
        raise UserError(
            f"{who} needs vLLM, which is not installed ({exc.name} missing); {INSTALL}, or {instead}"
        ) from None
    return vllm


def lora_rank(adapter: Path) -> int:
    """The LoRA rank of a PEFT adapter directory (adapter_config.json's r)."""
    return int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 8))


def max_lora_rank(ranks: list[int]) -> int:
    """The smallest max_lora_rank vLLM accepts that holds every rank (an adapter of a larger rank is refused)."""
    wanted = max(ranks, default=1)
    fitting = [r for r in LORA_RANKS if r >= wanted]
    if not fitting:
        raise UserError(
            f"a LoRA adapter of rank {wanted} is beyond vLLM's largest ({LORA_RANKS[-1]}); use engine=transformers"
        )
    return fitting[0]


def lora_request(vllm_module, name: str, number: int, adapter: Path):
    """vLLM's LoRARequest for an adapter directory (`number` is its id in the engine, from 1)."""
    request = importlib.import_module(f"{vllm_module.__name__}.lora.request")
    return request.LoRARequest(name, number, str(adapter))
