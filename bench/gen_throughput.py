"""Local-teacher throughput: aggregate generated tokens/s at batch 1, 8 and 32.

Run: .venv/bin/python bench/gen_throughput.py [--batches 1 8 32] [--max-new-tokens 256]

Same requests for both engines, measured in the same run on the same machine:
  distill   -- generate/engine.py continuous batching + per-row xgrammar masks (what `distill gen` uses)
  baseline  -- transformers `model.generate` with static batches + xgrammar's own HF logits processor
Requests are the built-in `qa` task (2 items, evidence constrained to the chunk's sentences) on
sections of the Python language reference; SmolLM2-135M-Instruct, sampling at temperature 0.7.
Tokens counted: generated tokens up to and including the stop token; time: wall clock of the
whole batch loop (prefill included), model load and grammar compilation excluded.
"""

from __future__ import annotations

import argparse
import json
import platform
import pydoc_data.topics
import time

import torch

from common.teacher.backend_local import LocalTeacher
from common.teacher.backends import Request, request_key
from common.teacher.config import TeacherConfig
from generate.tasks import load_task


def make_requests(count: int, max_new_tokens: int) -> list[Request]:
    task = load_task("qa")
    names = sorted(k for k, v in pydoc_data.topics.topics.items() if len(v) > 1500)
    requests = []
    for i in range(count):
        chunk = pydoc_data.topics.topics[names[i % len(names)]][:1400]
        messages = task.messages(chunk, 2)
        schema = task.request_schema(2, chunk)
        requests.append(Request(request_key(messages, schema, "bench", {"i": i}), messages, schema, max_new_tokens))
    return requests


def run_distill(teacher: LocalTeacher, requests: list[Request]) -> tuple[int, float, int]:
    for r in requests:  # compile grammars outside the timed region, as the baseline does
        teacher.grammars.compile(r.schema)
    start = time.perf_counter()
    responses = list(teacher.generate(requests))
    elapsed = time.perf_counter() - start
    valid = sum(_parses(r.text) for r in responses)
    return sum(r.completion_tokens for r in responses), elapsed, valid


def run_baseline(teacher: LocalTeacher, requests: list[Request], batch: int) -> tuple[int, float, int]:
    import xgrammar as xgr

    tok, lm = teacher.tokenizer, teacher.lm
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    stops = teacher.grammars.stop_ids
    grammars = [teacher.grammars.compile(r.schema) for r in requests]
    tokens, valid, elapsed = 0, 0, 0.0
    for s in range(0, len(requests), batch):
        part = requests[s : s + batch]
        texts = [tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in part]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        processor = xgr.contrib.hf.LogitsProcessor(grammars[s : s + batch])
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.inference_mode():
            out = lm.generate(**enc, max_new_tokens=part[0].max_new_tokens, do_sample=True, temperature=0.7, top_p=0.95,
                              top_k=None, logits_processor=[processor], pad_token_id=tok.pad_token_id, eos_token_id=stops)
        elapsed += time.perf_counter() - start
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            tokens += end
            valid += _parses(tok.decode(row[:end], skip_special_tokens=True))
    return tokens, elapsed, valid


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="requests per run = rounds x batch (at least 4)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print("| batch | requests | engine | tokens | seconds | tokens/s | valid JSON |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batches:
        teacher = LocalTeacher(TeacherConfig(batch_size=batch, max_new_tokens=args.max_new_tokens))
        requests = make_requests(max(4, args.rounds * batch), args.max_new_tokens)
        engines = [("distill", lambda: run_distill(teacher, requests))]
        if not args.skip_baseline:
            engines.append(("hf generate", lambda: run_baseline(teacher, requests, batch)))
        for name, fn in engines:
            tokens, seconds, valid = fn()
            print(f"| {batch} | {len(requests)} | {name} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | {valid}/{len(requests)} |", flush=True)


if __name__ == "__main__":
    main()
