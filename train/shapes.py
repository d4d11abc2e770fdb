"""Padded micro-batches as parts of a few fixed shapes (`fixed_shapes`).

The default split (trainer.split_rows) cuts each part to its own longest row, so nearly every step
brings the compiled decoder blocks and cuDNN's attention a (rows, length) they have not seen: 74
shapes in the 50 steps of the 1.17B benchmark. Here a batch goes into parts of one shape: a length
from LENGTHS that holds its longest row, and a power of two of rows that fits the token budget.
A part short of rows gets filler rows (one attended token, no label) and every part is padded to
the length (no attention, no label), so the loss and the gradients are the batch's: the loss is
summed over labelled tokens and divided by the whole batch's count, as in every split.

The padding is arithmetic spent on nothing (1.43x the real tokens on that benchmark), so it could pay
only where a step waits on the host rather than the GPU (small models). It is off by default: the
gain first read for it (+11-12% tokens/s, 1.17B LoRA on an H100) came from runs made after the
default's in the same call, and through distill, in either order, it read 0.97x and 1.03x of the
default (docs/benchmarks.md).
"""

from __future__ import annotations

import torch

from train import ranks

LENGTHS = (256, 512, 768, 1024, 1280, 1536, 2048)  # a part's padded length; past these, multiples of 512
FILL = {"labels": -100}  # a padded or filler position's value (input_ids: the pad id fixed_parts is given; else 0)


def shaped_length(longest: int) -> int:
    """The padded length of a part whose longest row has `longest` tokens."""
    return next((n for n in LENGTHS if n >= longest), -(-longest // 512) * 512)


def fixed_parts(inputs: dict, budget: int | None, pad_id: int = 0) -> list[dict] | None:
    """The batch as parts of one shape (rows x length <= budget where it can be), longest rows first; None
    where it cannot be shaped: no attention mask, left padding, or ranks holding unequal rows. Every rank
    pads to the longest length any rank needs, so all train as many parts of the same shape; every rank
    makes the same one exchange, whatever its batch, so none waits on another."""
    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    shapeable = mask is not None and ids.dim() == 2 and right_padded(mask)
    n = ids.shape[0]
    lengths = mask.sum(dim=1).tolist() if shapeable else [1]
    agreed = ranks.least(int(shapeable), -shaped_length(max(lengths)), n, -n)
    everywhere, minus_length, fewest_rows, minus_most_rows = agreed
    if not everywhere or fewest_rows != -minus_most_rows:
        return None
    length, rows = -minus_length, 1
    while rows < n and (budget is None or rows * 2 * length <= budget):
        rows *= 2
    order = sorted(range(n), key=lambda i: -lengths[i])
    fill = {**FILL, "input_ids": pad_id}
    return [_shaped(inputs, order[i : i + rows], rows, length, fill) for i in range(0, n, rows)]


def right_padded(mask: torch.Tensor) -> bool:
    """Every row's real tokens come first (no 0 before a 1)."""
    return mask.shape[1] < 2 or bool((mask[:, 1:] <= mask[:, :-1]).all())


def _shaped(inputs: dict, picked: list[int], rows: int, length: int, fill: dict) -> dict:
    """These rows of the batch as a part of `rows` x `length`: columns cut or padded to `length` (only padding
    is cut: the length holds the longest row), filler rows added (the batch's first token, attended, no label);
    a new position holds its key's `fill` value (0 for a key it does not name)."""
    ids = inputs["input_ids"]
    n, width = ids.shape
    index, part = torch.tensor(picked, device=ids.device), {}
    for key, value in inputs.items():
        if not (isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n):
            part[key] = value
            continue
        value = value[index.to(value.device)]
        if value.dim() >= 2 and value.shape[1] == width:
            if width >= length:
                value = value[:, :length]
            else:
                pad = value.new_full((value.shape[0], length - width, *value.shape[2:]), fill.get(key, 0))
                value = torch.cat([value, pad], dim=1)
        if len(picked) < rows:
            filler = value.new_full((rows - len(picked), *value.shape[1:]), fill.get(key, 0))
            if key in ("input_ids", "attention_mask") and filler.dim() >= 2:
                filler[:, 0] = ids[0, 0] if key == "input_ids" else 1
            value = torch.cat([value, filler])
        part[key] = value
    return part
