"""Reading + chunking throughput: documents/s of `distill gen`'s ingest in one process and on a local Ray.

Run: PYTHONPATH=. .venv/bin/python bench/ingest_throughput.py [--files 2000] [--cpus 2] [--out results.json]

The corpus: --files generated documents, a quarter each of PDF, HTML, DOCX and Markdown (the
writers of tests/conftest.py), each ~2-3 KB of made-up words in 6-10 paragraphs, in a temporary folder.
single: generate.ingest.read_all + generate.chunk.chunk_documents in this process, as `distill gen` runs them.
ray:    generate.ray_stage.read_and_chunk in Ray Data map_batches tasks over the file paths
        (what `distill gen --ray` runs), on a local Ray started with --cpus CPUs; run twice: `cold`
        includes starting the worker processes (imports, tokenizer load), `warm` reuses them.
The tokenizer load of the single run and ray.init are outside the timings. Both must produce the
same number of chunks (checked). Ratio per core: ray rate / (cpus x single rate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from generate.chunk import chunk_documents
from generate.config import GenConfig, RayConfig
from generate.ingest import discover, read_all
from generate.stage import load_tokenizer

from conftest import write_docx, write_html, write_md, write_pdf

WRITERS = ("pdf", "html", "docx", "md")


def make_corpus(folder: Path, files: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
        for _ in range(3000)
    ]

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 14))).capitalize() + "."

    for i in range(files):
        kind, title = WRITERS[i % 4], f"Topic {i}"
        paragraphs = [" ".join(sentence() for _ in range(3)) for _ in range(rng.randint(6, 10))]
        if kind == "pdf":  # one page of short lines
            write_pdf(folder / f"d{i:05}.pdf", [s for p in paragraphs for s in p.split(". ")][:45])
        elif kind == "html":
            write_html(folder / f"d{i:05}.html", title, paragraphs)
        elif kind == "docx":
            write_docx(folder / f"d{i:05}.docx", title, paragraphs)
        else:
            write_md(folder / f"d{i:05}.md", title, paragraphs)


def single(cfg: GenConfig) -> dict:
    tokenizer = load_tokenizer(cfg.tokenizer)
    started = time.perf_counter()
    docs, skipped = read_all(discover(cfg.inputs), cfg.max_file_mb)
    chunks = chunk_documents(docs, tokenizer, cfg.chunk_tokens, cfg.chunk_overlap)
    seconds = time.perf_counter() - started
    return {
        "docs": len(docs),
        "skipped": len(skipped),
        "chunks": len(chunks),
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(docs) / seconds, 1),
    }


def on_ray(cfg: GenConfig, cpus: int, files_per_batch: int) -> dict:
    import ray

    from generate.ray_stage import read_and_chunk

    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    paths = [{"ordinal": i, "path": str(p)} for i, p in enumerate(discover(cfg.inputs))]
    results = {}
    try:
        for run in ("cold", "warm"):
            started = time.perf_counter()
            rows = (
                ray.data.from_items(paths)
                .map_batches(read_and_chunk, fn_kwargs={"cfg": cfg.model_dump(mode="json")}, batch_size=files_per_batch)
                .take_all()
            )
            seconds = time.perf_counter() - started
            docs = sum(1 for r in rows if not r["skipped"])
            chunks = sum(len(json.loads(r["chunks"])) for r in rows)
            results[run] = {
                "docs": docs,
                "chunks": chunks,
                "seconds": round(seconds, 2),
                "docs_per_s": round(docs / seconds, 1),
            }
    finally:
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--files-per-batch", type=int, default=RayConfig().files_per_batch)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_corpus(Path(tmp), args.files)
        cfg = GenConfig(inputs=[tmp])
        result = {
            "files": args.files,
            "cpus": args.cpus,
            "machine": platform.processor() or platform.machine(),
            "load_before": os.getloadavg(),
        }
        result["single"] = single(cfg)
        result["ray"] = on_ray(cfg, args.cpus, args.files_per_batch)
        result["load_after"] = os.getloadavg()
    for run in ("cold", "warm"):
        assert result["ray"][run]["chunks"] == result["single"]["chunks"], (run, result)
        result["ray"][run]["ratio_per_core"] = round(
            result["ray"][run]["docs_per_s"] / (args.cpus * result["single"]["docs_per_s"]), 2
        )
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
