"""The `vllm` teacher: in-process `vllm.LLM` batch generation with schema-constrained JSON.

vLLM is an optional extra (`pip install distill[vllm]`), imported only when this backend is
chosen. Requests go to `LLM.chat` in batches of `batch_size` (vLLM schedules each batch
itself); every request carries its own JSON Schema as a structured-output constraint:
`SamplingParams(structured_outputs=StructuredOutputsParams(json=...))` in current vLLM,
`SamplingParams(guided_decoding=GuidedDecodingParams(json=...))` before 0.11. A native
reasoning trace in the text (`<think>...</think>`) is split off as for the openai backend.
"""

from __future__ import annotations

from typing import Iterator

from common import vllm_local
from common.models import resolve_model
from common.teacher.backends import Request, Response, split_reasoning
from common.teacher.config import TeacherConfig


def import_vllm():
    return vllm_local.import_vllm("the vllm teacher", "use --teacher openai/local")


def constraint(schema: dict, vllm_module) -> dict:
    """The SamplingParams keyword that constrains output to `schema`, in this vLLM's spelling."""
    params = vllm_module.sampling_params
    if hasattr(params, "StructuredOutputsParams"):
        return {"structured_outputs": params.StructuredOutputsParams(json=schema)}
    return {"guided_decoding": params.GuidedDecodingParams(json=schema)}


def sampling_kwargs(cfg: TeacherConfig, request: Request) -> dict:
    """Generation parameters of one request (the structured-output constraint is added apart)."""
    kwargs = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": request.max_new_tokens}
    if cfg.seed is not None:
        kwargs["seed"] = cfg.seed
    return kwargs


def build_batch(cfg: TeacherConfig, requests: list[Request], vllm_module) -> tuple[list[list[dict]], list]:
    """(conversations, sampling params), one of each per request, in request order."""
    params = []
    for request in requests:
        extra = constraint(request.schema, vllm_module) if cfg.structured and request.schema is not None else {}
        params.append(vllm_module.SamplingParams(**sampling_kwargs(cfg, request), **extra))
    return [r.messages for r in requests], params


def to_response(request: Request, output) -> Response:
    """A vLLM RequestOutput -> Response (trace split off, tokens counted)."""
    best = output.outputs[0]
    text, trace = split_reasoning(best.text)
    return Response(
        key=request.key,
        text=text,
        reasoning=trace,
        finish_reason=best.finish_reason or "stop",
        prompt_tokens=len(output.prompt_token_ids or []),
        completion_tokens=len(best.token_ids or []),
    )


class VLLMTeacher:
    name = "vllm"

    def __init__(self, cfg: TeacherConfig):
        self.vllm = import_vllm()
        self.cfg, self.model = cfg, cfg.model
        args = {"seed": cfg.seed or 0, **cfg.engine_args}
        self.llm = self.vllm.LLM(model=resolve_model(cfg.model), **args)

    def generate(self, requests: list[Request]) -> Iterator[Response]:
        size = self.cfg.batch_size
        for start in range(0, len(requests), size):
            batch = requests[start : start + size]
            conversations, params = build_batch(self.cfg, batch, self.vllm)
            outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
            yield from (to_response(r, o) for r, o in zip(batch, outputs))

    def close(self) -> None:
        self.llm = None
