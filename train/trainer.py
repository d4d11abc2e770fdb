"""The Trainer class `distill train` builds: TRL's SFTTrainer (Unsloth's patched one when Unsloth
was imported first), plus the token count behind the tokens/s figures and the split of padded
micro-batches over a token budget.

TRL 1.15's SFTTrainer computes its loss through a Triton kernel (a fused, chunked LM head).
On a GPU that is what runs. Without a GPU that kernel cannot run (Triton has no CPU driver),
so on CPU the hf backend uses the model's own loss: its forward with `labels`
(transformers' causal-LM cross-entropy, normalised by the labelled tokens of the whole
accumulated batch).
"""

from __future__ import annotations

import contextlib

import torch
from trl import SFTTrainer

from train import ranks
from train.shapes import fixed_parts


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


def split_rows(inputs: dict, budget: int | None) -> list[dict]:
    """A padded batch of more than `budget` tokens (rows x padded length) as parts under it, each
    without its all-pad columns. Rows go longest first into parts of equal size, a power of two
    (a row longer than the budget alone): Unsloth's compiled decoder blocks then see few batch
    sizes, where parts of any size recompiled them mid-run (12 s for one step on an H200).
    Under torchrun every rank trains as many parts, the smallest size any rank needs: TRL's loss
    gathers its metrics from all ranks on every call, and unequal counts hung the run."""
    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    if not budget or mask is None or ids.dim() != 2 or (ids.numel() <= budget and ranks.world_size() == 1):
        return [inputs]
    lengths = mask.sum(dim=1).tolist()
    size = len(lengths) if ids.numel() <= budget else part_size(max(lengths), len(lengths), budget)
    size, fewest_rows, minus_most_rows = ranks.least(size, len(lengths), -len(lengths))
    if size >= len(lengths) or fewest_rows != -minus_most_rows:  # ranks holding unequal rows would still differ: keep whole
        return [inputs]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [_rows(inputs, torch.tensor(sorted(order[i : i + size])), len(lengths)) for i in range(0, len(order), size)]


def part_size(longest: int, rows: int, budget: int) -> int:
    """Rows per part: the largest power of two below `rows` whose parts of `longest` tokens fit the budget (at least 1)."""
    size = 1
    while size * 2 < rows and size * 2 * longest <= budget:
        size *= 2
    return size


def _rows(inputs: dict, rows: torch.Tensor, n: int) -> dict:
    keep = inputs["attention_mask"][rows].bool().any(dim=0)  # columns holding a real token (either padding side)
    part = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n:
            value = value[rows.to(value.device)]
            if value.dim() >= 2 and value.shape[1] == keep.shape[0]:
                value = value[:, keep.to(value.device)]
        part[key] = value
    return part


class SplitBatches:
    """Trains a padded micro-batch over `distill_batch_tokens` as several smaller ones, or, with
    `distill_fixed_shapes`, every padded micro-batch as parts of a few fixed shapes (train/shapes.py).
    The loss of each is summed over its tokens and divided by the whole batch's count
    (num_items_in_batch), so their gradients add up to the undivided batch's; only the peak memory
    and the shapes change."""

    distill_batch_tokens: int | None = None
    distill_fixed_shapes: bool = False

    def training_step(self, model, inputs, num_items_in_batch=None):
        parts = [inputs]
        if num_items_in_batch is not None:
            shaped = None
            if self.distill_fixed_shapes:  # new positions hold the pad token, as the collator pads
                shaped = fixed_parts(inputs, self.distill_batch_tokens, getattr(self.processing_class, "pad_token_id", None) or 0)
            parts = shaped or split_rows(inputs, self.distill_batch_tokens)
        if len(parts) == 1:
            return super().training_step(model, parts[0], num_items_in_batch)
        losses = []
        for i, part in enumerate(parts):  # data-parallel: gradients are exchanged after the last part only
            last = i == len(parts) - 1
            with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
                losses.append(super().training_step(model, part, num_items_in_batch))
        return torch.stack(losses).sum()


class ResumeOnCPUProcesses:
    """transformers loads a checkpoint's optimizer state onto `args.device` when several processes
    train; on CPU that is "cpu:0", a location torch.load cannot restore to. Loads it onto "cpu"."""

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None or self.args.world_size == 1 or self.args.device.type != "cpu":
            return super()._load_optimizer_and_scheduler(checkpoint)
        load = torch.load

        def load_on_cpu(*args, map_location=None, **kwargs):
            return load(*args, map_location="cpu" if str(map_location).startswith("cpu") else map_location, **kwargs)

        torch.load = load_on_cpu
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        finally:
            torch.load = load


class CPUSFTTrainer(SFTTrainer):
    """SFTTrainer with the model's own loss, for machines where TRL's Triton loss cannot run."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, use_cache=False, num_items_in_batch=num_items_in_batch)
        loss = outputs.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every rank's tokens, and data-parallel averages the ranks' gradients: scaled
            # back by the processes, as transformers' own compute_loss does (without it, under torchrun on CPU the
            # logged loss and the gradient were 1/N of one process's on the same records)
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


def trainer_class(backend: str, gpu: bool) -> type:
    """Unsloth's or TRL's SFTTrainer; the CPU variant for the hf backend without a GPU."""
    base = CPUSFTTrainer if backend == "hf" and not gpu else SFTTrainer
    return type("DistillSFTTrainer", (CountTokens, SplitBatches, ResumeOnCPUProcesses, base), {})
