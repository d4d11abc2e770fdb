"""CPU cost of a `distill train` step and of its recall probe, counted in CPU seconds, which stay
comparable while other jobs share the cores (wall seconds do not: a step waits for the slowest thread).

    .venv/bin/python bench/cpu_train.py [--steps 10] [--warmup 3] [--threads 1] [--facts 40]
        --run "NAME [key=value ...] [ENV=value ...]" [--run ...] [--repeat 2]

Builds a knowledge data set from the invented facts of bench/knowledge_corpus.py (3 phrasings of each,
the exact teacher's record shape: `<think>The documents state: SENTENCE</think>` + answer), then for
every --run, each in its own process (runs interleaved --repeat times, so load drifts hit all alike):
trains --steps steps of the embedded student with `distill train` (its config path, key=value
overrides; UPPER_CASE=value sets an environment variable, e.g. ATEN_CPU_CAPABILITY=avx2), timing
every step's wall and process CPU seconds and its tokens; then, with --probe, answers the recall
probe (up to 24 held-out + 24 taught phrasings) the old way (two `generate` calls of 16) and the new
way (one call of 32), in CPU seconds. Prints one Markdown row per run: tokens per CPU-second (steps after
--warmup), wall tokens/s, CPU s per step and the probe's CPU seconds both ways.
With --threads 1, tokens per CPU-second is the work a token costs; a quiet machine's wall tokens/s
with 2 threads is up to twice that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(folder: Path, facts: int, seed: int = 0) -> Path:
    """A `distill gen`-shaped knowledge directory: every fact asked in 3 phrasings, all in train.jsonl."""
    sys.path.insert(0, str(ROOT / "bench"))
    from knowledge_corpus import build

    from common.io import write_json, write_jsonl

    _, _, found = build(pages=max(1, facts // 5), facts_per_page=5, untaught=0, seed=seed)
    rows = []
    for f in [x for x in found if x["taught"]][:facts]:
        for p, question in enumerate(f["questions"][:3]):
            answer_turn = f"<think>\nThe documents state: {f['evidence']}\n</think>\n\n{f['answer']}"
            rows.append({
                "id": f"{len(rows):016x}", "question": question, "answer": f["answer"],
                "reasoning": f"The documents state: {f['evidence']}",
                "evidence": f["evidence"], "context": f["evidence"],
                "fact": hashlib.sha256(f["id"].encode()).hexdigest()[:16], "split": "train",
                "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer_turn}],
                "source": {"doc": f["page"], "chunk": 0, "start": 0, "end": len(f["evidence"])},
                "teacher": {"backend": "local", "model": "exact"},
            })  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", rows)
    write_json(folder / "manifest.json", {"status": "complete", "split_by": "item", "counts": {"train": len(rows)}})
    return folder


def one(a) -> None:
    """In this process: train a.steps steps, time them, then time the probe both ways."""
    import torch
    from transformers import TrainerCallback

    import train.callbacks
    import train.trainer
    from common.generation import generate_counted
    from train.config import TrainConfig
    from train.sft import run_sft

    steps: list[tuple[float, float, int]] = []
    probes: dict = {}

    class Clock(TrainerCallback):
        trainer = None

        def on_step_begin(self, args, state, control, **kw):
            self.started = (time.perf_counter(), time.process_time(), int(self.trainer.distill_tokens))

        def on_step_end(self, args, state, control, **kw):
            wall, cpu, tokens = self.started
            steps.append(
                (time.perf_counter() - wall, time.process_time() - cpu, int(self.trainer.distill_tokens) - tokens)
            )

    clock = Clock()
    make = train.trainer.trainer_class

    def timed_class(backend: str, gpu: bool):
        cls = make(backend, gpu)

        def __init__(self, *args, callbacks=(), **kwargs):
            cls.__init__(self, *args, callbacks=[*callbacks, clock], **kwargs)
            clock.trainer = self

        return type("TimedTrainer", (cls,), {"__init__": __init__})

    made = []
    init = train.callbacks.RecallProbe.__init__

    def keep(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    def both_ways(self, model):
        """CPU seconds of the old probe (two calls of 16) and of the new one (one call of 32)."""
        self.tokenizer.padding_side = "left"
        model.eval()
        with self.generating(model):
            for name, parts, size in (("old", ("held_out", "taught"), 16), ("new", (("held_out", "taught"),), 32)):
                started = time.process_time()
                for part in parts:
                    names = part if isinstance(part, tuple) else (part,)
                    chats = [train.callbacks.prompt_messages(r, self.mode) for n in names for r in self.probe[n]]
                    generate_counted(model, self.tokenizer, chats, self.max_new_tokens, size)
                probes[name] = round(time.process_time() - started, 2)
        probes["prompts"] = sum(len(g) for g in self.probe.values())

    train.trainer.trainer_class = timed_class
    train.callbacks.RecallProbe.__init__ = keep
    torch.set_num_threads(a.threads)
    from common.config import parse_overrides

    config = [e for e in a.extra if not e.split("=", 1)[0].isupper()]
    values = {"data": a.data, "out": a.out, "overwrite": True, "save_steps": 100_000, "max_steps": a.steps,
              "threads": a.threads,
              "recall_probe": 24}  # fmt: skip
    run = run_sft(TrainConfig(**{**values, **parse_overrides(config)}), show_progress=False)
    if a.probe:
        both_ways(made[-1], clock.trainer.model)  # the trained student, as the probe finds it at an epoch's end
    kept = steps[a.warmup :]
    cpu, wall, tokens = sum(s[1] for s in kept), sum(s[0] for s in kept), sum(s[2] for s in kept)
    print("RESULT " + json.dumps({
        "tokens_per_cpu_s": round(tokens / cpu, 1), "tokens_per_s": round(tokens / wall, 1),
        "cpu_s_per_step": round(cpu / len(kept), 2), "tokens_per_step": round(tokens / len(kept)),
        "probe_cpu_s_old": probes.get("old", 0.0), "probe_cpu_s_new": probes.get("new", 0.0),
        "probe_prompts": probes.get("prompts", 0), "lora_r": run["config"]["lora_r"],
        "capability": torch.backends.cpu.get_cpu_capability(), "dtype": run["config"]["dtype"],
    }), flush=True)  # fmt: skip


def launch(a, name: str, extra: list[str]) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        **dict(e.split("=", 1) for e in extra if e.split("=", 1)[0].isupper()),
    }
    cmd = [sys.executable, __file__, "one", "--data", a.data, "--out", str(Path(a.out) / name), "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--threads", str(a.threads), *(["--probe"] if a.probe else []),
           *[f"--extra={e}" for e in extra]]  # fmt: skip
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        print(f"{name} failed:\n{done.stderr[-3000:]}", flush=True)
        return {"name": name, "error": done.stderr[-300:]}
    result = {"name": name, **json.loads(lines[-1][7:]), "load": round(load, 1)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", default="compare", choices=["compare", "one"])
    p.add_argument("--out", default=str(ROOT / "runs" / "cpu-train"))
    p.add_argument("--data")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--facts", type=int, default=80)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--probe", action="store_true", help="also time the recall probe both ways after training")
    p.add_argument("--run", action="append", default=[], help='"NAME [key=value ...] [ENV=value ...]"')
    p.add_argument("--extra", action="append", default=[])
    a = p.parse_args()
    if a.mode == "one":
        return one(a)
    a.data = a.data or str(make_data(Path(a.out) / "data", a.facts))
    runs = [(r.split()[0], r.split()[1:]) for r in a.run] or [("defaults", [])]
    results = [launch(a, name, extra) for _ in range(a.repeat) for name, extra in runs]
    print("\n| run | settings | tokens per CPU-s | wall tokens/s | CPU s/step | tokens/step "
          "| probe CPU s: old / new | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, extra in runs:
        mine = [r for r in results if r["name"] == name and "error" not in r]
        if mine:
            med = lambda key: statistics.median(r[key] for r in mine)  # noqa: E731
            print(f"| {name} | {' '.join(extra)} | {med('tokens_per_cpu_s'):.1f} | {med('tokens_per_s'):.1f} | "
                  f"{med('cpu_s_per_step'):.2f} | {med('tokens_per_step'):.0f} | "
                  f"{med('probe_cpu_s_old'):.1f} / {med('probe_cpu_s_new'):.1f} | "
                  f"{min(r['load'] for r in mine)}-{max(r['load'] for r in mine)} |")  # fmt: skip


if __name__ == "__main__":
    main()
