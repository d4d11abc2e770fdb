"""`distill gen` for real: the embedded teacher (SmolLM2-135M-Instruct on CPU) in a subprocess,
on small documents of every supported format; then SIGKILL mid-run and resume.

Tiny settings keep each run short: few chunks, one pair per chunk, short outputs. The CLI runs
with one torch thread: on a shared 2-core machine, two OpenMP threads per process spin against
the other jobs' threads (measured here under load: 32 tokens took 48 s with 2 threads, 6 s with 1).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import schemas
from common.teacher.ask import prompt_key
from generate.config import GenConfig
from generate.ingest import corpus_root, read
from generate.stage import setup
from generate.validate import grounded

from conftest import write_broken, write_every_format

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "COLUMNS": "500"}


def distill_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "distill", *args]


def run_distill(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE}
    return subprocess.run(distill_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cache_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    db = sqlite3.connect(path, timeout=30)
    try:
        return {key for (key,) in db.execute("SELECT key FROM responses")}
    except sqlite3.OperationalError:  # the table is not created yet
        return set()
    finally:
        db.close()


def check_outputs(out: Path, manifest: dict) -> list[dict]:
    """Every record valid, grounded, pointing into its document; counts agree with the files."""
    assert schemas.errors("manifest", manifest) == []
    records = rows(out / "train.jsonl") + rows(out / "test.jsonl")
    rejects = rows(out / "rejects.jsonl")
    counts = manifest["counts"]
    assert len(records) == counts["train"] + counts["test"] == counts["accepted"] - counts["test_near_duplicates_removed"]
    assert len({r["id"] for r in records}) == len(records)
    assert sum(manifest["rejected"].values()) == len(rejects)
    for record in records:
        assert schemas.errors("record", record) == []
        source = record["source"]
        document = Path(corpus_root(manifest["config"]["inputs"])) / source["doc"]  # named under the corpus root
        assert read(document)[source["start"] : source["end"]] == record["context"]
        assert grounded(record["evidence"], record["context"])
        assert record["teacher"] == {"backend": "local", "model": "embedded"}
    return records


def test_gen_on_every_format_with_the_embedded_teacher(tmp_path):
    docs = tmp_path / "docs"
    paths = write_every_format(docs)
    broken = write_broken(docs / "broken")
    out = tmp_path / "data"
    args = ["gen", str(docs), "--out", str(out), "-n", "1", "--test-fraction", "0.2", "--export", "openai", "teacher.max_new_tokens=160", "teacher.batch_size=5"]
    done = run_distill(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert manifest["status"] == "complete" and manifest["teacher"] == {"backend": "local", "model": "embedded"}
    assert counts["docs"] == len(paths) and counts["files_skipped"] == len(broken)
    assert counts["chunks"] == counts["requests"] == len(paths)  # each small document is one chunk
    assert counts["sent"] == counts["requests"] + counts["repairs"] and counts["cache_hits"] == 0
    assert manifest["tokens"]["completion"] > 0 and manifest["tokens"]["prompt"] > 0
    records = check_outputs(out, manifest)
    assert len(records) >= 2, (manifest["rejected"], (out / "rejects.jsonl").read_text()[:2000])
    assert {Path(r["source"]["doc"]).suffix for r in records} <= {".txt", ".md", ".html", ".pdf", ".docx"}
    assert len(rows(out / "train.openai.jsonl")) == counts["train"]
    # the summary table on stdout names the counts and every skipped file
    assert "distill gen: complete" in done.stdout and "skipped" in done.stdout
    assert all(p.name in done.stdout for p in broken.values())

    again = run_distill(*args, "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert second["counts"]["sent"] == 0 and second["counts"]["cache_hits"] == len(paths)
    assert rows(out / "train.jsonl") + rows(out / "test.jsonl") == records


def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    docs = tmp_path / "docs"
    write_every_format(docs)
    out = tmp_path / "data"
    cache = out / "cache.sqlite"
    args = ["gen", str(docs), "--out", str(out), "-n", "1", "--max-chunks", "3", "--quiet", "--test-fraction", "0", "teacher.batch_size=1", "teacher.max_new_tokens=128"]
    proc = subprocess.Popen(distill_cmd(*args), cwd=ROOT, env={**os.environ, **OFFLINE}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not cache_keys(cache) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill: {stderr.decode()[-2000:]}"
    answered = cache_keys(cache)
    assert answered and not (out / "manifest.json").exists()

    cfg = GenConfig(inputs=[str(docs)], out=str(out), pairs_per_chunk=1, max_chunks=3, test_fraction=0, teacher={"batch_size": 1, "max_new_tokens": 128})
    plan = setup(cfg)
    planned = {prompt_key(cfg.teacher, p) for p in plan.prompts}
    assert len(planned) == 3 and (answered & planned) and len(answered & planned) < len(planned)

    resumed = run_distill(*args, "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = json.loads(resumed.stdout)
    counts = manifest["counts"]
    after = cache_keys(cache)
    assert manifest["status"] == "complete" and counts["requests"] == len(planned)
    # nothing answered before the kill was sent again: it came from the cache, and every request
    # sent now added a new row (a re-sent request would replace its row instead)
    assert counts["cache_hits"] == len(answered & planned)
    assert answered <= after and len(after) - len(answered) == counts["sent"]
    assert len(planned) - counts["cache_hits"] <= counts["sent"] <= len(planned) - counts["cache_hits"] + counts["repairs"]
    assert planned <= after  # every chunk got its answer
    # no record lost, none duplicated: every answered request is in the outputs, once
    records = check_outputs(out, manifest)
    rejects = rows(out / "rejects.jsonl")
    chunk_of = {prompt_key(cfg.teacher, p): p.tag.key for p in plan.prompts}
    seen_chunks = {f"{r['source']['doc']}#{r['source']['chunk']}" for r in records} | {r["chunk"] for r in rejects}
    assert {chunk_of[k] for k in answered & planned} <= seen_chunks
    assert seen_chunks == set(chunk_of.values())
