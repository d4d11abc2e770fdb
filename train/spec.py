"""The model a recipe trains, resolved once in its setup and read (never changed) by the loaders
(train/loading.py, train/unsloth_adapter.py) and by train/saving.py.

Configs say what the user asked for (`dtype: auto`, `max_seq_length: 2048`); a spec says what
this run does with it on this machine (bfloat16 autocast, 2048 clamped to a 1024-token model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    targets: tuple[str, ...]
    dtype: str = "float32"  # of the adapter's weights: float32 or bfloat16


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as the user named the base ('embedded', a hub id, a path): what adapter_config.json records
    path: str  # the base resolved to a local directory or a hub id
    method: str  # lora | qlora | 8bit | full
    dtype: torch.dtype  # what the weights are loaded in
    autocast_bf16: bool  # train under bfloat16 autocast (CPUs with AVX512-BF16 or AMX)
    max_seq_length: int  # the longest sequence trained, within the model's context
    lora: LoraSettings  # of a new adapter (unused for full fine-tuning and for an adapter trained further)
    gradient_checkpointing: bool | str  # the config's setting: True, False, "auto" or "unsloth"
    seed: int
    adapter: str | None = None  # a saved LoRA adapter to train further (GRPO from an SFT output)

    @property
    def quantized(self) -> bool:
        return self.method in ("qlora", "8bit")
