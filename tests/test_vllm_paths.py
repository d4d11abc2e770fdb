"""The in-process vLLM paths, on the CPU, without vLLM: which sampler GRPO chooses, and the arguments our
code hands to vLLM (TRL's `use_vllm`, Unsloth's `fast_inference` / `max_lora_rank` / memory share, the
vllm teacher's `LLM(...)` and `LLM.chat` batches). They assert on our code only: none of these paths has
run on a real vLLM yet (README, docs/teachers.md, docs/grpo.md: "not yet verified")."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType, SimpleNamespace

import pytest
from test_vllm_teacher import Params

from common.errors import UserError
from common.models import resolve_model
from common.teacher.backends import Request
from common.teacher.config import TeacherConfig
from train import grpo, recipe, unsloth_adapter
from train.grpo_config import GRPOConfig


def vllm_here(monkeypatch, installed: bool, device: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "vllm" and installed else (None if name == "vllm" else real(name, *a)),
    )
    monkeypatch.setattr(grpo.loading, "device", lambda: device)


@pytest.mark.parametrize(
    "asked, installed, device, chosen",
    [
        ("auto", True, "cuda", "vllm"),
        ("auto", False, "cuda", "transformers"),
        ("auto", True, "cpu", "transformers"),
        ("transformers", True, "cuda", "transformers"),
        ("vllm", True, "cuda", "vllm"),
    ],
)
def test_choose_generation(monkeypatch, asked, installed, device, chosen):
    vllm_here(monkeypatch, installed, device)
    assert grpo.choose_generation(GRPOConfig(data="d", generation=asked)) == chosen


@pytest.mark.parametrize("installed, device", [(False, "cuda"), (True, "cpu")])
def test_asking_for_vllm_where_it_cannot_run_is_a_user_error(monkeypatch, installed, device):
    vllm_here(monkeypatch, installed, device)
    with pytest.raises(UserError, match="generation=vllm needs vLLM and a CUDA GPU"):
        grpo.choose_generation(GRPOConfig(data="d", generation="vllm"))


@pytest.mark.parametrize(
    "backend, generation, use_vllm", [("hf", "vllm", True), ("unsloth", "vllm", False), ("hf", "transformers", False)]
)
def test_trl_gets_vllm_colocated_with_the_memory_share_only_for_hf(
    monkeypatch, tmp_path, backend, generation, use_vllm
):
    """TRL samples with vLLM for the hf backend; under Unsloth, its own fast_inference engine does (TRL's stays off)."""
    monkeypatch.setattr(
        grpo.recipe, "common_args", lambda *a: {"output_dir": str(tmp_path), "use_cpu": True, "report_to": "none"}
    )
    cfg = GRPOConfig(data="d", vllm_memory=0.35, batch_size=2, num_generations=4)
    plan = SimpleNamespace(generation=generation, backend=backend, weights=[1.0], lengths={"max_completion_length": 64},
                           spec=None, model=None, out=tmp_path, optim="adamw_torch")
    args = grpo.grpo_args(cfg, plan)
    assert args.use_vllm is use_vllm and args.vllm_mode == "colocate" and args.vllm_gpu_memory_utilization == 0.35


def fake_unsloth(monkeypatch) -> list[dict]:
    """An `unsloth` module whose FastLanguageModel.from_pretrained records its keyword arguments."""
    calls: list[dict] = []

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            calls.append(kwargs)
            return "model", "tokenizer"

    module = ModuleType("unsloth")
    module.FastLanguageModel = FastLanguageModel
    monkeypatch.setitem(sys.modules, "unsloth", module)
    monkeypatch.setattr(unsloth_adapter, "add_lora", lambda model, spec, checkpointing: model)
    monkeypatch.setattr(unsloth_adapter, "checkpointing_mode", lambda spec, wanted: False)
    return calls


def test_unsloth_fast_inference_gets_the_lora_rank_and_the_memory_share(monkeypatch, tmp_path):
    calls = fake_unsloth(monkeypatch)
    cfg = GRPOConfig(data="d", lora_r=24, vllm_memory=0.4)
    spec = recipe.model_spec(cfg, "base-model", "base-model", 512)
    unsloth_adapter.load_for_grpo(spec, True, cfg.vllm_memory)
    adapter = tmp_path / "sft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 64, "base_model_name_or_path": "base-model"}))
    unsloth_adapter.load_for_grpo(recipe.model_spec(cfg, "base-model", "base-model", 512, str(adapter)), True, 0.4)
    unsloth_adapter.load_for_grpo(spec, False, cfg.vllm_memory)
    vllm_keys = ("fast_inference", "max_lora_rank", "gpu_memory_utilization")
    assert [{k: c[k] for k in vllm_keys if k in c} for c in calls] == [
        {
            "fast_inference": True,
            "max_lora_rank": 24,
            "gpu_memory_utilization": 0.4,
        },  # a new adapter: the config's rank
        {"fast_inference": True, "max_lora_rank": 64, "gpu_memory_utilization": 0.4},  # an SFT adapter: its own rank
        {},  # transformers sampling: no engine
    ]
    assert all(c["max_seq_length"] == 512 for c in calls)


def test_the_vllm_teacher_builds_its_engine_and_asks_in_batches_through_llm_chat(monkeypatch):
    from common.teacher.backend_vllm import VLLMTeacher

    made, chats = [], []

    class LLM:
        def __init__(self, **kwargs):
            made.append(kwargs)

        def chat(self, conversations, sampling_params, use_tqdm):
            chats.append((conversations, sampling_params))
            done = SimpleNamespace(text='{"items": []}', finish_reason="stop", token_ids=[1])
            return [SimpleNamespace(outputs=[done], prompt_token_ids=[0]) for _ in conversations]

    module = ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, Params
    module.sampling_params = SimpleNamespace(StructuredOutputsParams=Params)
    monkeypatch.setitem(sys.modules, "vllm", module)
    cfg = TeacherConfig(
        backend="vllm",
        model="embedded",
        batch_size=2,
        seed=5,
        engine_args={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8},
    )
    teacher = VLLMTeacher(cfg)
    asks = [Request(f"k{n}", [{"role": "user", "content": f"q{n}"}], {"type": "object"}, 64) for n in range(5)]
    answers = list(teacher.generate(asks))
    assert made == [
        {"model": resolve_model("embedded"), "seed": 5, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8}
    ]
    assert [len(conversations) for conversations, _ in chats] == [2, 2, 1]
    assert [r.key for r in answers] == [f"k{n}" for n in range(5)] and all(r.text == '{"items": []}' for r in answers)
    assert chats[0][1][0].kwargs["structured_outputs"].kwargs == {"json": {"type": "object"}}


def test_the_docs_say_in_process_vllm_is_not_yet_verified():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for doc in ("README.md", "docs/teachers.md", "docs/grpo.md", "docs/scale.md"):
        assert "not yet verified" in (root / doc).read_text().lower(), doc
