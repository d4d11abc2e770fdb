"""The starting student of the GRPO learning tests, whose format rate is controlled (issue 28).

A 0-or-1 format reward teaches only in groups whose completions score apart, so what a short GRPO run can
show depends on the student's starting format rate p0: near 0 or 1 almost every group scores alike. A fixed
number of SFT steps gives a p0 that depends on the CPU's arithmetic (torch, oneDNN and MKL pick kernels by
the instruction set) as much as on the seed: 30 steps gave 0.21 and 0.004 for seeds 0 and 1. So the student
is fine-tuned in short rounds, and after each its format rate is sampled as GRPO samples (temperature 1, the
same prompts and completion length); it stops once the rate lies in a band (docs/testing.md has the
measurements behind the band). `bench/grpo_test_spread.py` runs this world and the learning run over seeds.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

from common.io import write_json, write_jsonl

from tiny_models import record as make_record
from trainkit import WORDS

BAND = (0.15, 0.5)  # the starting format rate of the learning tests' student
ROUND_STEPS = 5  # SFT steps between two samplings of the format rate
MAX_ROUNDS = 24  # AVX2 seed 4 needed 14 (docs/testing.md)
SAMPLES = 128  # completions sampled to measure the rate: its standard error is <= 0.044
COMPLETION = 24  # tokens, as LEARNING's max_completion_length


def short_data(folder: Path, n: int = 32, seed: int = 0) -> Path:
    """Records whose assistant turn is short (`<think>` 2-4 words `</think>` 1-2 words): a tiny model
    learns the format in a few SFT steps, and completions of 24 tokens hold it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = " ".join(rng.choices(WORDS, k=4)) + "?"
        reasoning = " ".join(rng.choices(WORDS, k=rng.randint(2, 4)))
        answer = " ".join(rng.choices(WORDS, k=rng.randint(1, 2)))
        context = " ".join(rng.choices(WORDS, k=20))
        key = hashlib.sha256(f"{i}{question}".encode()).hexdigest()[:16]
        rows.append(make_record(i, question, answer, context, reasoning, "train", key))
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "test.jsonl", [{**r, "split": "test"} for r in rows[:2]])
    write_json(folder / "manifest.json", {"status": "complete", "split_by": "item"})
    return folder


def format_rate(model_dir: Path, data: Path, samples: int = SAMPLES, seed: int = 0) -> float:
    """The share of `samples` completions (temperature 1, no top-k or top-p, COMPLETION tokens, the data's
    prompts in turn, as GRPO builds them) that `format_reward` scores 1."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.graders import format_adherence
    from train.data import read_data_dir, split_and_mode
    from train.grpo import prompt_rows

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if (Path(model_dir) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM as AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    source = read_data_dir(data)
    rows, _ = prompt_rows(source.records, tokenizer, split_and_mode(source, "auto")[1], 2048)
    texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    prompts = [texts[i % len(texts)] for i in range(samples)]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=COMPLETION,
                             pad_token_id=tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return sum(format_adherence(c) for c in completions) / samples


def student(root: Path, model: Path, data: Path, seed: int = 0, band: tuple[float, float] = BAND) -> tuple[Path, list]:
    """(the tiny model fully fine-tuned in rounds of ROUND_STEPS until its format rate lies in `band`, the
    rate after each round). Raises AssertionError (a bug, not a flake) when MAX_ROUNDS never reach the band."""
    from train.config import TrainConfig
    from train.sft import run_sft

    rates, start = [], model
    for i in range(MAX_ROUNDS):
        out = root / f"sft-{i}"
        cfg = TrainConfig(data=str(data), out=str(out), model=str(start), backend="hf", method="full", batch_size=8,
                          seed=seed + i, save_steps=1000, lr=3e-2, lr_scheduler="constant", warmup_ratio=0.0,
                          max_steps=ROUND_STEPS)
        run_sft(cfg, show_progress=False)
        rates.append(round(format_rate(out, data, seed=seed), 4))
        if band[0] <= rates[-1] <= band[1]:
            return out, rates
        start = out
    raise AssertionError(f"the SFT student's format rate never reached {band} in {MAX_ROUNDS} rounds of {ROUND_STEPS} "
                         f"steps (rates {rates}): SFT or sampling is broken")


# The learning runs: 2 epochs of the 32 prompts (8 steps of 4 prompts x 8 completions), a high constant lr. Eight
# completions a prompt leave fewer groups that all score alike than four (a student writing the format 1 time in 5
# fails it in all 4 completions of 41% of its groups, all 8 of 17%). lr 2e-2 rose, then fell back (docs/testing.md).
LEARNING = dict(batch_size=4, num_generations=8, max_completion_length=COMPLETION, max_steps=16, lr=1e-2,
                warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=1.0)
# completions sampled from the student and from the trained policy to judge the rise (512 left seed 9 of 10 under
# AVX2 at z 2.56: a real rise of 0.07 that 512 a side resolves to 2.6 standard errors; docs/testing.md)
JUDGED = 1024
Z_LEARNED = 3.0  # a policy that does not move passes 1 time in 700; the spread over seeds and CPUs: docs/testing.md


def rise(student_dir: Path, trained_dir: Path, data: Path, seed: int = 0) -> tuple[float, float, float]:
    """(the student's format rate, the trained policy's, z: the rise in standard errors), each rate from JUDGED
    completions of its own draws: a policy that did not move gives a z about standard normal, on any CPU."""
    before = format_rate(student_dir, data, JUDGED, seed + 1)
    after = format_rate(trained_dir, data, JUDGED, seed + 2)
    pooled = (before + after) / 2
    return before, after, (after - before) / max(math.sqrt(2 * pooled * (1 - pooled) / JUDGED), 1e-9)


def epoch_rise(rows: list[dict], key: str) -> tuple[float, float, float]:
    """(first epoch's mean, last epoch's mean, z: their difference in standard errors). Both epochs sample the
    same prompts, so a policy that does not move gives a z about standard normal, on any CPU; a step's
    completions' spread comes from the logged std and the steps' means."""
    epochs: dict[int, list[dict]] = {}
    for row in rows:
        epochs.setdefault(math.ceil(row["epoch"] - 1e-9), []).append(row)
    first, last = epochs[min(epochs)], epochs[max(epochs)]

    def moments(steps: list[dict]) -> tuple[float, float]:
        means = [r[f"{key}/mean"] for r in steps]
        mean = sum(means) / len(means)
        var = sum(r[f"{key}/std"] ** 2 + (m - mean) ** 2 for r, m in zip(steps, means)) / len(means)
        return mean, var

    (a, var_a), (b, var_b) = moments(first), moments(last)
    n_a, n_b = (len(steps) * LEARNING["batch_size"] * LEARNING["num_generations"] for steps in (first, last))
    return a, b, (b - a) / max(math.sqrt(var_a / n_a + var_b / n_b), 1e-9)
