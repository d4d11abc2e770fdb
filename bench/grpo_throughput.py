"""GRPO step throughput of distill's GRPO stage against a plain TRL GRPOTrainer + PEFT run.

The same model, data, LoRA settings, rewards and sampling; every run in its own process (the
`one` command), on the same device, one after the other. Each run's per-step log gives:
seconds per step, generated tokens/s (completion tokens / sampling time), training tokens/s
(prompt + completion tokens per second of wall clock) and where a step's time goes (sampling
and scoring vs the update), all over the steps after `--warmup` (compilation, allocator);
peak memory is torch.cuda.max_memory_allocated (GPU) or the process's peak RSS (CPU). The two
sides are timed by the same code (train/grpo_trainer.py's StepTimes and StepStats, train/callbacks.py's
Metrics), which measures and changes nothing in what runs.

  python bench/grpo_throughput.py gpu --out runs/bench-grpo         # 1.1B Llama shape, random init, LoRA r16
  python bench/grpo_throughput.py gpu --model embedded              # a pretrained model (SmolLM2-135M-Instruct),
                                                                    # for a TRL baseline that does not diverge
  python bench/grpo_throughput.py gpu --run "trl" --run "distill generation=vllm"   # chosen runs, distill overrides
  python bench/grpo_throughput.py gpu --run distill --run "distill env:UNSLOTH_GRPO_SEQ_PACKING=1"  # a run's environment
                                                                    # (distill sets that switch to 0 by default)
  python bench/grpo_throughput.py cpu --out runs/bench-grpo-cpu     # a tiny shape on the CPU: a smoke test of the bench
  python bench/grpo_throughput.py gpu --rounds 3        # alternated: each run takes each place, after a warm-up
                                                       # round uncounted (the default; --discard 0 skips it)

gpu: the 1.1B Llama shape (random init, bf16, the SmolLM2 tokenizer), LoRA r16 on every projection,
4 prompts a step x 8 generations x 128 new tokens (a random model never stops early: every
completion is 128 tokens), lr 5e-6, beta 0, temperature 1.0, reward: `spaces` (below; it varies, so updates are real). distill runs with
backend auto (Unsloth where it runs) and generation auto (vLLM where installed); TRL with its
GRPOConfig defaults otherwise (gradient checkpointing on, transformers generate).
cpu: hidden 64, 2 layers, 2 prompts x 4 generations x 16 tokens, 4 steps.
--model NAME|PATH replaces the random model (gpu and cpu): `embedded`, or any model folder. On the
random 1.1B model TRL's update logs grad norm NaN at steps 5 and 10; TRL's side zeroes non-finite
gradients before each optimizer step (`finite_grads`), so it runs every step and the result lists the
steps it zeroed (`nonfinite_grad_steps`): 10 TRL steps measured on an H100 (2026-12-05), where before the
NaN reached the weights and the 6th step's sampling failed. On an H200 (2026-12-05) distill's side ran in 144 s with the embedded model;
TRL's side needs about as long again: give the pair 6 minutes or more.

Results: printed as a table and written to OUT/results-MODE.json; each run's log and metrics.jsonl under OUT/ (runN-IMPL.log, runN/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from rounds import exit_if_failed, schedule, summarize, trl_of  # noqa: E402  (runs in alternated order, as the SFT bench's)
from train_throughput import TARGETS, make_data, make_model  # noqa: E402  (the SFT bench's data and model)

SHAPES = {
    "gpu": dict(steps=16, warmup=4, prompts=4, generations=8, new_tokens=128),
    "cpu": dict(steps=4, warmup=1, prompts=2, generations=4, new_tokens=16),
}
LR = 5e-6


def tiny_model(folder: Path, tokenizer_dir: str) -> Path:
    """A hidden-64, 2-layer Llama with the SmolLM2 tokenizer (the cpu smoke shape)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- one run (own process)


