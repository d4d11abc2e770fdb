"""Where the time and memory of a `distill train` step go: torch.profiler over a few steady steps.

  python bench/train_profile.py --data runs/bench/data --model runs/bench/llama-1b --report prof.txt \
      [--start 8 --steps 3] [--snapshot mem.pickle] [key=value ...]
  python bench/train_profile.py --stage grpo --data runs/bench-grpo/data --model runs/bench-grpo/llama-1b \
      --report grpo.txt max_completion_length=128 'rewards={"grpo_throughput:spaces": 1.0}'
  python bench/train_profile.py --stage trl --data runs/bench/data-long --model runs/bench/llama-8b \
      --report trl-8b.txt method=qlora lora_r=32 batch_size=8   # the baseline's step: plain TRL, as the bench runs it

Runs `distill train` (or `--stage grpo`, or with `--stage trl` the SFT bench's plain TRL + PEFT run, which takes
the overrides method, lora_r, batch_size and grad_accum) in this process (same config path as the CLI), profiles steps
start .. start+steps-1 and writes to --report: wall seconds per step, kernel (GPU) seconds per
step and the share of the wall time the GPU was busy, then the top operators by GPU time and by
host time. A GRPO step is labelled `distill.step` in the host-time table, its sampling and
rewards `distill.generate`; the update (log-probabilities, loss, backward) is the difference.
--python adds cProfile's view of the same steps (which Python functions the host time is spent in).
--snapshot records the CUDA allocator history of the profiled steps (torch.cuda.memory._dump_snapshot;
open it at https://pytorch.org/memory_viz) and adds to the report what was allocated at the highest
point of those steps, summed by the code that allocated it. On a CPU only the host table is meaningful.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def profiler_callback(a):
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class Profile(TrainerCallback):
        prof = None
        started = 0.0
        base = 0

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == a.start:
                sync()
                if a.snapshot:
                    self.base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    torch.cuda.memory._record_memory_history(max_entries=400_000, stacks="python")
                self.prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else []))
                self.prof.start()
                self.python = cProfile.Profile() if a.python else None
                if self.python:
                    self.python.enable()
                self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if self.prof is not None and state.global_step == a.start + a.steps:
                sync()
                wall = time.perf_counter() - self.started
                self.prof.stop()
                if self.python:
                    self.python.disable()
                peak = []
                if a.snapshot:
                    torch.cuda.memory._dump_snapshot(a.snapshot)
                    torch.cuda.memory._record_memory_history(enabled=None)
                    peak = live_at_peak(a.snapshot, self.base, torch.cuda.max_memory_allocated())
                write_report(a, self.prof, wall, peak, python_table(self.python) if self.python else [])
                self.prof = None

    return Profile()


def live_at_peak(snapshot: str, base: int, measured_peak: int, top: int = 25) -> list[str]:
    """Replay the allocator trace to its highest point; sum what was live there by allocating code line."""
    import pickle
    from collections import Counter

    events = [e for e in pickle.loads(Path(snapshot).read_bytes())["device_traces"][0] if e["action"] in ("alloc", "free_completed")]
    level = high = base
    at = -1
    for i, e in enumerate(events):
        level += e["size"] if e["action"] == "alloc" else -e["size"]
        if level > high:
            high, at = level, i
    live: dict[int, dict] = {}
    for e in events[: at + 1]:
        if e["action"] == "alloc":
            live[e["addr"]] = e
        else:
            live.pop(e["addr"], None)
    by_site = Counter()
    for e in live.values():
        by_site[site(e.get("frames", []))] += e["size"]
    gib = 2**30
    lines = [f"memory: {base / gib:.2f} GiB allocated before the profiled steps; replayed peak {high / gib:.2f} GiB "
             f"(torch.cuda.max_memory_allocated {measured_peak / gib:.2f}); allocated during the steps and live at the peak, by code:"]
    lines += [f"  {size / 2**20:9.1f} MiB  {where}" for where, size in by_site.most_common(top)]
    return lines + [""]


def site(frames: list[dict], depth: int = 3) -> str:
    """The innermost `depth` frames outside torch's own modules: the code that asked for the memory."""
    own = [f for f in frames if "/torch/" not in f["filename"] or "torchinductor" in f["filename"]]
    return " < ".join(f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in own[:depth]) or "(no python frame)"


