"""Evaluation throughput of the embedded student (SmolLM2-135M-Instruct) on CPU: questions/s
answered by `distill eval`'s generation path (evaluation.inference.generate_counted), batched
against one question at a time. Both runs answer the same questions, greedy, same token limit.

Run: .venv/bin/python bench/eval_throughput.py [--questions 16] [--max-new-tokens 64] [--batch-size 8] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from common.generation import generate_counted
from evaluation.inference import load_model

QUESTIONS = [
    "What does the while statement do in Python?",
    "When is the else clause of a for loop executed?",
    "What does the break statement do?",
    "What is the purpose of the finally clause?",
    "What does the with statement guarantee?",
    "What happens when an assert statement fails?",
    "What does a return statement without an expression return?",
    "How does the import statement find a module?",
    "What does the global statement declare?",
    "What can a lambda expression contain?",
    "What does the del statement do to a name?",
    "When is the pass statement useful?",
    "What does the continue statement do inside a loop?",
    "Which exception does a failed assert raise?",
    "What does the if statement evaluate first?",
    "Can a try statement have both except and finally clauses?",
]


def measure(model, tokenizer, conversations, max_new_tokens: int, batch_size: int) -> dict:
    started = time.perf_counter()
    _, tokens = generate_counted(model, tokenizer, conversations, max_new_tokens, batch_size)
    wall = time.perf_counter() - started
    return {"batch_size": batch_size, "wall_s": wall, "questions_per_s": len(conversations) / wall, "tokens_per_s": sum(tokens) / wall, "tokens": sum(tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model("embedded", device="cpu")
    conversations = [[{"role": "user", "content": q}] for q in (QUESTIONS * 4)[: args.questions]]
    generate_counted(model, tokenizer, conversations[:2], 4, 2)  # warm-up
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    print(f"{args.questions} questions, greedy, max_new_tokens={args.max_new_tokens}")
    for batch_size in (1, args.batch_size):
        r = measure(model, tokenizer, conversations, args.max_new_tokens, batch_size)
        print(f"batch_size={r['batch_size']:>2}: {r['questions_per_s']:.2f} questions/s, {r['tokens_per_s']:.1f} tokens/s ({r['tokens']} tokens in {r['wall_s']:.1f} s)")


if __name__ == "__main__":
    main()
