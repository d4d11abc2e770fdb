"""`distill gen --ray [ADDRESS]`: the gen stage as a Ray Data pipeline, on a local Ray or a cluster.

    file paths ─ from_items ─▶ map_batches(read_and_chunk)        CPU tasks of ray.files_per_read files at most:
                                                                  generate.ingest + generate.chunk
               ─▶ repartition(ray.files_per_batch rows a block)   streamed, so every teacher actor gets work
               ─▶ map_batches(AskTeacher, concurrency=N)          teacher actors: generate.stage's prompts, cached
                                                                  asks, repairs, validation and grounding, and
                                                                  each item's MinHash signature and band keys
               ─▶ materialize()                                   kept in Ray's object store (spilled to disk)
    driver:    the rows' counters (gather: files, requests, tokens; no item)
    near-duplicates:  map_batches(band_rows)                      one row per band of every item
               ─▶ repartition(keys=["band"]) ─▶ map_batches(pairs_in_block)   the pairs alike at the threshold
    decisions and records (generate/ray_decide.py): the driver keeps the first of each group of pairs in
               corpus order; Ray decides each row's records (exact repeats, near-twins), counts them for the
               split's cutoff, and writes them split as shards/{train,test,rejects}-FIRST.jsonl; the driver
               joins the shards in corpus order and adds up the rows' tallies into the manifest

Ray's part: placing tasks and actors on the cluster's CPUs and GPUs, streaming batches between
them with backpressure, re-running lost tasks, the progress bars. Ours: the body of every step is
the single-process stage's own function, so on the same corpus, config and seed the records, the
split (hashes of seed and id: generate/split.py) and the manifest's counts are those of `distill
gen` without Ray. Near-duplicate search is spread: the actors sign their items, Ray groups the
signatures by band key across the cluster and returns the pairs alike at the threshold (the same
pairs MinHashLSH finds in one process: generate/dedup.py), so the driver holds no index, and no item.
The teacher actors also write the rewrites of their chunks (rewrites: N), and judge actors score the
items (min_score: N) before the decisions. max_chunks draws its sample on the driver, which takes
every file's chunks to do so (a quick try), then renumbers the files in the sample's order.

Cache: each teacher actor writes its answers to a shard of its own (cache/<worker>.sqlite beside
cache.sqlite, common/teacher/cache.py) and reads the run's cache and every shard, so a killed run,
rerun with Ray or without, re-sends nothing answered; the driver merges the shards into
cache.sqlite when the pipeline ends. On a cluster, --out must be a folder every node sees.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import uuid
from functools import cache
from pathlib import Path
from types import SimpleNamespace

from common.errors import UserError
from common.teacher.ask import CachedTeacher
from common.teacher.cache import merge_shards
from generate.chunk import Chunk, chunk_documents
from generate.config import GenConfig
from generate.curate import judge
from generate.ingest import (
    Document,
    Skipped,
    corpus_root,
    discover,
    doc_name,
    fewer_collections,
    read_all,
    unique_files,
)
from generate.ray_corpus import near_duplicate_pairs, signed
from generate.ray_decide import ROW, decide, spread_rejects, without_near_duplicates
from generate.rewrites import rewrite, rewrite_prompts
from generate.stage import Outcome, Plan, load_tokenizer, make_plan, prepare_out, run, sample_chunks
from generate.tasks import load_task

INSTALL = "pip install 'distill[ray]'"


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError(f"--ray needs Ray Data, which is not installed; {INSTALL}, or run without --ray") from None
    return ray


def run_gen_ray(cfg: GenConfig, show_progress: bool = True) -> dict:
    """The stage on Ray: the outputs of generate.stage.run_gen, and the records also as shards (shards/)."""
    ray = import_ray()
    started = time.time()
    task = load_task(cfg.task, cfg.prompt_file, cfg.schema_file)
    paths, links = unique_files(discover(cfg.inputs))
    out = prepare_out(cfg.out)
    ours = start_ray(ray, cfg, show_progress)
    try:
        files = read_files(ray, cfg, paths)
        if cfg.max_chunks:
            files = ray.data.from_items(sampled(cfg, files.take_all()))
        pool = teacher_pool(ray, cfg, str(out))
        asked = teacher_batches(files, cfg).map_batches(AskTeacher, batch_size=cfg.ray.files_per_batch, **pool)
        asked = asked.materialize()  # read again: by the driver, for the near-duplicates, for the decisions
        plan, outcome, items = gather(cfg, out, task, asked.select_columns(GATHERED).iter_rows(), links)
        pairs = near_duplicate_pairs(ray, asked, cfg.near_dup_threshold, items)
        rows, rejected = asked.select_columns(ROW), spread_rejects(ray, pairs)
        if cfg.min_score is not None and not outcome.interrupted:
            rows, rejected = judge_rows(ray, cfg, out, rows, rejected, outcome), {}
        merge_shards(out / "cache.sqlite")  # the teacher actors (and judges) have ended with their operators
        return decide(ray, cfg, plan, outcome, rows, rejected, started)
    finally:
        if ours:
            ray.shutdown()


MIN_FILES_PER_READ = 8  # below this a task spent a quarter of its time on Ray's own overhead (2-core machine)


def read_files(ray, cfg: GenConfig, paths: list[Path]):
    """The dataset of the corpus's files read and chunked, in order: tasks of `ray.files_per_read` files at
    most (Ray splits the files evenly between them), and one task a CPU of the cluster at least where the
    corpus allows (MIN_FILES_PER_READ files a task or more): at 64 files a task, 500 files were 8 tasks,
    and half of a 16-CPU machine stood idle; 60 files were one task on one of 2 CPUs."""
    root = corpus_root(cfg.inputs)  # the documents are named on the driver: a worker's folder may differ
    rows = [{"ordinal": i, "path": str(p), "doc": doc_name(p, root)} for i, p in enumerate(paths)]
    return ray.data.from_items(
        rows, override_num_blocks=read_tasks(len(rows), cfg.ray.files_per_read, ray)
    ).map_batches(read_and_chunk, fn_kwargs={"cfg": cfg.model_dump(mode="json")}, batch_size=None)


def read_tasks(files: int, files_per_read: int, ray) -> int:
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, math.ceil(files / files_per_read), min(math.ceil(files / MIN_FILES_PER_READ), cpus))


def teacher_batches(files, cfg: GenConfig):
    """The read files in blocks of one teacher batch (streamed, not a shuffle): a read task's block of
    many files would otherwise go to one teacher actor whole, and the others would wait."""
    return files.repartition(target_num_rows_per_block=cfg.ray.files_per_batch)


def start_ray(ray, cfg: GenConfig, show_progress: bool) -> bool:
    """Join the cluster at ray.address (or $RAY_ADDRESS), else start a local Ray; True if this call started it."""
    set_data_context(ray, show_progress)
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    except ConnectionError as exc:
        raise UserError(
            f"cannot join the Ray cluster at {address} ({exc}); start it (ray start --head) or fix --ray ADDRESS"
        ) from None
    return True


def set_data_context(ray, show_progress: bool) -> None:
    """Ray Data's settings for this driver."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = show_progress
    # Ray Data reserves a share of the CPUs for each operator; on a 2-CPU Ray that started the second read
    # task a second late and left 0.1-0.2 s between tasks (0.02 s without it; bench/ingest_throughput.py).
    # The teacher actors are a fixed pool, started first, so nothing downstream starves without it.
    ctx.op_resource_reservation_enabled = False
    # quiet (-q, --json): neither "Starting execution of ..." nor "Progress bars disabled ..."
    logging.getLogger("ray.data").setLevel(logging.INFO if show_progress else logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.NOTSET if show_progress else logging.ERROR)


