"""Training throughput of `distill train` against a plain transformers + PEFT + TRL SFT run.

Same model, data, LoRA settings and batch; every run in its own process (the `one` command),
timed from the per-step log: steady-state training tokens/s excludes the first `--warmup`
steps; peak memory is torch.cuda.max_memory_allocated (GPU) or the process's peak RSS (CPU).

  python bench/train_throughput.py gpu --out runs/bench   # ~1.1B Llama shape, random init, LoRA + QLoRA
  python bench/train_throughput.py gpu --shape 8b --method qlora --r 32 --batch 2 --grad-accum 4 --lengths short
      # Unsloth's README setting on the Llama-3-8B shape (QLoRA only: distill and TRL)
  python bench/train_throughput.py gpu --shape 8b --method qlora --r 32 --batch 8   # distill's own batch
  python bench/train_throughput.py cpu --out runs/bench   # embedded SmolLM2-135M student, 2 threads
  python bench/train_throughput.py gpu --run "trl lora" --run "distill lora batching=padding-free"  # chosen runs
  python bench/train_throughput.py gpu --run "distill lora TORCH_LOGS=recompiles"  # UPPER_CASE=value: environment
  python bench/train_throughput.py gpu --run "trl lora" --run "distill lora" --rounds 3
      # alternated: a first round that only warms the machine (uncounted), then 3 rounds, each in another order
  python bench/train_throughput.py gpu --shape 8b --r 32 --batch 8 --run "trl qlora" --run "trl qlora attention=sdpa-no-cudnn" \
      --run "distill qlora"   # TRL with an attention that plans nothing per length (ratios stay against plain TRL's)

Order matters on a GPU host: the first run of each kind on a fresh machine read slower than the same
run later in the call (plain TRL by 10-41% in each of three calls on 2026-12-06, distill by up to 16%;
docs/benchmarks.md), so a comparison made in one order is not a comparison. `--rounds N` runs the set N
times, round k in the set's order rotated by k, so each run takes each place; `--discard D` runs D
rounds first that are printed but not counted: 1 by default (`--discard 0` skips it). The summary gives
each run's median tokens/s over the counted rounds, and its median ratio to TRL's run of the same round;
a run that failed counts as 0 tokens/s there, and the driver (this one and bench/grpo_throughput.py)
exits 1 once the report and results file are written.

Each distill run's own output is kept in OUT/distill-METHOD.log. Every run's per-step log (step, time,
tokens so far; distill's has the loss too) is copied to OUT/metrics-roundK-placeP.jsonl (warm-up rounds:
metrics-warmupK-placeP.jsonl).

Data: distillation-shaped records (a question, a `<think>` trace, a short answer) built from
the Python language reference that every CPython carries (pydoc_data.topics): `--lengths long`
(the GPU default) 80-1,100 tokens each, `--lengths short` (the CPU default; Alpaca-like) ~100-250.
`--grad-accum N` accumulates N micro-batches of `--batch` on both sides.

MFU, two conventions, both printed: 6N (6 x parameters FLOP a token: forward 2N, backward 4N; the
usual convention, also quoted for LoRA) and 4N (what LoRA really spends: the frozen weights need
no weight gradients, so the backward is 2N; the adapters' own FLOPs are under 1% at r <= 64).
N counts every parameter of the model (embeddings included), against the card's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from rounds import exit_if_failed, schedule, summarize, trl_of

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM datasheet
SHAPES = {  # Llama shapes, random init, with the SmolLM2 tokenizer (vocabulary 49,152)
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8),
}
LLAMA_1B = SHAPES["1b"]
LENGTHS = {"long": (1, 2, 3, 5, 8, 12, 20, 30), "short": (1, 2, 3)}  # trace sentences a record
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------- data and model


def sentences() -> list[str]:
    import pydoc_data.topics

    text = " ".join(pydoc_data.topics.topics.values())
    parts = [re.sub(r"\s+", " ", s).strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    return [s for s in parts if 20 <= len(s) <= 400]


def make_data(folder: Path, n: int, seed: int = 0, trace: tuple = (1, 2, 3, 5, 8, 12, 20, 30)) -> Path:
    """n records: a 1-sentence question, a trace of `trace` sentences, a 1-3 sentence answer."""
    from common.io import write_json, write_jsonl

    rng, pool = random.Random(seed), sentences()
    rows = []
    for i in range(n):
        question = rng.choice(pool).rstrip(".") + "?"
        reasoning = " ".join(rng.choices(pool, k=rng.choice(trace)))
        answer = " ".join(rng.choices(pool, k=rng.randint(1, 3)))
        rows.append({
            "id": f"{i:016x}", "question": question, "reasoning": reasoning, "answer": answer, "evidence": answer[:40],
            "context": reasoning, "split": "train", "teacher": {"backend": "bench", "model": "synthetic"},
            "source": {"doc": "pydoc_data.topics", "chunk": i, "start": 0, "end": 1},
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"}],
        })
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "test.jsonl", rows[:2])
    write_json(folder / "manifest.json", {"status": "complete", "split_by": "item", "counts": {"train": n}})
    return folder


def make_model(folder: Path, tokenizer_dir: str, shape: str = "1b") -> Path:
    """A Llama-shaped model of SHAPES[shape] (~1.1B or 7.4B parameters), random init, bf16, with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SHAPES[shape])
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: the 8B shape in float32 would be 30 GB first
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- one run (own process)