def spaces(prompts, completions, **kwargs) -> list[float]:
    """The benchmark's reward: the share of whitespace in a completion. A random model's completions
    differ in it, so every group has an advantage and every update is a real one (`format` scores all
    of a random model's completions 0: zero advantage, a zero loss, nothing to learn from)."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isspace() for ch in t) / max(1, len(t)) for t in texts]


def measured(rows: list[dict], warmup: int) -> dict:
    """Means over the logged steps after warm-up. A generation batch may serve several steps (only its
    first step logs generate_s and advances num_tokens), so sampling time is a step's share of it, and
    training tokens/s counts the batches generated in the window over the window's wall clock."""
    rows = sorted((r for r in rows if "step_time" in r), key=lambda r: r["step"])
    first_step = rows[0]["step_time"] if rows else None
    before = [r for r in rows if r["step"] <= warmup]
    window = [r for r in rows if r["step"] > warmup] or rows

    def mean(key):
        values = [r[key] for r in window if r.get(key) is not None]
        return round(sum(values) / len(values), 4) if values else None

    def tokens(part):
        return max((r["num_tokens"] for r in part if "num_tokens" in r), default=0)

    generate = sum(r.get("generate_s") or 0 for r in window) / len(window) if window else None
    span = window[-1]["time"] - before[-1]["time"] if before and window else 0
    return {
        "seconds_per_step": mean("step_time"),
        "first_step_seconds": round(first_step, 2) if first_step else None,
        "generate_seconds": round(generate, 4) if generate is not None else None,
        "update_seconds": round(mean("step_time") - generate, 4) if generate is not None else None,
        "generated_tokens_per_s": mean("generated_tokens_per_s"),
        "training_tokens_per_s": round((tokens(window) - tokens(before)) / span, 1) if span else None,
        "completion_length": mean("completions/mean_length"),
        "steps_measured": len(window),
        "nonfinite_grad_steps": [r["step"] for r in rows if r.get("grad_norm") is not None and not math.isfinite(r["grad_norm"])],
    }


