"""`distill eval` with engine=vllm, on the CPU, against a fake `vllm` module (no real vLLM runs here: docs/scale.md
says so): which engine `auto` picks, the engines made (one per base, LoRA on where adapters sit on it), what each
chat call sends (the questions, greedy parameters, each adapter's LoRARequest and chat template), and the answers
mapped back to their questions in order."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from common import vllm_local
from common.contract import prompt_messages
from common.errors import UserError
from common.io import read_jsonl, write_jsonl
from common.models import resolve_model
from evaluation import engines
from evaluation.config import EvalConfig
from evaluation.stage import run_eval

from trainkit import data_dir


class Params:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class LoRARequest:
    def __init__(self, name, number, path):
        self.name, self.number, self.path = name, number, path


def fake_vllm(monkeypatch) -> SimpleNamespace:
    """A `vllm` module whose LLM records how it was made and every chat call, and answers '<who>|<question>'."""
    seen = SimpleNamespace(made=[], chats=[])

    class LLM:
        def __init__(self, **kwargs):
            seen.made.append(kwargs)
            self.model = kwargs["model"]

        def chat(self, conversations, sampling_params, use_tqdm=True, lora_request=None, chat_template=None):
            seen.chats.append(
                dict(
                    model=self.model,
                    conversations=conversations,
                    params=sampling_params.kwargs,
                    use_tqdm=use_tqdm,
                    lora=lora_request,
                    template=chat_template,
                )
            )
            who = lora_request.name if lora_request else Path(self.model).name
            return [
                SimpleNamespace(outputs=[SimpleNamespace(text=f" {who}|{c[-1]['content']} ", token_ids=[5] * (n + 1))])
                for n, c in enumerate(conversations)
            ]

    module = ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, Params
    request = ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.lora", ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    monkeypatch.setattr(vllm_local, "available", lambda: True)
    return seen


def adapter(folder: Path, rank: int, tokenizer=None) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "base_model_name_or_path": "embedded"}))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def with_facts(folder: Path) -> Path:
    """Knowledge data: every test question's fact is taught by a training record (taught questions get asked)."""
    for split in ("train", "test"):
        rows = read_jsonl(folder / f"{split}.jsonl")
        write_jsonl(folder / f"{split}.jsonl", [{**r, "fact": f"{n % 4:016x}"} for n, r in enumerate(rows)])
    return folder


@pytest.mark.parametrize(
    "asked, installed, cuda, chosen",
    [
        ("auto", True, True, "vllm"),
        ("auto", False, True, "transformers"),
        ("auto", True, False, "transformers"),
        ("transformers", True, True, "transformers"),
        ("vllm", True, True, "vllm"),
    ],
)
def test_choose_engine(monkeypatch, asked, installed, cuda, chosen):
    import torch

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (object() if installed else None) if name == "vllm" else real(name, *a),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert engines.choose_engine(asked) == chosen


def test_engine_vllm_where_it_cannot_run_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setattr(vllm_local, "available", lambda: False)
    cfg = EvalConfig(data=str(data_dir(tmp_path / "data")), out=str(tmp_path / "eval"), engine="vllm")
    with pytest.raises(UserError, match="engine=vllm needs vLLM and a CUDA GPU"):
        run_eval(cfg, show_progress=False)


def test_vllm_serves_the_base_and_its_adapters_from_one_engine(monkeypatch, tmp_path, tokenizer):
    seen = fake_vllm(monkeypatch)
    data = with_facts(data_dir(tmp_path / "data", n=8))
    wide = adapter(tmp_path / "wide", 40, tokenizer)  # carries its tokenizer: its chat template goes with its questions
    narrow = adapter(tmp_path / "narrow", 16)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    cfg = EvalConfig(
        data=str(data),
        out=str(tmp_path / "eval"),
        students=[str(merged), str(wide), str(narrow)],
        engine="vllm",
        max_new_tokens=48,
        vllm_args={"gpu_memory_utilization": 0.5},
    )
    metrics = run_eval(cfg, show_progress=False)
    base = resolve_model("embedded")
    lora = {"enable_lora": True, "max_lora_rank": 64, "max_loras": 1}  # 40 rounded up to a rank vLLM accepts
    # the base's engine (base + 2 adapters), then the merged student's; the taught questions start on the loaded one
    with_lora, alone = (
        {"model": base, "seed": 0, **lora, "gpu_memory_utilization": 0.5},
        {"model": str(merged), "seed": 0, "gpu_memory_utilization": 0.5},
    )
    assert seen.made == [with_lora, alone, with_lora]
    records = read_jsonl(data / "test.jsonl")
    test_calls = seen.chats[:4]
    name = Path(base).name
    assert [
        (Path(c["model"]).name, c["lora"] and (c["lora"].name, c["lora"].number, c["lora"].path)) for c in test_calls
    ] == [(name, None), (name, ("wide", 1, str(wide))), (name, ("narrow", 2, str(narrow))), ("merged", None)]
    assert all(c["conversations"] == [prompt_messages(r, "closed-book") for r in records] for c in test_calls)
    assert all(c["params"] == {"temperature": 0.0, "max_tokens": 48} and c["use_tqdm"] is False for c in seen.chats)
    assert [c["template"] for c in test_calls] == [None, tokenizer.chat_template, None, None]
    assert (
        metrics["engine"] == "vllm" and metrics["train_questions"]["questions"] == 8
    )  # every training record: 4 of the test facts first
    assert [Path(c["model"]).name for c in seen.chats[4:]] == ["merged"] + [name] * 3
    rows = read_jsonl(tmp_path / "eval" / "predictions.jsonl", schema=None)
    for label, who in (("base", Path(base).name), ("wide", "wide"), ("narrow", "narrow"), ("merged", "merged")):
        answers = [r for r in rows if r["model"] == label]
        assert [a["output"] for a in answers] == [f"{who}|{r['question']}" for r in records]
    assert metrics["models"]["wide"]["perf"]["output_tokens"] == 1 + 2 + 3 + 4
