"""The Trainer class `distill train` builds: TRL's SFTTrainer (Unsloth's patched one when Unsloth
was imported first), plus the token count behind the tokens/s figures.

TRL 1.15's SFTTrainer computes its loss through a Triton kernel (a fused, chunked LM head).
On a GPU that is what runs. Without a GPU that kernel cannot run (Triton has no CPU driver),
so on CPU the hf backend uses the model's own loss: its forward with `labels`
(transformers' causal-LM cross-entropy, normalised by the labelled tokens of the whole
accumulated batch).
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from train import ranks


class CountTokens:
    """Counts the real tokens of every training micro-batch; logs the running total as num_tokens."""

    distill_tokens: torch.Tensor | int = 0

    def training_step(self, model, inputs, *args, **kwargs):
        mask = inputs.get("attention_mask")
        # padding-free batches hold real tokens only: their size needs no device sync
        self.distill_tokens = self.distill_tokens + (mask.sum() if mask is not None else inputs["input_ids"].numel())
        return super().training_step(model, inputs, *args, **kwargs)

    def log(self, logs, *args, **kwargs):
        if "loss" in logs:  # every rank logs the same steps, so the sum over ranks is safe here
            logs["num_tokens"] = ranks.total(self.distill_tokens)
        return super().log(logs, *args, **kwargs)


class CPUSFTTrainer(SFTTrainer):
    """SFTTrainer with the model's own loss, for machines where TRL's Triton loss cannot run."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, use_cache=False, num_items_in_batch=num_items_in_batch)
        return (outputs.loss, outputs) if return_outputs else outputs.loss


def trainer_class(backend: str, gpu: bool) -> type:
    """Unsloth's or TRL's SFTTrainer; the CPU variant for the hf backend without a GPU."""
    base = CPUSFTTrainer if backend == "hf" and not gpu else SFTTrainer
    return type("DistillSFTTrainer", (CountTokens, base), {})
