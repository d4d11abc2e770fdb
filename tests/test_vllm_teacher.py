"""The vllm teacher without vLLM: request building for both vLLM API generations, output mapping, the missing-extra error."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from common.errors import UserError
from common.teacher.backend_vllm import VLLMTeacher, build_batch, to_response
from common.teacher.backends import Request
from common.teacher.config import TeacherConfig
from generate.tasks import load_task

TASK = load_task("qa")
PASSAGE = "The river Vexo flows north past the town of Brel. The mills of Brel grind rye and barley."


class Params:
    """Stands in for vllm.SamplingParams / StructuredOutputsParams: records its keyword arguments."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


def fake_vllm(current: bool = True) -> SimpleNamespace:
    spelling = {"StructuredOutputsParams": Params} if current else {"GuidedDecodingParams": Params}
    return SimpleNamespace(SamplingParams=Params, sampling_params=SimpleNamespace(**spelling))


def requests() -> list[Request]:
    return [Request(f"k{n}", TASK.messages(PASSAGE, n), TASK.request_schema(n, PASSAGE), 300 + n) for n in (1, 2)]


@pytest.mark.parametrize("current, keyword", [(True, "structured_outputs"), (False, "guided_decoding")])
def test_batch_carries_messages_parameters_and_each_schema(current, keyword):
    cfg = TeacherConfig(backend="vllm", model="m", temperature=0.2, top_p=0.9, seed=3)
    conversations, params = build_batch(cfg, requests(), fake_vllm(current))
    assert conversations == [r.messages for r in requests()]
    for request, param in zip(requests(), params):
        kwargs = param.kwargs
        assert {k: kwargs[k] for k in ("temperature", "top_p", "max_tokens", "seed")} == {"temperature": 0.2, "top_p": 0.9, "max_tokens": request.max_new_tokens, "seed": 3}
        assert kwargs[keyword].kwargs == {"json": request.schema}


def test_unstructured_batch_has_no_constraint_and_no_seed():
    cfg = TeacherConfig(backend="vllm", model="m", structured=False, seed=None)
    _, params = build_batch(cfg, requests(), fake_vllm())
    assert all(set(p.kwargs) == {"temperature", "top_p", "max_tokens"} for p in params)


def test_output_is_mapped_with_the_trace_split_off():
    best = SimpleNamespace(text='<think>Step one.</think>\n{"items": []}', finish_reason="length", token_ids=[1, 2, 3])
    response = to_response(requests()[0], SimpleNamespace(outputs=[best], prompt_token_ids=[7] * 11))
    assert (response.text, response.reasoning, response.finish_reason) == ('{"items": []}', "Step one.", "length")
    assert (response.prompt_tokens, response.completion_tokens) == (11, 3)


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(UserError, match=r"pip install 'distill\[vllm\]'"):
        VLLMTeacher(TeacherConfig(backend="vllm", model="m"))