def teacher_pool(ray, cfg: GenConfig, out: str) -> dict:
    """map_batches arguments of the teacher actors: one vLLM engine per GPU, else a share of a CPU each
    (an openai actor mostly waits; a local one decodes on the threads it finds), so that the actors
    never hold every CPU of a small machine and starve the readers that feed them."""
    workers = cfg.ray.teacher_workers
    per_worker = cfg.teacher.model_copy(update={"concurrency": math.ceil(cfg.teacher.concurrency / workers)})
    worker_cfg = cfg.model_copy(update={"teacher": per_worker}).model_dump(mode="json")
    resources = (
        {"num_gpus": 1}
        if cfg.teacher.backend == "vllm"
        else {"num_cpus": 0.5 if cfg.teacher.backend == "local" else 0.25}
    )
    compute = ray.data.ActorPoolStrategy(size=workers)
    return {"fn_constructor_kwargs": {"cfg": worker_cfg, "out": out}, "compute": compute, **resources}


# ---------------------------------------------------------------- the workers


@cache
def _tokenizer(name: str):
    """The worker's tokenizer, loaded once per worker process, without its own thread pool (unless the
    environment says otherwise): Ray runs one read task per CPU, so each worker's pool of one thread a
    CPU would only compete with the other workers (N workers x N threads). On 2 CPUs its threads used
    0.85 ms of CPU a document beside the task's 4.2 ms; the rate did not change measurably there
    (docs/benchmarks.md, 2026-12-05)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return load_tokenizer(name)


@fewer_collections()  # over the whole task, not only each file's read
def read_and_chunk(batch: dict, cfg: dict) -> dict:
    """Files -> one row per file: its document id (its path if skipped), why it was skipped (or ''), its chunks
    as JSON."""
    gen = GenConfig.model_validate(cfg)
    tokenizer = _tokenizer(gen.tokenizer)
    rows = {"ordinal": [], "doc": [], "skipped": [], "chunks": []}
    for ordinal, path, name in zip(batch["ordinal"], batch["path"], batch["doc"]):
        docs, skipped = read_all([Path(path)], gen.max_file_mb)
        chunks = chunk_documents([Document(name, d.text) for d in docs], tokenizer, gen.chunk_tokens, gen.chunk_overlap)
        rows["ordinal"].append(int(ordinal))
        rows["doc"].append(str(path) if skipped else name)  # a skipped file is reported by its path, as run_gen does
        rows["skipped"].append(skipped[0].reason if skipped else "")
        rows["chunks"].append(json.dumps([[c.index, c.start, c.end, c.text] for c in chunks]))
    return rows


class AskTeacher:
    """A teacher actor: its own backend and cache shard; asks a batch of files' chunks as `distill gen` does."""

    def __init__(self, cfg: dict, out: str):
        self.cfg = GenConfig.model_validate(cfg)
        self.out = Path(out)
        self.task = load_task(self.cfg.task, self.cfg.prompt_file, self.cfg.schema_file)
        self.teacher = CachedTeacher(self.cfg.teacher, self.out / "cache.sqlite", shard=shard_name())

    def __call__(self, batch: dict) -> dict:
        files = [[int(o), str(d), str(s)] for o, d, s in zip(batch["ordinal"], batch["doc"], batch["skipped"])]
        chunks = [
            (o, Chunk(d, i, a, b, t))
            for (o, d, _), raw in zip(files, batch["chunks"])
            for i, a, b, t in json.loads(raw)
        ]
        plan = make_plan(self.cfg, self.task, self.out, [], [], [c for _, c in chunks])
        try:
            outcome = run(self.cfg, plan, self.teacher, show_progress=False)
        except UserError as exc:  # an unreachable teacher, a rejected key: the driver says it in one line
            failed = json.dumps({"user_error": str(exc)})
            empty = {"files": ["[]"], "chunks": ["[]"], "outcome": ["{}"], "requests": [0]}
            return {**empty, "summary": [failed], **signed({}, 0.0, {}, 0)}
        if self.cfg.rewrites and not outcome.interrupted:  # continued-pretraining text, as run_gen asks it
            prompts = rewrite_prompts([c for _, c in chunks], self.cfg.rewrites)
            outcome.text = rewrite(prompts, self.teacher, outcome, False)
        outcome.structured_output = self.teacher.structured_output
        outcome.schema_rendering = self.teacher.schema_rendering
        places = {c.key: (o, c.index) for o, c in chunks}
        return {
            "files": [json.dumps(files)],
            "chunks": [json.dumps([[o, *astuple(c)] for o, c in chunks])],
            "outcome": [json.dumps({name: getattr(outcome, name) for name in ("items", "rejects", "facts", "text")})],
            "summary": [summary(outcome)],
            "requests": [len(plan.prompts)],  # the driver counts the run's requests from these, without planning again
            **signed(outcome.items, self.cfg.near_dup_threshold, places, files[0][0] if files else 0),
        }

    def __del__(self):
        self.teacher.close()


