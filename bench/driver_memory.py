"""Memory of the corpus-wide steps of `distill gen`, per chunk and per record: in one process, or on the
`--ray` driver.

In one process (the default mode), the run holds every chunk and item after its teacher calls
(`single_process`), removes near-duplicates (generate.curate.curate) and writes the outputs
(generate.stage.save). This bench feeds that code the rows teacher actors return, made without Ray or a
teacher: chunks of `--chunk-chars` characters, each a run of distinct factual sentences ("The harbour of
Kelomira handled 4312 tonnes in 1923, after ..."), facts first with span answers as `distill gen` plans
them (generate.facts.sentence_facts: one fact per factual sentence), `--phrasings` questions a fact (alike
within a fact, unlike between facts, as a teacher writes them), each record's fields about as long as the
embedded teacher's (a question of ~50 characters, a short answer, the
sentence as evidence and reasoning). The rows arrive one batch at a time from a generator, as they do
from Ray's iterator. Nothing here is a duplicate, so every item becomes a record: the figures are for
a corpus without repeats (a real one loses a few items to deduplication, each kept as a reject).

Each size runs in a fresh process; the figure is its peak RSS (ru_maxrss) minus its RSS once the
imports and the corpus's sentences are loaded, so per-chunk and per-record costs come from the slope
between two sizes (the fixed part cancels).

`--ray`: the driver of `distill gen --ray` as it runs: a local Ray (every CPU) makes the rows in tasks,
as the teacher actors do, with each item's signature and band keys (generate.ray_corpus.signed), and keeps
them in its object store; the driver reads their counters (gather), has Ray find the near-duplicate pairs
(generate.ray_corpus.near_duplicate_pairs), and has Ray decide and write the records row by row
(generate.ray_decide.decide). The figure is the driver process's RSS, measured after Ray has started (Ray's
own processes are not in it).

  python bench/driver_memory.py                         # 1,000 and 4,000 chunks (~2 min)
  python bench/driver_memory.py --ray                   # the same through a local Ray
  python bench/driver_memory.py --chunks 2000 8000 --phrasings 2
  python bench/driver_memory.py --ray --boilerplate 2   # every chunk also asks 2 questions every other asks

`--boilerplate N`: every chunk also asks the same N questions ("Who wrote this document?"), as a teacher
does of boilerplate; all but the first item of each are rejected as duplicates, and under `--ray` each is
a near-duplicate pair with that first item (m - 1 pairs a question asked m times).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mib() -> dict[str, float]:
    """This process's resident memory by kind (RssAnon: its own heap; RssShmem: shared memory it has touched,
    such as Ray's object store blocks it reads, which the object store owns and may spill)."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("RssAnon", "RssFile", "RssShmem"):
            found[key] = int(line.split()[1]) / 1024
    return found


