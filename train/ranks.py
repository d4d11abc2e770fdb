"""One run in several processes (data-parallel, under `torchrun` or `accelerate launch`): every
rank trains on its share of each batch, rank 0 alone writes the output directory, and the few
things that must agree across ranks (the output check, the token count, a Ctrl-C) are
synchronised here. In a single process every helper is a no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def main_first():
    """Rank 0 runs the block before the others, which then see what it wrote or removed."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState  # sets up the process group the Trainer will use

    with PartialState().main_process_first():
        yield


def wait_for_all() -> None:
    """Returns once every rank has called it."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def leave() -> None:
    """The end of a run, on every rank: all wait until rank 0 has written it, then the process group closes.
    Left to interpreter exit, gloo's threads can abort a rank ("terminate called without an active exception",
    seen once in CI on a finished two-process run)."""
    if world_size() == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _reduce(values: list[int], op: str) -> list[int]:
    import torch
    import torch.distributed as dist

    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.as_tensor([int(v) for v in values], dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
    return tensor.tolist()


def total(value) -> int:
    """The sum over ranks of an integer each rank counted (call it on every rank)."""
    return _reduce([value], "SUM")[0] if world_size() > 1 else int(value)


def anywhere(flag: bool) -> bool:
    """True on every rank when it is true on one (call it on every rank)."""
    return bool(_reduce([flag], "MAX")[0]) if world_size() > 1 else flag


def least(*values: int) -> list[int]:
    """Each value's minimum over ranks, in one exchange (call it on every rank)."""
    return _reduce(list(values), "MIN") if world_size() > 1 else [int(v) for v in values]