class JudgeTeacher:
    """A judge actor (min_score): its own backend and cache shard; judges a row's items left by the near-duplicate
    decisions as curate.judge does, and returns the row with its items curated."""

    def __init__(self, cfg: dict, out: str):
        self.raw, self.cfg = cfg, GenConfig.model_validate(cfg)
        self.teacher = CachedTeacher(self.cfg.teacher, Path(out) / "cache.sqlite", shard=shard_name())

    def __call__(self, batch: dict, rejected: dict) -> dict:
        row = without_near_duplicates(batch, self.raw, rejected)
        outcome = Outcome(items=row.items, rejects=row.rejects)
        try:
            judge(self.cfg, SimpleNamespace(chunks=[c for _, c in row.chunks]), outcome, self.teacher, False)
        except UserError as exc:  # as AskTeacher: the driver says it in one line
            return {"files": batch["files"], "chunks": batch["chunks"], "outcome": ["{}"], "summary": [
                json.dumps({"user_error": str(exc)})]}  # fmt: skip
        outcome.structured_output = self.teacher.structured_output
        curated = json.dumps({"items": outcome.items, "rejects": outcome.rejects, "facts": row.facts, "text": row.text})
        return {"files": batch["files"], "chunks": batch["chunks"], "outcome": [curated], "summary": [summary(outcome)]}

    def __del__(self):
        self.teacher.close()