def python_table(python, top: int = 45) -> list[str]:
    """The Python functions of the profiled steps by cumulative time (cProfile): where host time goes above torch's ops."""
    text = io.StringIO()
    pstats.Stats(python, stream=text).sort_stats("cumulative").print_stats(top)
    return ["", "python functions by cumulative time (cProfile, same steps; its own overhead included):", text.getvalue()]


def write_report(a, prof, wall: float, peak: list[str], python: list[str]) -> None:
    from torch.autograd import DeviceType

    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)  # kernels and copies only
    lines = [
        f"profiled steps: {a.steps} (from step {a.start}); config overrides: {' '.join(a.overrides)}",
        f"wall per step: {wall / a.steps:.3f} s; GPU kernel time per step: {kernel_us / 1e6 / a.steps:.3f} s; GPU busy {kernel_us / 1e6 / wall:.0%}",
        "",
        *peak,
        events.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=70),
        events.table(sort_by="cpu_time_total", row_limit=40, max_name_column_width=70),
        *python,
    ]
    Path(a.report).write_text("\n".join(lines))
    print("\n".join(lines[:2]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["sft", "grpo", "trl"], default="sft")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True, help="the model to train (sft) or to start from (grpo: --from)")
    p.add_argument("--report", required=True)
    p.add_argument("--out", default="runs/profile")
    p.add_argument("--start", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--snapshot")
    p.add_argument("--python", action="store_true", help="also cProfile the same steps (top Python functions by cumulative time)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, as on the distill command line")
    a = p.parse_args()

    from common.config import parse_overrides

    values = {"data": a.data, "out": a.out, "overwrite": True, "save_steps": 100_000, "max_steps": a.start + a.steps + 1}
    overrides = parse_overrides(a.overrides)
    if a.stage == "trl":
        shape = {"method": "lora", "lora_r": 16, "batch_size": 16, "grad_accum": 1}
        unknown = sorted(set(overrides) - set(shape))
        if unknown:
            raise SystemExit(f"--stage trl takes only {', '.join(shape)}; not {', '.join(unknown)}")
        shape |= overrides
        sys.path.insert(0, str(ROOT / "bench"))
        from train_throughput import run_trl

        bench = argparse.Namespace(model=a.model, data=a.data, workdir=a.out, steps=values["max_steps"], warmup=0, threads=None,
                                   method=shape["method"], r=shape["lora_r"], batch=shape["batch_size"], grad_accum=shape["grad_accum"])
        run_trl(bench, callbacks=(profiler_callback(a),))
    elif a.stage == "grpo":
        import train.grpo_trainer
        from train.grpo import run_grpo
        from train.grpo_config import GRPOConfig

        sys.path.insert(0, str(ROOT / "bench"))  # user rewards such as grpo_throughput:spaces
        train.grpo_trainer.grpo_trainer_class = profiled(train.grpo_trainer.grpo_trainer_class, a, labelled=True)
        run_grpo(GRPOConfig(**{**values, "from_model": a.model, **overrides}), show_progress=False)
    else:
        import train.trainer
        from train.config import TrainConfig
        from train.sft import run_sft

        train.trainer.trainer_class = profiled(train.trainer.trainer_class, a)
        run_sft(TrainConfig(**{**values, "model": a.model, **overrides}), show_progress=False)


def profiled(make_class, a, labelled: bool = False):
    """make_class, with the profiler callback added to every trainer it makes (and, for GRPO, the
    generation and the update of each step labelled as ranges of their own)."""
    from torch.profiler import record_function

    def profiled_class(backend: str, gpu: bool) -> type:
        cls = make_class(backend, gpu)

        def __init__(self, *args, callbacks=(), **kwargs):
            cls.__init__(self, *args, callbacks=[*callbacks, profiler_callback(a)], **kwargs)

        def _generate_and_score_completions(self, inputs):
            with record_function("distill.generate"):
                return cls._generate_and_score_completions(self, inputs)

        def training_step(self, *args, **kwargs):  # GRPO generates inside it (_prepare_inputs) before the update
            with record_function("distill.step"):
                return cls.training_step(self, *args, **kwargs)

        members = {"__init__": __init__}
        if labelled:
            members |= {"_generate_and_score_completions": _generate_and_score_completions, "training_step": training_step}
        return type("ProfiledTrainer", (cls,), members)

    return profiled_class


if __name__ == "__main__":
    main()