def run_distill(a) -> dict:
    from train.grpo import run_grpo
    from train.grpo_config import GRPOConfig

    out = Path(a.workdir) / "distill"
    overrides = dict(e.split("=", 1) for e in a.extra or [])
    cfg = GRPOConfig(**{
        "data": a.data, "from_model": a.model, "out": str(out), "overwrite": True, "max_steps": a.steps, "batch_size": a.prompts,
        "num_generations": a.generations, "max_completion_length": a.new_tokens, "lr": LR, "rewards": {"grpo_throughput:spaces": 1.0},
        "lora_r": a.r, "lora_alpha": a.r, "save_steps": 100000, "threads": a.threads, **overrides,
    })
    record = run_grpo(cfg, show_progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {**measured(rows, a.warmup), "peak_memory_gib": record["metrics"]["peak_memory_gib"], "backend": record["backend"],
            "generation": record["generation"]}


def finite_grads():
    """TRL's side only: a callback that zeroes non-finite gradients before the optimizer steps. On the
    random 1.1B model plain TRL's 5th step logs grad norm NaN (finite ~0.27 before), Adam writes NaN into
    the LoRA weights and the 6th step's sampling fails (docs/benchmarks.md, 2026-12-03), which left 3 TRL
    steps to time. Zeroed, the step's work is the same and the run goes on; the steps it zeroed are
    listed in the result (`nonfinite_grad_steps`, from the logged grad norm). Costs one in-place
    nan_to_num per LoRA tensor a step, all on the GPU, no host sync: it can only slow TRL's side."""
    import torch
    from transformers import TrainerCallback

    class FiniteGrads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            for param in model.parameters():
                if param.grad is not None:
                    torch.nan_to_num_(param.grad, nan=0.0, posinf=0.0, neginf=0.0)

    return FiniteGrads()


def run_trl(a) -> dict:
    """Plain TRL: GRPOTrainer with its GRPOConfig defaults + a PEFT LoraConfig, SDPA, transformers generate."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from common.contract import prompt_messages
    from common.io import read_jsonl
    from train.callbacks import Metrics
    from train.grpo_trainer import StepStats, grpo_trainer_class

    if a.threads:
        torch.set_num_threads(a.threads)
    gpu = torch.cuda.is_available()
    out = Path(a.workdir) / "trl"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if gpu else torch.float32, attn_implementation="sdpa")
    tok = AutoTokenizer.from_pretrained(a.model)
    ds = Dataset.from_list([{"prompt": prompt_messages(r, "closed-book"), "answer": r["answer"]} for r in read_jsonl(Path(a.data) / "train.jsonl")])
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=a.prompts * a.generations, num_generations=a.generations,
                      max_completion_length=a.new_tokens, max_steps=a.steps, learning_rate=LR, logging_steps=1, save_strategy="no",
                      report_to="none", bf16=gpu, use_cpu=not gpu, disable_tqdm=True)
    peft = LoraConfig(r=a.r, lora_alpha=a.r, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    # measured as distill's runs are; on CPU TRL's Triton log-probabilities cannot run: the logits-based ones (train/grpo_trainer.py)
    cls = grpo_trainer_class("hf", gpu)
    trainer = cls(model=model, reward_funcs=[spaces], args=args, train_dataset=ds, processing_class=tok, peft_config=peft,
                  callbacks=[StepStats(a.prompts, print), Metrics(out / "metrics.jsonl"), finite_grads()])
    trainer.train()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else __import__("resource").getrusage(0).ru_maxrss / 2**20
    return {**measured(rows, a.warmup), "peak_memory_gib": round(peak, 3), "backend": "trl", "generation": "transformers"}


def one(a) -> None:
    result = run_distill(a) if a.impl == "distill" else run_trl(a)
    result.update(impl=a.impl, extra=a.extra or [])
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver


def launch(a, impl: str, model: str, data: str, extra: tuple = (), index: int = 0) -> dict:
    """One run in its own process; `env:NAME=VALUE` items of extra set that run's environment (e.g. Unsloth's switches)."""
    env = dict(os.environ, **dict(e[4:].split("=", 1) for e in extra if e.startswith("env:")))
    overrides = [e for e in extra if not e.startswith("env:")]
    workdir = str(Path(a.out) / f"run{index}")
    cmd = [sys.executable, __file__, "one", "--impl", impl, "--model", model, "--data", data, "--workdir", workdir, "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--prompts", str(a.prompts), "--generations", str(a.generations), "--new-tokens", str(a.new_tokens),
           "--r", str(a.r)] + (["--threads", str(a.threads)] if a.threads else []) + [f"--extra={e}" for e in overrides]
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    Path(a.out, f"run{index}-{impl}.log").write_text(done.stdout + done.stderr)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        print(f"{impl} failed:\n{(done.stderr or done.stdout)[-4000:]}", flush=True)
        return {"impl": impl, "extra": list(extra), "error": (done.stderr or done.stdout)[-600:]}
    result = json.loads(lines[-1][7:])
    result["extra"] = list(extra)
    result["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(result), flush=True)
    return result


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["gpu", "cpu", "one"])
    p.add_argument("--out", "--workdir", dest="out", default="runs/bench-grpo")
    p.add_argument("--impl", choices=["distill", "trl"])
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--prompts", type=int, help="prompts a step")
    p.add_argument("--generations", type=int, help="completions a prompt")
    p.add_argument("--new-tokens", type=int, help="max_completion_length")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--threads", type=int)
    p.add_argument("--extra", action="append", help="distill only: GRPOConfig key=value overrides (repeatable)")
    p.add_argument("--run", action="append", help='"IMPL [key=value ...]" (repeatable): run these instead of distill and trl')
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the embedded model's)")
    p.add_argument("--rounds", type=int, default=1, help="run the set this many times, each round in another order (counted)")
    p.add_argument("--discard", type=int, default=1, help="warm-up rounds run first, printed but not counted (0: none)")
    return p.parse_args(argv)


def main() -> None:
    a = arguments()
    a.workdir = a.out
    if a.mode == "one":
        return one(a)
    for key, value in SHAPES[a.mode].items():
        setattr(a, key, getattr(a, key) or value)
    a.threads = a.threads or (None if a.mode == "gpu" else 2)
    os.makedirs(a.out, exist_ok=True)
    from common.models import resolve_model

    tokenizer = a.tokenizer or os.environ.get("DISTILL_TEST_TOKENIZER") or resolve_model("embedded")
    data = str(make_data(Path(a.out) / "data", 64, trace=(1, 2, 3)))  # short prompts: sampling, not prompt length, is measured
    if a.model:
        model = resolve_model(a.model)
    else:
        model = str(make_model(Path(a.out) / "llama-1b", tokenizer) if a.mode == "gpu" else tiny_model(Path(a.out) / "tiny", tokenizer))
    runs = [(r.split()[0], tuple(r.split()[1:])) for r in a.run] if a.run else [("distill", ()), ("trl", ())]
    results, index = [], 0
    for k, order in schedule(runs, a.rounds, a.discard):
        for place, (impl, extra) in enumerate(order, 1):
            result = launch(a, impl, model, data, extra, index)
            steps_per_s = 1 / result["seconds_per_step"] if result.get("seconds_per_step") else None
            results.append({**result, "steps_per_s": steps_per_s, "round": k, "place": place})
            index += 1
    report(a, results)
    exit_if_failed(results)


def report(a, results: list[dict]) -> None:
    import torch

    card = torch.cuda.get_device_name(0) if a.mode == "gpu" and torch.cuda.is_available() else "cpu"
    print(f"\n{card}: {a.prompts} prompts x {a.generations} generations x {a.new_tokens} tokens a step, LoRA r {a.r}, {a.steps} steps (warm-up {a.warmup}), "
          f"model {a.model or 'random'}")
    print(f"{'round':>5} {'#':>2} {'run':44} {'s/step':>7} {'vs TRL':>7} {'gen tok/s':>10} {'train tok/s':>11} {'gen s':>6} {'upd s':>6} "
          f"{'1st s':>6} {'peak GiB':>9}")
    for r in results:
        trl = trl_of(results, r)
        trl = trl if trl and trl.get("seconds_per_step") else None
        name = " ".join([r["impl"], *r.get("extra", [])]) + (f" ({r['backend']}, {r['generation']})" if "backend" in r else "")
        if not r.get("seconds_per_step"):
            print(f"{r['round']:>5} {r['place']:>2} {name:44} failed")
            continue
        r["steps_per_s_vs_trl"] = round(trl["seconds_per_step"] / r["seconds_per_step"], 3) if trl else None
        vs = f"{r['steps_per_s_vs_trl']:.2f}x" if trl else "-"
        print(f"{r['round']:>5} {r['place']:>2} {name:44} {r['seconds_per_step']:7.2f} {vs:>7} {r['generated_tokens_per_s'] or 0:10.0f} {r['training_tokens_per_s'] or 0:11.0f} "
              f"{r['generate_seconds'] or 0:6.2f} {r['update_seconds'] or 0:6.2f} {r['first_step_seconds'] or 0:6.1f} {r['peak_memory_gib']:9.2f}")
    summary = summarize(results, rate="steps_per_s")
    if a.rounds > 1:
        print(f"\nmedian over {a.rounds} counted rounds (a failed run counts as 0 steps/s):")
        for name, row in summary.items():
            ratio = f", {row['vs_trl']:.2f}x TRL's steps/s (median of the rounds' ratios)" if row["vs_trl"] is not None else ""
            print(f"  {name}: {row['steps_per_s']:.3f} steps/s{ratio}; rounds {row['each']}")
    shape = {**SHAPES[a.mode], "steps": a.steps, "warmup": a.warmup, "model": a.model or "random", "rounds": a.rounds, "discard": a.discard}
    Path(a.out, f"results-{a.mode}.json").write_text(json.dumps({"card": card, "shape": shape, "results": results, "summary": summary},
                                                                indent=2))


if __name__ == "__main__":
    main()