def judge_rows(ray, cfg: GenConfig, out: Path, rows, rejected: dict, outcome: Outcome):
    """The rows with their items judged by a pool of judge actors (teacher_pool's), the judges' counters added to
    `outcome`; materialized, as the decisions read them three times."""
    pool = teacher_pool(ray, cfg, str(out))
    judged = rows.map_batches(JudgeTeacher, batch_size=1, fn_kwargs={"rejected": rejected}, **pool).materialize()
    for row in judged.select_columns(["summary"]).iter_rows():
        add_summary(outcome, json.loads(row["summary"]))
    return judged.select_columns(ROW)


def shard_name() -> str:
    """A teacher actor's cache shard: its host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def astuple(chunk: Chunk) -> list:
    return [chunk.doc, chunk.index, chunk.start, chunk.end, chunk.text]


def sampled(cfg: GenConfig, rows: list[dict]) -> list[dict]:
    """`max_chunks` of the corpus's chunks, drawn as the single-process stage draws them (stage.sample_chunks).
    Its sample is in the order of the documents' paths, not of the files as found, so a drawn sample renumbers
    the files in that order: every later step takes the corpus's order from the files' ordinals."""
    chunks = [Chunk(r["doc"], i, a, b, t) for r in rows for i, a, b, t in json.loads(r["chunks"])]
    kept = {c.key for c in sample_chunks(cfg, chunks)}
    for r in rows:
        r["chunks"] = json.dumps([c for c in json.loads(r["chunks"]) if f"{r['doc']}#{c[0]}" in kept])
    if len(kept) < len(chunks):
        rows.sort(key=lambda r: r["doc"])
        for ordinal, r in enumerate(rows):
            r["ordinal"] = ordinal
    return rows


# ---------------------------------------------------------------- the driver

GATHERED = ["files", "requests", "summary"]  # what the driver reads of the actors' rows


def summary(outcome: Outcome) -> str:
    """What the driver adds up of a batch's outcome: its counters, not its items."""
    fields = ("counts", "tokens", "interrupted", "last_error", "structured_output", "schema_rendering")
    counters = {name: getattr(outcome, name) for name in fields}
    items = sum(map(len, outcome.items.values()))
    return json.dumps({**counters, "listed": outcome.facts is not None, "items": items})


def add_summary(outcome: Outcome, part: dict) -> int:
    """A row's summary added to the run's counters (a user error met in the actor raised); its items."""
    if "user_error" in part:
        raise UserError(part["user_error"])
    outcome.counts.update(part["counts"])
    outcome.tokens.update(part["tokens"])
    outcome.interrupted |= part["interrupted"]
    outcome.last_error = part["last_error"] or outcome.last_error
    outcome.structured_output.update(part["structured_output"])
    outcome.schema_rendering.update(part["schema_rendering"])
    if part["listed"]:  # facts first: each batch's listings
        outcome.facts = outcome.facts or {}
    return part["items"]


def gather(cfg: GenConfig, out: Path, task, rows, links: list[Skipped]) -> tuple[Plan, Outcome, int]:
    """The batches' counters (GATHERED) as one Plan (the files, no chunk) and one Outcome (no item), and the number
    of items the actors signed. The Plan counts the actors' requests rather than building them again (~4 ms a
    chunk on one core: docs/scale.md)."""
    files, outcome, requests, items = {}, Outcome(), 0, 0
    for row in rows:
        requests += int(row["requests"])
        files.update({o: (doc, reason) for o, doc, reason in json.loads(row["files"])})  # none: a user error
        items += add_summary(outcome, json.loads(row["summary"]))
    docs = [
        Document(doc, "") for _, (doc, reason) in sorted(files.items()) if not reason
    ]  # texts stay with the workers
    skipped = links + [Skipped(doc, reason) for _, (doc, reason) in sorted(files.items()) if reason]
    if not docs:
        first = skipped[0]
        raise UserError(
            f"none of the {len(skipped)} input files could be read (e.g. {first.path}: {first.reason}); "
            "pass readable documents"
        )
    return Plan(out, docs, skipped, [], task, [], cfg.facts_first, counted=requests), outcome, items