def steady(rows: list[dict], warmup: int) -> tuple[float, int]:
    """(tokens/s over the steps after warm-up, steps measured) from rows of {step, time, num_tokens}."""
    rows = sorted((r for r in rows if "num_tokens" in r), key=lambda r: r["step"])
    rows = [r for r in rows if r["step"] >= warmup]
    if len(rows) < 2:
        return 0.0, 0
    first, last = rows[0], rows[-1]
    return (last["num_tokens"] - first["num_tokens"]) / (last["time"] - first["time"]), last["step"] - first["step"]


def split_extra(extra: list[str] | None) -> tuple[list[str], dict]:
    """key=value overrides for distill's config; UPPER_CASE=value ones are environment variables."""
    config = [e for e in extra or [] if not e.split("=", 1)[0].isupper()]
    env = dict(e.split("=", 1) for e in extra or [] if e.split("=", 1)[0].isupper())
    return config, env


def run_distill(a) -> dict:
    out = Path(a.workdir) / f"distill-{a.method}"
    cmd = [sys.executable, "-m", "distill", "train", a.data, "--out", str(out), "--model", a.model, "--method", a.method,
           "--max-steps", str(a.steps), "--batch-size", str(a.batch), "--overwrite", "--json", "-q", "save_steps=100000",
           f"lora_r={a.r}", f"lora_alpha={a.r}", f"backend={a.backend}", f"grad_accum={a.grad_accum}"]
    if a.threads:
        cmd.append(f"threads={a.threads}")
    config, env = split_extra(a.extra)
    cmd += config
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    out.with_suffix(".log").write_text(done.stdout + done.stderr)  # kept for TORCH_LOGS=... runs
    if done.returncode != 0:
        raise SystemExit(f"distill train failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout[done.stdout.index("{"):])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rate, measured = steady(rows, a.warmup)
    return {"tokens_per_s": rate, "steps_measured": measured, "peak_memory_gib": record["metrics"]["peak_memory_gib"],
            "backend": record["backend"], "final_loss": record["metrics"]["final_loss"], "batches": record.get("batches")}


# A TRL run's one setting (`--run "trl qlora attention=sdpa-no-cudnn"`): the attention plain TRL trains with. sdpa,
# the transformers default: torch picks cuDNN's kernel for padded batches on Hopper, which builds a plan for every new
# sequence length (1.6 s of host time a step on the 8B shape, docs/benchmarks.md); sdpa-no-cudnn: that backend off,
# so padded batches take the memory-efficient kernel, which plans nothing; eager: transformers' eager attention.
ATTENTION = ("sdpa", "sdpa-no-cudnn", "eager")


def trl_attention(extra: list[str] | tuple | None) -> str:
    """The attention a TRL run asks for in its extra settings (default sdpa); anything else is refused in one line."""
    keys = dict(e.partition("=")[::2] for e in extra or [])
    choice = keys.pop("attention", "sdpa")
    if keys or choice not in ATTENTION:
        raise SystemExit(f"a trl run takes only attention={'|'.join(ATTENTION)}; not {' '.join(extra)}")
    return choice


def run_trl(a, callbacks: tuple = ()) -> dict:
    """Plain TRL SFT: SFTTrainer defaults (padded batches, gradient checkpointing), SDPA (or `attention=`), PEFT LoRA.
    `callbacks`: more TrainerCallbacks (bench/train_profile.py --stage trl adds its profiler)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    if a.threads:
        torch.set_num_threads(a.threads)
    gpu = torch.cuda.is_available()
    attention = trl_attention(getattr(a, "extra", None))
    torch.backends.cuda.enable_cudnn_sdp(attention != "sdpa-no-cudnn")
    rows = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            rows.append({"step": state.global_step, "time": time.monotonic(), "num_tokens": int(trainer.distill_tokens)})

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16) if a.method == "qlora" else None
    kernel = "eager" if attention == "eager" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if gpu else torch.float32, attn_implementation=kernel,
                                                 quantization_config=quant, device_map={"": 0} if quant else None)
    tok = AutoTokenizer.from_pretrained(a.model)
    ds = load_dataset("json", data_files=str(Path(a.data) / "train.jsonl"), split="train")
    ds = ds.map(lambda r: {"prompt": r["messages"][:1], "completion": r["messages"][1:]}, remove_columns=ds.column_names)
    args = SFTConfig(output_dir=str(Path(a.workdir) / f"trl-{a.method}"), per_device_train_batch_size=a.batch, max_steps=a.steps,
                     gradient_accumulation_steps=a.grad_accum,
                     learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to="none", bf16=gpu, use_cpu=not gpu,
                     gradient_checkpointing=True, max_length=None, disable_tqdm=True)
    peft = LoraConfig(r=a.r, lora_alpha=a.r, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    from train.trainer import CountTokens, CPUSFTTrainer  # counts tokens the same way for both sides

    # TRL 1.15's loss is a Triton kernel, which has no CPU driver: on CPU the model's own loss (train/trainer.py)
    cls = type("CountedSFTTrainer", (CountTokens, SFTTrainer if gpu else CPUSFTTrainer), {})
    trainer = cls(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft, callbacks=[Clock(), *callbacks])
    trainer.train()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)  # its per-step log, as distill writes its own
    Path(args.output_dir, "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rate, measured = steady(rows, a.warmup)
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else __import__("resource").getrusage(0).ru_maxrss / 2**20
    return {"tokens_per_s": rate, "steps_measured": measured, "peak_memory_gib": round(peak, 3), "backend": "trl"}


def one(a) -> None:
    result = run_distill(a) if a.impl == "distill" else run_trl(a)
    result.update(impl=a.impl, method=a.method, extra=a.extra or [])
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver


def launch(a, impl: str, method: str, model: str, data: str, extra: tuple = ()) -> dict:
    cmd = [sys.executable, __file__, "one", "--impl", impl, "--method", method, "--model", model, "--data", data,
           "--workdir", a.out, "--steps", str(a.steps), "--warmup", str(a.warmup), "--batch", str(a.batch), "--r", str(a.r),
           "--backend", a.backend, "--grad-accum", str(a.grad_accum)] + (["--threads", str(a.threads)] if a.threads else []) + [f"--extra={e}" for e in extra]
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        print(f"{impl}/{method} failed:\n{(done.stderr or done.stdout)[-4000:]}", flush=True)
        return {"impl": impl, "method": method, "extra": list(extra), "error": (done.stderr or done.stdout)[-600:]}
    result = json.loads(lines[-1][7:])
    result["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(result), flush=True)
    return result


def params(model: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return sum(p.numel() for p in m.parameters())


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["gpu", "gpu-beyond", "cpu", "one"])
    p.add_argument("--out", "--workdir", dest="out", default="runs/bench")
    p.add_argument("--impl", choices=["distill", "trl"])
    p.add_argument("--method", default="lora")
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--backend", default="auto")
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--threads", type=int)
    p.add_argument("--extra", action="append", help="distill only: extra key=value config overrides, or UPPER_CASE=value environment variables (repeatable)")
    p.add_argument("--run", action="append", help='"IMPL METHOD [key=value ...]" (repeatable): run these instead of the mode\'s default set')
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches accumulated a step, both sides")
    p.add_argument("--shape", choices=list(SHAPES), default="1b", help="gpu modes: the Llama shape built (random init)")
    p.add_argument("--lengths", choices=list(LENGTHS), help="record lengths (default: long on GPU, short on CPU)")
    p.add_argument("--records", type=int, default=800)
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the embedded model's)")
    p.add_argument("--rounds", type=int, default=1, help="run the set this many times, each round in another order (counted)")
    p.add_argument("--discard", type=int, default=1, help="warm-up rounds run first, printed but not counted (0: none)")
    return p.parse_args(argv)


def main() -> None:
    a = arguments()
    a.workdir = a.out
    if a.mode == "one":
        return one(a)
    gpu = a.mode.startswith("gpu")
    a.steps = a.steps or (30 if gpu else 5)
    a.warmup = a.warmup or (10 if gpu else 1)
    a.batch = a.batch or (16 if gpu else 4)
    a.threads = a.threads or (None if gpu else 2)
    os.makedirs(a.out, exist_ok=True)
    # GPU: 80-1,100 tokens a record; CPU: short QA records (~100-250 tokens), as the quickstart makes
    a.lengths = a.lengths or ("long" if gpu else "short")
    data = str(make_data(Path(a.out) / f"data-{a.lengths}", a.records, trace=LENGTHS[a.lengths]))
    if gpu:
        from common.models import resolve_model

        model = str(make_model(Path(a.out) / f"llama-{a.shape}", a.tokenizer or resolve_model("embedded"), a.shape))
        runs = [("distill", "lora"), ("trl", "lora"), ("distill", "qlora"), ("trl", "qlora")]
        if a.shape == "8b":  # QLoRA: the shape Unsloth's claims are made on
            runs = [("distill", "qlora"), ("trl", "qlora")]
        if a.mode == "gpu-beyond":  # past like-for-like: no activation recompute (memory is plentiful), then packing
            nogc = ("gradient_checkpointing=false",)
            runs = [("trl", "lora"), ("distill", "lora", nogc), ("distill", "lora", nogc + ("packing=true", "max_seq_length=4096", "batch_size=4"))]
    else:
        from common.models import resolve_model

        model = resolve_model("embedded")
        runs = [("distill", "lora", ("backend=hf",)), ("distill", "lora", ("backend=unsloth",)), ("trl", "lora")]
    if a.run:  # an explicit list replaces the mode's default set
        runs = [(r.split()[0], r.split()[1], tuple(r.split()[2:])) for r in a.run]
    for run in runs:
        if run[0] == "trl":
            trl_attention(run[2] if len(run) > 2 else ())  # before any run: a setting TRL's run would not take stops the bench here
    results = []
    for k, order in schedule(runs, a.rounds, a.discard):
        for place, run in enumerate(order, 1):
            result = launch(a, *run[:2], model, data, *run[2:])
            results.append({**result, "round": k, "place": place})
            keep_metrics(a.out, result, k, place)
    report(a, results, model, gpu)
    exit_if_failed(results)


def keep_metrics(out: str, result: dict, k: int, place: int) -> None:
    """A run's per-step log (distill's or TRL's), kept under a name of its own (the next run replaces its folder's)."""
    src = Path(out, f"{result['impl']}-{result['method']}", "metrics.jsonl")
    if "error" not in result and src.exists():  # a failed run wrote none: an older run's log is not its
        name = f"round{k}" if k >= 0 else f"warmup{-k}"
        Path(out, f"metrics-{name}-place{place}.jsonl").write_text(src.read_text())


def report(a, results: list[dict], model: str, gpu: bool) -> None:
    import torch

    card = torch.cuda.get_device_name(0) if gpu else "cpu"
    n = params(model)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in card), None)
    print(f"\nmodel {model} ({n / 1e9:.3f}B params), card {card}, batch {a.batch} x {a.grad_accum} accumulated, LoRA r {a.r}, "
          f"records {a.lengths}, steps {a.steps} (warm-up {a.warmup}), rounds {a.rounds} (+{a.discard} discarded)")
    print(f"{'round':>5} {'#':>2} {'impl':8} {'method':6} {'tokens/s':>10} {'peak GiB':>9} {'MFU 6N':>7} {'MFU 4N':>7} {'vs TRL':>7}")
    for r in results:
        ref = trl_of(results, r)
        name = r["method"] + ("+" + ",".join(r["extra"]) if r.get("extra") else "")
        if "tokens_per_s" not in r:
            print(f"{r['round']:>5} {r['place']:>2} {r['impl']:8} {name:6} failed")
            continue
        mfu = r["tokens_per_s"] * 6 * n / (peak * 1e12) if peak else None
        r["mfu"], r["mfu_4n"] = mfu, mfu * 4 / 6 if mfu else None
        r["vs_trl"] = r["tokens_per_s"] / ref["tokens_per_s"] if ref and ref.get("tokens_per_s") else None
        ratio = f"{r['vs_trl']:.2f}x" if r["vs_trl"] else "-"
        mfu4 = r["mfu_4n"]
        print(f"{r['round']:>5} {r['place']:>2} {r['impl']:8} {name:6} {r['tokens_per_s']:10.1f} {r['peak_memory_gib']:9.2f} "
              f"{(f'{mfu:.1%}' if mfu else '-'):>7} {(f'{mfu4:.1%}' if mfu4 else '-'):>7} {ratio:>7}")
    summary = summarize(results)
    if a.rounds > 1:
        print(f"\nmedian over {a.rounds} counted rounds (a failed run counts as 0 tokens/s):")
        for name, row in summary.items():
            ratio = f", {row['vs_trl']:.2f}x TRL (median of the rounds' ratios)" if row["vs_trl"] is not None else ""
            print(f"  {name}: {row['tokens_per_s']:.1f} tokens/s{ratio}; rounds {[round(x, 1) for x in row['each']]}")
    shape = {"shape": a.shape if gpu else "embedded", "batch": a.batch, "grad_accum": a.grad_accum, "lengths": a.lengths, "r": a.r,
             "rounds": a.rounds, "discard": a.discard}
    Path(a.out, f"results-{a.mode}.json").write_text(json.dumps({"card": card, "params": n, **shape, "results": results,
                                                                 "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