class Sampler:
    """The peak of each kind of resident memory, sampled every 20 ms on a thread (the kernel keeps the peak of
    the total alone)."""

    def __init__(self):
        import threading

        self.peak: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            for key, mib in status_mib().items():
                self.peak[key] = max(self.peak.get(key, 0.0), mib)

    def done(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        return self.peak


NOUNS = (
    "harbour",
    "archive",
    "bridge",
    "mill",
    "garrison",
    "observatory",
    "orchard",
    "foundry",
    "ferry",
    "library",
    "granary",
    "quarry",
    "vineyard",
    "lighthouse",
    "market",
    "school",
    "canal",
    "mine",
    "chapel",
    "station",
)
UNITS = ("tonnes", "visitors", "books", "barrels", "metres", "workers", "ships", "coins", "lamps", "acres")
VERBS = ("handled", "held", "counted", "recorded", "received", "stored")


def name(rng: random.Random) -> str:
    return "".join(
        rng.choice(("ka", "lo", "mir", "te", "sra", "vo", "ul", "mo", "ra", "ne", "dos", "pi", "gar", "en"))
        for _ in range(4)
    ).title()


def fact_sentences(rng: random.Random, chars: int) -> list[tuple[str, tuple]]:
    """A chunk's sentences, each a distinct fact, with what its questions are made of."""
    out, size = [], 0
    while size < chars:
        noun, place, verb = rng.choice(NOUNS), name(rng), rng.choice(VERBS)
        amount, unit, year = rng.randint(10, 99999), rng.choice(UNITS), rng.randint(1500, 2020)
        sentence = (
            f"The {noun} of {place} {verb} {amount} {unit} in {year}, after the {rng.choice(NOUNS)} near "
            f"{name(rng)} had been closed for {rng.randint(2, 40)} months."
        )  # ~120 characters: 14 facts a 384-token chunk
        out.append((sentence, (noun, place, verb, unit, year)))
        size += len(out[-1][0]) + 1
    return out


def corpus(n: int, chars: int, seed: int = 0) -> list[list[tuple[str, tuple]]]:
    """n chunks, each its fact sentences."""
    rng = random.Random(seed)
    return [fact_sentences(rng, chars) for _ in range(n)]


def questions(parts: tuple, phrasings: int) -> list[str]:
    noun, place, verb, unit, year = parts
    asked = (
        f"How many {unit} had the {noun} of {place} {verb} by the end of {year}?",
        f"In {year}, what number of {unit} did the {noun} in {place} count?",
        f"What figure for {unit} is given for {place}'s {noun} in the year {year}?",
        f"Which count of {unit} does the text give for the {noun} of {place} ({year})?",
    )
    return list(asked[:phrasings])


BOILERPLATE = (
    "Who wrote this document?",
    "Under which licence is this document published?",
    "When was this page last updated?",
)


def batch_rows(
    chunks: list, chunks_per_doc: int, docs_per_batch: int, phrasings: int, first_docs=None, sign_at=None, boilerplate=0
):
    """The rows AskTeacher returns (generate/ray_stage.py), one batch at a time (of the batches that start
    at `first_docs`, every one by default), with the near-duplicate columns signed at the threshold `sign_at`."""
    from generate.chunk import Chunk
    from generate.collect import Outcome
    from generate.facts import sentence_facts
    from generate.ray_corpus import signed as signed_columns
    from generate.ray_stage import astuple, summary

    docs = [chunks[i : i + chunks_per_doc] for i in range(0, len(chunks), chunks_per_doc)]
    for first in range(0, len(docs), docs_per_batch) if first_docs is None else first_docs:
        files, rows, outcome, places = [], [], Outcome(facts={}), {}
        for ordinal in range(first, min(first + docs_per_batch, len(docs))):
            doc = f"docs/file-{ordinal:07d}.md"
            files.append([ordinal, doc, ""])
            start = 0
            for index, sentences in enumerate(docs[ordinal]):
                text = " ".join(sentence for sentence, _ in sentences)
                chunk = Chunk(doc, index, start, start + len(text), text)
                start += len(text)
                rows.append([ordinal, *astuple(chunk)])
                places[chunk.key] = (ordinal, index)
                outcome.facts[chunk.key] = sentence_facts(text)
                items = [
                    {
                        "question": question,
                        "reasoning": sentence,
                        "answer": sentence.split(" in ")[0].split()[-2],
                        "evidence": sentence,
                    }
                    for sentence, parts in sentences
                    for question in questions(parts, phrasings)
                ]
                opening = sentences[0][0]
                shared = BOILERPLATE[:boilerplate]
                items += [{"question": q, "reasoning": opening, "answer": "the archive", "evidence": opening}
                          for q in shared]  # fmt: skip
                outcome.items[chunk.key] = items
                outcome.counts["accepted"] += len(items)
        asked = json.dumps({"items": outcome.items, "rejects": outcome.rejects, "facts": outcome.facts, "text": []})
        row = {"files": json.dumps(files), "chunks": json.dumps(rows), "outcome": asked, "summary": summary(outcome)}
        row["requests"] = len(rows)
        signed = {} if sign_at is None else signed_columns(outcome.items, sign_at, places, first)
        yield {**row, **{column: values[0] for column, values in signed.items()}}


DOCS_PER_BATCH = 8


def single_process(cfg, out: Path, task, rows):
    """The Plan and Outcome a run without Ray holds after its teacher calls, from the actors' rows (in corpus
    order): every chunk and every item, as generate.stage.run_gen has them before curation."""
    from generate.chunk import Chunk
    from generate.collect import Outcome
    from generate.ingest import Document
    from generate.stage import Plan

    docs, chunks, outcome, requests = [], [], Outcome(), 0
    for row in rows:
        docs += [Document(doc, "") for _, doc, reason in json.loads(row["files"]) if not reason]
        chunks += [Chunk(*rest) for _, *rest in json.loads(row["chunks"])]
        part = json.loads(row["outcome"])
        outcome.items.update(part["items"])
        outcome.rejects += part["rejects"]
        if part["facts"] is not None:
            outcome.facts = {**(outcome.facts or {}), **part["facts"]}
        requests += int(row["requests"])
    return Plan(out, docs, [], chunks, task, [], cfg.facts_first, counted=requests), outcome


def ray_rows(ray, a, chunks: list, threshold: float):
    """The actors' rows, made by Ray tasks and kept in Ray's object store, as `distill gen --ray` keeps them."""
    docs = -(-len(chunks) // a.chunks_per_doc)

    def make(batch: dict) -> dict:
        firsts = [int(x) for x in batch["id"]]
        rows = list(batch_rows(chunks, a.chunks_per_doc, DOCS_PER_BATCH, a.phrasings, firsts, threshold, a.boilerplate))
        return {k: [r[k] for r in rows] for k in rows[0]}

    firsts = ray.data.from_items([{"id": first} for first in range(0, docs, DOCS_PER_BATCH)])
    return firsts.map_batches(make, batch_size=1).materialize()


def one(a) -> None:
    from common.teacher.ask import CachedTeacher
    from generate.config import GenConfig
    from generate.curate import curate
    from generate.stage import save
    from generate.tasks import load_task

    chunks = corpus(a.size, a.chunk_chars)
    out = Path(tempfile.mkdtemp(prefix="driver-memory-"))
    cfg = GenConfig.model_validate(
        {
            "inputs": [str(out)],
            "out": str(out / "data"),
            "teacher": {"backend": "openai", "model": "none", "base_url": ["http://127.0.0.1:9/v1"]},
        }
    )
    (out / "data").mkdir()
    pairs_s, pairs = 0.0, []
    if a.ray:
        import ray

        from generate.ray_corpus import near_duplicate_pairs
        from generate.ray_decide import ROW, decide, spread_rejects
        from generate.ray_stage import GATHERED, gather

        ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False
        base, base_kinds, sampler = rss_mib(), status_mib(), Sampler()
        made = time.time()
        asked = ray_rows(ray, a, chunks, cfg.near_dup_threshold)
        started, cpu = time.time(), time.process_time()
        made = started - made
        rows = asked.select_columns(GATHERED).iter_rows()
        plan, outcome, items = gather(cfg, out / "data", load_task(cfg.task), rows, [])
        gathered = rss_mib()
        pairs_s = time.time()
        pairs = near_duplicate_pairs(ray, asked, cfg.near_dup_threshold, items)
        pairs_s = time.time() - pairs_s
        writing = time.time()
        manifest = decide(ray, cfg, plan, outcome, asked.select_columns(ROW), spread_rejects(ray, pairs), started)
    else:
        base, base_kinds, sampler = rss_mib(), status_mib(), Sampler()
        started, cpu = time.time(), time.process_time()
        rows = batch_rows(chunks, a.chunks_per_doc, DOCS_PER_BATCH, a.phrasings, boilerplate=a.boilerplate)
        plan, outcome = single_process(cfg, out / "data", load_task(cfg.task), rows)
        gathered = rss_mib()
        with CachedTeacher(cfg.teacher, out / "data" / "cache.sqlite") as teacher:  # asked nothing: no judge
            curate(cfg, plan, outcome, teacher, False)
        writing = time.time()
        manifest = save(cfg, plan, outcome, started)
    writing = time.time() - writing
    kinds = sampler.done()
    records = manifest["counts"]["train"] + manifest["counts"]["test"]
    print(
        "RESULT "
        + json.dumps(
            {
                "chunks": manifest["counts"]["chunks"],
                "records": records,
                "deduplicated": manifest["counts"]["deduplicated"],
                "text_mib": round(sum(len(s) + 1 for c in chunks for s, _ in c) / 2**20, 1),
                "base_mib": round(base, 1),
                "after_gather_mib": round(gathered - base, 1),
                "peak_mib": round(peak_mib() - base, 1),
                "peak_anon_mib": round(kinds["RssAnon"] - base_kinds["RssAnon"], 1),  # the process's own heap
                "peak_shmem_mib": round(kinds["RssShmem"] - base_kinds["RssShmem"], 1),  # object store pages read
                "train_jsonl_mib": round((out / "data" / "train.jsonl").stat().st_size / 2**20, 1),
                "seconds": round(time.time() - started, 1),
                "save_seconds": round(writing, 1),
                "driver_cpu_seconds": round(time.process_time() - cpu, 1),  # this process's, from gather on
                **({"ray_pairs_seconds": round(pairs_s, 1), "ray_rows_seconds": round(made, 1)} if a.ray else {}),
                **({"near_duplicate_pairs": len(pairs)} if a.ray else {}),
            }
        ),
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", default="run", choices=["run", "one"])
    p.add_argument("--chunks", type=int, nargs="+", default=[1000, 4000])
    p.add_argument("--size", type=int, help="one: the chunks of this run")
    p.add_argument(
        "--chunk-chars", type=int, default=1700, help="~384 tokens of English prose (distill's default chunk)"
    )
    p.add_argument("--chunks-per-doc", type=int, default=3)
    p.add_argument("--phrasings", type=int, default=3)
    p.add_argument("--ray", action="store_true", help="the driver of distill gen --ray, with a local Ray")
    p.add_argument(
        "--boilerplate", type=int, default=0, choices=range(len(BOILERPLATE) + 1), help="questions all chunks ask"
    )
    a = p.parse_args()
    if a.mode == "one":
        return one(a)
    results = []
    for size in a.chunks:
        cmd = [
            sys.executable,
            __file__,
            "one",
            "--size",
            str(size),
            "--chunk-chars",
            str(a.chunk_chars),
            "--chunks-per-doc",
            str(a.chunks_per_doc),
            "--phrasings",
            str(a.phrasings),
            *(["--ray"] if a.ray else []),
            *(["--boilerplate", str(a.boilerplate)] if a.boilerplate else []),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            sys.exit(f"the run of {size} chunks failed:\n{(done.stderr or done.stdout)[-3000:]}")
        results.append(json.loads(lines[-1][7:]))
        print(json.dumps(results[-1]), flush=True)
    small, large = results[0], results[-1]
    if large["chunks"] > small["chunks"]:
        per_chunk = (large["peak_mib"] - small["peak_mib"]) * 2**10 / (large["chunks"] - small["chunks"])
        per_record = (large["peak_mib"] - small["peak_mib"]) * 2**10 / (large["records"] - small["records"])
        records, text = large["records"] / large["chunks"], large["text_mib"] * 2**10 / large["chunks"]
        anon = (large["peak_anon_mib"] - small["peak_anon_mib"]) * 2**10 / (large["records"] - small["records"])
        print(f"peak per chunk {per_chunk:.1f} KiB, per record {per_record:.2f} KiB, of it the process's own heap "
              f"(RssAnon) {anon:.2f} KiB ({records:.1f} records a chunk, {text:.2f} KiB of text a chunk)")


if __name__ == "__main__":
    main()
