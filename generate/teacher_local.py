"""The `local` teacher: in-process transformers generation with xgrammar-constrained JSON.

Requests are sorted by prompt length and generated in batches (left padding); every row has
its own grammar (the task schema, with evidence limited to the chunk's sentences), so the
output always parses and the quote always occurs in the chunk.
"""

from __future__ import annotations

import json
from typing import Iterator

import torch

from distill.models import resolve_model
from generate.config import TeacherConfig
from generate.teacher import Request, Response


class LocalTeacher:
    name = "local"

    def __init__(self, cfg: TeacherConfig):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.model = cfg.model
        path = resolve_model(cfg.model)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self._grammars = GrammarFactory(self.tokenizer, self.lm.config.vocab_size)

    def generate(self, requests: list[Request]) -> Iterator[Response]:
        prompts = {r.key: self._prompt(r) for r in requests}
        ordered = sorted(requests, key=lambda r: len(prompts[r.key]))
        size = self.cfg.batch_size
        for start in range(0, len(ordered), size):
            batch = ordered[start : start + size]
            yield from self._batch(batch, [prompts[r.key] for r in batch])

    def _prompt(self, request: Request) -> str:
        return self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def _batch(self, batch: list[Request], prompts: list[str]) -> list[Response]:
        from transformers import LogitsProcessorList

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        processors = LogitsProcessorList()
        if self.cfg.structured:
            processors.append(self._grammars.processor([r.schema for r in batch]))
        if self.cfg.seed is not None:
            torch.manual_seed(self.cfg.seed)
        sample = self.cfg.temperature > 0
        out = self.lm.generate(
            **enc,
            max_new_tokens=max(r.max_new_tokens for r in batch),
            do_sample=sample,
            temperature=self.cfg.temperature if sample else None,
            top_p=self.cfg.top_p if sample else None,
            top_k=None,
            logits_processor=processors,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self._grammars.stop_ids,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        return [self._response(r, row, int(mask.sum())) for r, row, mask in zip(batch, new, enc["attention_mask"])]

    def _response(self, request: Request, row: torch.Tensor, prompt_tokens: int) -> Response:
        ids = row.tolist()
        stops = set(self._grammars.stop_ids)
        end = next((i for i, t in enumerate(ids) if t in stops), None)
        finished = end is not None
        ids = ids[:end] if finished else [t for t in ids if t != self.tokenizer.pad_token_id]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Response(
            key=request.key,
            text=text,
            finish_reason="stop" if finished else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(ids) + int(finished),
        )

    def close(self) -> None:
        self.lm = None


class GrammarFactory:
    """Compiles JSON Schemas to xgrammar grammars (memoized) and builds batch logits processors."""

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr

        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=2)
        self.stop_ids = list(self.info.stop_token_ids)
        self._compiled: dict[str, object] = {}

    def compile(self, schema: dict):
        key = json.dumps(without_lengths(schema))
        if key not in self._compiled:
            self._compiled[key] = self.compiler.compile_json_schema(key, any_whitespace=False)
        return self._compiled[key]

    def processor(self, schemas: list[dict]) -> "GrammarProcessor":
        return GrammarProcessor([self.compile(s) for s in schemas], self.info.vocab_size)


def without_lengths(node):
    """The schema less string length bounds: xgrammar compiles them slowly (0.5 s against 1 ms here),
    and validation checks them after generation anyway. Key order is kept: it is the output order."""
    if isinstance(node, dict):
        return {k: without_lengths(v) for k, v in node.items() if k not in ("minLength", "maxLength")}
    if isinstance(node, list):
        return [without_lengths(v) for v in node]
    return node


class GrammarProcessor:
    """A transformers logits processor holding one grammar matcher per batch row."""

    def __init__(self, compiled: list, vocab_size: int):
        import xgrammar as xgr

        self.xgr = xgr
        self.matchers = [xgr.GrammarMatcher(c) for c in compiled]
        self.bitmask = xgr.allocate_token_bitmask(len(compiled), vocab_size)
        self.started = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.started:
            for matcher, token in zip(self.matchers, input_ids[:, -1].tolist()):
                if not matcher.is_terminated():
                    matcher.accept_token(token)
        self.started = True
        for row, matcher in enumerate(self.matchers):
            if matcher.is_terminated():
                self.bitmask[row].fill_(-1)  # finished rows: anything (transformers pads them)
            else:
                matcher.fill_next_token_bitmask(self.bitmask, row)
        self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        return scores
