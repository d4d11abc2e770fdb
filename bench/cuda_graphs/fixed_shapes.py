"""Experiment only (issue 26, CUDA graphs): train a padded micro-batch as parts of a few FIXED shapes.

distill's SplitBatches (train/trainer.py) trains a padded batch over `max_batch_tokens` as parts of
`size` rows, each cut to its own longest row: every step brings new (rows, length) shapes, so a CUDA
graph recorded for one shape is rarely replayed (Unsloth caps its per-block graphs at 8 shapes a layer
kind, then turns them off). Here a batch goes into parts of one shape (R, L) from a small menu:
  L = the smallest bucket >= the batch's longest real row (buckets: DEFAULT_BUCKETS or DISTILL_SHAPE_BUCKETS)
  R = min(rows rounded up to a power of two, the largest power of two with R x L <= budget), at least 1
Rows go longest first into parts of R; a part short of R rows gets filler rows (one real token, the
batch's first, and no label), columns are padded to L (input_ids: the batch's pad id, attention_mask 0,
labels -100). So the shapes are at most len(buckets); the update is unchanged (fillers carry no label,
padded columns are masked; num_items_in_batch stays the whole batch's). Right padding is assumed (TRL's
collator); a batch that is not right-padded is trained as distill would (counted as `fallback`).
"""

from __future__ import annotations

import collections

DEFAULT_BUCKETS = "256,512,768,1024,1280,1536,2048"
PER_PART = [False]  # DISTILL_SHAPE_PER_PART=1: each part padded to its own bucket, R still from the batch
STATS = {
    "batches": 0,
    "parts": 0,
    "filler_rows": 0,
    "real_tokens": 0,
    "part_tokens": 0,
    "fallback": 0,
    "shapes": collections.Counter(),
}


def pow2_floor(x: int) -> int:
    p = 1
    while p * 2 <= x:
        p *= 2
    return p


def pow2_ceil(x: int) -> int:
    p = 1
    while p < x:
        p *= 2
    return p


def plan(lengths: list[int], budget: int, buckets: list[int]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """(row indices of each part, longest first; (R, L) of each part) for rows of these real lengths."""
    longest = max(lengths)
    fitting = [b for b in sorted(buckets) if b >= longest]
    L = fitting[0] if fitting else -(-longest // 256) * 256
    R = max(1, min(pow2_ceil(len(lengths)), pow2_floor(max(1, budget // L))))
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    parts = [order[i : i + R] for i in range(0, len(order), R)]
    if not PER_PART[0]:
        return parts, [(R, L)] * len(parts)
    shapes = []  # each part cut to the smallest bucket over its own longest row (more shapes, less padding)
    for part in parts:
        top = max(lengths[i] for i in part)
        shapes.append((R, min([b for b in buckets if b >= top] or [L])))
    return parts, shapes


def right_padded(mask) -> bool:
    """Every row's real tokens come first (no 0 before a 1)."""

    m = mask.bool()
    return bool((m[:, 1:] <= m[:, :-1]).all()) if m.shape[1] > 1 else True


def fixed_parts(inputs: dict, budget: int, buckets: list[int]) -> list[dict] | None:
    """The batch as parts of one fixed shape, or None where it cannot be (no mask, not right-padded)."""
    import torch

    ids, mask = inputs.get("input_ids"), inputs.get("attention_mask")
    if ids is None or mask is None or ids.dim() != 2 or not right_padded(mask):
        STATS["fallback"] += 1
        return None
    n, T = ids.shape
    lengths = mask.sum(dim=1).tolist()
    rows, shapes = plan(lengths, budget, buckets)
    R, L = shapes[0]
    pads = ids[mask == 0]
    pad_id = int(pads[0]) if pads.numel() else 0
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}
    parts = []
    for idx in rows:
        part = {}
        sel = torch.tensor(idx, device=ids.device)
        for key, value in inputs.items():
            if not (isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n):
                part[key] = value
                continue
            v = value[sel]
            if v.dim() >= 2 and v.shape[1] == T:
                if T < L:
                    pad = v.new_full((v.shape[0], L - T, *v.shape[2:]), fill.get(key, 0))
                    v = torch.cat([v, pad], dim=1)
                elif T > L:  # cannot happen: L >= the longest real row and the rows are right-padded
                    v = v[:, :L]
            if v.shape[0] < R:  # filler rows: the first token of the batch, attended, no label
                extra = v.new_full((R - v.shape[0], *v.shape[1:]), fill.get(key, 0))
                if key == "input_ids":
                    extra[:, 0] = ids[0, 0]
                if key == "attention_mask":
                    extra[:, 0] = 1
                v = torch.cat([v, extra], dim=0)
            part[key] = v
        parts.append(part)
    STATS["batches"] += 1
    STATS["parts"] += len(parts)
    STATS["filler_rows"] += len(parts) * R - n
    STATS["real_tokens"] += int(sum(lengths))
    STATS["part_tokens"] += len(parts) * R * L
    STATS["shapes"][f"{R}x{L}"] += len(parts)
    return parts


def training_step(self, model, inputs, num_items_in_batch=None, _budget=None, _buckets=None):
    """SplitBatches.training_step with fixed-shape parts (every batch, also one that fits in one part)."""
    import contextlib

    import torch

    budget = _budget or self.distill_batch_tokens or 8192
    parts = fixed_parts(inputs, budget, _buckets) if num_items_in_batch is not None else None
    base = super(_SPLIT_CLASS[0], self)  # the class after SplitBatches in the trainer's MRO
    if parts is None:
        return _ORIGINAL[0](self, model, inputs, num_items_in_batch)
    losses = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            losses.append(base.training_step(model, part, num_items_in_batch))
    return torch.stack(losses).sum()


_SPLIT_CLASS: list = [None]
_ORIGINAL: list = [None]


def install(trainer_module, budget: int | None, buckets: list[int]) -> None:
    """Replace train.trainer.SplitBatches.training_step (looked up at call time by every trainer class)."""
    cls = trainer_module.SplitBatches
    _SPLIT_CLASS[0], _ORIGINAL[0] = cls, cls.training_step

    def patched(self, model, inputs, num_items_in_batch=None):
        return training_step(self, model, inputs, num_items_in_batch, budget, buckets)

    patched.__wrapped__ = cls.training_step
    cls.training_step = patched
