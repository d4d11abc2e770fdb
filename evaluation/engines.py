"""Which engine generates the base's and the students' answers in `distill eval` (`engine:`):
transformers (evaluation.inference + common.generation, batch by batch) or vLLM in process.

vLLM: one `vllm.LLM` per base model; a LoRA student is served on its base through a LoRARequest (no
merge), so the base and every adapter trained from it share one engine, which stays loaded for the
taught questions asked after the test (evaluation.recall). A merged student, or a student of another
base, gets an engine of its own (the previous one is freed first). Every answer is greedy
(temperature 0), at most max_new_tokens, in the order of the questions. Verified only against a fake
`vllm` module (tests/test_eval_vllm.py): no real vLLM runs on this project's machines.
"""

from __future__ import annotations

import functools
import gc
import time
from dataclasses import dataclass
from pathlib import Path

from common import vllm_local
from common.errors import UserError
from common.models import resolve_model
from evaluation.answering import ModelRun, answer_local
from evaluation.inference import adapter_base, has_tokenizer


def choose_engine(asked: str) -> str:
    """vllm where vLLM is installed and a CUDA GPU is visible (auto), else transformers."""
    here = vllm_local.available()
    if asked == "vllm" and not here:
        raise UserError(
            f"engine=vllm needs vLLM and a CUDA GPU ({vllm_local.INSTALL}); use engine=transformers or auto"
        )
    return "vllm" if asked == "vllm" or (asked == "auto" and here) else "transformers"


def make_answerer(engine: str, names: list[str], cfg):
    """The answerer of `engine` for the models `names` (the base and the students), from EvalConfig `cfg`."""
    if engine == "vllm":
        return VLLMAnswerer(names, cfg.max_new_tokens, cfg.vllm_args)
    return TransformersAnswerer(cfg.max_new_tokens, cfg.batch_size)


def answer_all(answerer, runs: list[ModelRun], conversations: list[list[dict]], show=None) -> list[ModelRun]:
    """Every run answers every conversation; the runs of one engine are answered together (results in run order)."""
    groups = [answerer.group(run.name) for run in runs]
    first = {g: groups.index(g) for g in groups}  # engines in the order the runs first need them ...
    order = sorted(
        range(len(runs)), key=lambda i: (groups[i] != answerer.loaded, first[groups[i]])
    )  # ... the loaded first
    done: dict[int, ModelRun] = {}
    for i in order:
        done[i] = answerer.answer(runs[i], conversations)
        if show:
            show(done[i])
    return [done[i] for i in range(len(runs))]


class TransformersAnswerer:
    engine = "transformers"
    loaded = ""

    def __init__(self, max_new_tokens: int, batch_size: int):
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def group(self, name: str) -> str:
        return ""

    def answer(self, run: ModelRun, conversations: list[list[dict]]) -> ModelRun:
        return answer_local(run, conversations, self.max_new_tokens, self.batch_size)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Served:
    """How vLLM serves one model name: the weights its engine loads, and the LoRA adapter on them (or None)."""

    base: str
    adapter: Path | None = None


def served(name: str) -> Served:
    path = Path(resolve_model(name))
    if not (path / "adapter_config.json").is_file():
        return Served(str(path))
    return Served(resolve_model(adapter_base(path)), path)


class VLLMAnswerer:
    engine = "vllm"

    def __init__(self, names: list[str], max_new_tokens: int, engine_args: dict):
        self.vllm = vllm_local.import_vllm("engine=vllm", "use engine=transformers")
        self.max_new_tokens, self.engine_args = max_new_tokens, dict(engine_args)
        self.served = {name: served(name) for name in names}
        adapters = dict.fromkeys(s.adapter for s in self.served.values() if s.adapter)
        self.lora_ids = {adapter: n for n, adapter in enumerate(adapters, 1)}  # vLLM's id of each adapter, from 1
        self.llm, self.loaded = None, None

    def group(self, name: str) -> str:
        return self.served[name].base

    def engine_for(self, base: str):
        """The engine of `base`, made on first use; LoRA on when some adapter of this eval sits on it."""
        if self.loaded != base:
            self.close()
            ranks = [vllm_local.lora_rank(s.adapter) for s in self.served.values() if s.adapter and s.base == base]
            lora = (
                {"enable_lora": True, "max_lora_rank": vllm_local.max_lora_rank(ranks), "max_loras": 1} if ranks else {}
            )
            self.llm, self.loaded = self.vllm.LLM(**{"model": base, "seed": 0, **lora, **self.engine_args}), base
        return self.llm

    def answer(self, run: ModelRun, conversations: list[list[dict]]) -> ModelRun:
        where = self.served[run.name]
        started = time.perf_counter()
        llm = self.engine_for(where.base)
        run.load_s = time.perf_counter() - started
        params = self.vllm.SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)  # greedy
        extra = {}
        if where.adapter is not None:
            extra["lora_request"] = vllm_local.lora_request(
                self.vllm, run.label, self.lora_ids[where.adapter], where.adapter
            )
            if has_tokenizer(str(where.adapter)):  # the template the student was trained with (e.g. chatml on a base)
                extra["chat_template"] = adapter_template(where.adapter)
        started = time.perf_counter()
        outputs = llm.chat(conversations, sampling_params=params, use_tqdm=False, **extra)
        run.wall_s = time.perf_counter() - started
        run.outputs = [o.outputs[0].text.strip() for o in outputs]
        run.tokens = [len(o.outputs[0].token_ids or []) for o in outputs]
        return run

    def close(self) -> None:
        if self.llm is not None:
            self.llm, self.loaded = None, None
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


@functools.cache  # asked again for the taught questions after the test: the tokenizer is read once
def adapter_template(adapter: Path) -> str | None:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(adapter).chat_template
