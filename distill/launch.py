"""`distill train --gpus N` (and `distill grpo --gpus N`): one data-parallel run of N processes on this
machine, launched by distill itself. The command replaces itself (exec) with
`python -m torch.distributed.run --standalone --nproc_per_node N -m distill <the same arguments>`, so
torchrun's own handling of signals, exit codes and failed ranks applies unchanged; inside that launch
(torchrun sets LOCAL_RANK and WORLD_SIZE) `gpus` is not looked at again, and the ranks run as under a
torchrun typed by hand (train/ranks.py: rank 0 alone writes the output directory and reports).

Several machines: run torchrun on each yourself (docs/scale.md); this launcher is for one machine.
"""

from __future__ import annotations

import os
import sys

from common.errors import UserError

# set to 1, `--gpus N` on a machine without a CUDA GPU starts N CPU processes (gloo): how the tests run it
CPU_PROCESSES_ENV = "DISTILL_CPU_PROCESSES"
ARGV: list[str] | None = None  # the arguments `distill` was called with (set by distill.cli.main)


def inside_launch() -> bool:
    """Whether this process is a rank of a distributed launch (torchrun, accelerate launch)."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE") or "1") > 1  # WORLD_SIZE=1 alone: no launch


def relaunch(gpus: int) -> None:
    """With gpus > 1 outside a launch: check the devices, then become torchrun running this same command
    on `gpus` processes (never returns). Otherwise return at once."""
    if gpus <= 1 or inside_launch():
        return
    check_devices(gpus)
    argv = ARGV if ARGV is not None else sys.argv[1:]
    command = launch_command(gpus, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def launch_command(gpus: int, argv: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(gpus),
        "-m",
        "distill",
        *argv,
    ]


def check_devices(gpus: int) -> None:
    """A one-line UserError unless `gpus` CUDA GPUs are visible (or CPU processes are asked for explicitly)."""
    import torch

    if torch.cuda.is_available():
        seen = torch.cuda.device_count()
        if gpus > seen:
            shown = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else ""
            visible = f"{seen} {'is' if seen == 1 else 'are'} visible{where}"
            raise UserError(f"--gpus {gpus} asks for {gpus} GPUs but {visible}; pass --gpus {seen} or fewer")
        return
    if os.environ.get(CPU_PROCESSES_ENV) == "1":
        return
    raise UserError(
        f"--gpus {gpus} needs {gpus} CUDA GPUs and none is visible; drop --gpus to train in one process "
        f"(or set {CPU_PROCESSES_ENV}=1 to run {gpus} CPU processes, which the tests do)"
    )
