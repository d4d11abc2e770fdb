"""Planning cost of `distill gen`: milliseconds a chunk that `generate.stage.make_plan` spends building
the run's prompts and request schemas, before the first request. The Ray driver runs it once more over
the whole corpus (generate/ray_stage.py's gather), on one core, so at scale it is the driver's clock.

Run: PYTHONPATH=. .venv/bin/python bench/plan_throughput.py [--files 200] [--repeat 3]

The corpus is bench/ingest_throughput.py's (generated PDF, HTML, DOCX and Markdown, ~2.9 chunks a file),
read and chunked first (not timed); then make_plan for each built-in task with its defaults (qa: facts
first, span answers, structured output: one schema branch per sentence and answer span; reasoning: one
prompt a chunk), the median of --repeat runs, each with generate.spans's caches emptied first. The
prompts' content is hashed, so a change that must not alter them can be checked against an earlier run
(`sha256`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_throughput import cpu_model, make_corpus  # noqa: E402

from generate import spans  # noqa: E402
from generate.chunk import chunk_documents  # noqa: E402
from generate.config import GenConfig  # noqa: E402
from generate.ingest import discover, read_all  # noqa: E402
from generate.stage import load_tokenizer, make_plan  # noqa: E402
from generate.tasks import load_task  # noqa: E402


def cold() -> None:
    """Empty generate.spans's caches (of a sentence's words, subject, ...), so no run reuses an earlier one's."""
    for value in vars(spans).values():
        getattr(value, "cache_clear", lambda: None)()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result = {"files": args.files, "cpu": cpu_model()}
    with tempfile.TemporaryDirectory() as tmp:
        make_corpus(Path(tmp), args.files)
        for name in ("qa", "reasoning"):
            cfg = GenConfig(inputs=[tmp], task=name)
            docs, skipped = read_all(discover(cfg.inputs), cfg.max_file_mb)
            chunks = chunk_documents(docs, load_tokenizer(cfg.tokenizer), cfg.chunk_tokens, cfg.chunk_overlap)
            task = load_task(cfg.task, cfg.prompt_file, cfg.schema_file)
            seconds, plan = [], None
            for _ in range(args.repeat):
                cold()
                started = time.perf_counter()
                plan = make_plan(cfg, task, Path(tmp) / "out", docs, skipped, chunks)
                seconds.append(time.perf_counter() - started)
            digest = hashlib.sha256()
            for prompt in plan.prompts:
                asked = [prompt.messages, prompt.schema, prompt.max_new_tokens]
                digest.update(json.dumps(asked, sort_keys=True).encode())
            result[name] = {
                "chunks": len(chunks),
                "prompts": len(plan.prompts),
                "ms_a_chunk": round(1000 * statistics.median(seconds) / len(chunks), 2),
                "sha256": digest.hexdigest()[:16],
            }
            print(f"{name}: {json.dumps(result[name])}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
