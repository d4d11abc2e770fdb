"""`distill gen` as one program: setup -> run -> save.

setup: read documents, chunk them with the student tokenizer, build one teacher prompt per
       chunk (the task's messages and its schema; facts first: the request listing its facts).
run:   (facts first: ask for the listings, then for the items of the listed facts, a few a request)
       ask the teacher through the request cache (common.teacher.ask: answered from the cache
       where it can, every new answer stored the moment it arrives); outputs failing the
       schema are re-asked with the error shown.
curate: drop near-duplicate questions, optionally have the teacher judge every item (curate.py).
save:  validate items, drop duplicates, split, write train/test/rejects.jsonl and manifest.json
       atomically (the manifest last). The outputs are always rebuilt from the cache, so a
       rerun after SIGKILL loses nothing and duplicates nothing.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import schemas
from common.config import redact
from common.errors import UserError
from common.io import write_json, write_jsonl
from common.models import resolve_model
from common.teacher.ask import CachedTeacher, Prompt
from common.versions import versions
from generate.chunk import Chunk, chunk_documents
from generate.collect import Collector, FactCollector, Outcome, ask_all
from generate.config import GenConfig
from generate.curate import curate
from generate.export import export_dir
from generate.facts import batches, facts_note, factual_sentences, listing_messages, listing_schema, sentence_listing
from generate.ingest import Document, Skipped, corpus_root, discover, read_all
from generate.records import full_record, light_record
from generate.rewrites import rewrite, rewrite_prompts, text_rows
from generate.split import drop_near_twins, split
from generate.tally import Tally, coverage, describe_split, tally
from generate.tasks import Task, load_task, worst_case_tokens
from generate.validate import question_key
from generate.verdict import low_yield_warnings

EST_TOKENS_PER_ITEM = {"qa": 120, "reasoning": 260}


@dataclass
class Plan:
    out: Path
    docs: list[Document]
    skipped: list[Skipped]
    chunks: list[Chunk]
    task: Task
    prompts: list[Prompt]  # one per chunk, in chunk order, tagged with their chunk (facts first: the listings)
    facts_first: bool = False
    facts: dict[str, list[dict]] | None = None  # span answers, facts first: chunk key -> its sentence facts (asked)
    counted: int | None = None  # the Ray driver's plan: the teacher actors' prompts, counted there, not built again

    @property
    def request_count(self) -> int:
        return len(self.prompts) if self.counted is None else self.counted


def run_gen(cfg: GenConfig, dry_run: bool = False, show_progress: bool = True) -> dict:
    started = time.time()
    plan = setup(cfg, create_out=not dry_run)
    if dry_run:
        return dry_run_manifest(cfg, plan)
    with CachedTeacher(cfg.teacher, plan.out / "cache.sqlite") as teacher:
        outcome = run(cfg, plan, teacher, show_progress)
        if cfg.rewrites and not outcome.interrupted:
            outcome.text = rewrite(rewrite_prompts(plan.chunks, cfg.rewrites), teacher, outcome, show_progress)
        curate(cfg, plan, outcome, teacher, show_progress)
        outcome.structured_output, outcome.schema_rendering = teacher.structured_output, teacher.schema_rendering
    return save(cfg, plan, outcome, started)


# ---------------------------------------------------------------- setup


def setup(cfg: GenConfig, create_out: bool = True) -> Plan:
    task = load_task(cfg.task, cfg.prompt_file, cfg.schema_file)
    docs, skipped = read_all(discover(cfg.inputs), cfg.max_file_mb, corpus_root(cfg.inputs))
    if not docs:
        first = skipped[0]
        raise UserError(f"none of the {len(skipped)} input files could be read (e.g. {first.path}: {first.reason}); pass readable documents")
    out = prepare_out(cfg.out) if create_out else Path(cfg.out)
    chunks = chunk_documents(docs, load_tokenizer(cfg.tokenizer), cfg.chunk_tokens, cfg.chunk_overlap)
    return make_plan(cfg, task, out, docs, skipped, sample_chunks(cfg, chunks))


def make_plan(
    cfg: GenConfig, task: Task, out: Path, docs: list[Document], skipped: list[Skipped], chunks: list[Chunk]
) -> Plan:
    """The run's prompts for these chunks. Span answers, facts first: the facts are the sentences (no listing
    to ask), found once here and asked by the prompts; otherwise one prompt per chunk (chunk_prompts)."""
    if cfg.facts_first and cfg.extractive:
        facts = sentence_listing(chunks)
        return Plan(out, docs, skipped, chunks, task, item_prompts(cfg, task, chunks, facts), True, facts)
    return Plan(out, docs, skipped, chunks, task, chunk_prompts(cfg, task, chunks), cfg.facts_first)


def sample_chunks(cfg: GenConfig, chunks: list[Chunk]) -> list[Chunk]:
    """At most `max_chunks` of the chunks (in corpus order), drawn with the run's seed."""
    if cfg.max_chunks and len(chunks) > cfg.max_chunks:
        return sorted(random.Random(cfg.seed).sample(chunks, cfg.max_chunks), key=lambda c: (c.doc, c.index))
    return chunks


def chunk_prompts(cfg: GenConfig, task: Task, chunks: list[Chunk]) -> list[Prompt]:
    """One teacher prompt per chunk, in chunk order, tagged with its chunk: the request for its facts'
    listing (facts first), else for its items."""
    n, k = cfg.facts_per_request, cfg.questions_per_fact
    prompts = []
    for chunk in chunks:
        if cfg.facts_first and not factual_sentences(chunk.text):
            continue  # a heading alone: no fact to list, and no request (its listing could only be empty)
        if cfg.facts_first:
            schema = listing_schema(chunk.text if cfg.teacher.structured else None)
            prompts.append(Prompt(listing_messages(chunk.text), schema, reply_budget(cfg, schema), tag=chunk))
        else:
            spans = cfg.extractive
            schema = task.request_schema(n, chunk.text if cfg.teacher.structured else None, k, spans=spans)
            prompts.append(Prompt(task.messages(chunk.text, n, k, spans=spans), schema, reply_budget(cfg, schema), tag=chunk))
    return prompts


def item_prompts(cfg: GenConfig, task: Task, chunks: list[Chunk], listed: dict[str, list[dict]]) -> list[Prompt]:
    """Facts first: the item requests of the listed facts, a few facts a request, in chunk order."""
    prompts, k = [], cfg.questions_per_fact
    for chunk in chunks:
        for facts in batches(listed.get(chunk.key, [])):
            quotes = [f["evidence"] for f in facts]
            spans = cfg.extractive
            schema = task.request_schema(len(facts), chunk.text if cfg.teacher.structured else None, k, quotes, spans)
            messages = task.messages(chunk.text, len(facts), k, facts_note(facts), spans)
            prompts.append(Prompt(messages, schema, reply_budget(cfg, schema), tag=chunk))
    return prompts


def reply_budget(cfg: GenConfig, schema: dict) -> int:
    """max_new_tokens of a request. The local teacher decodes under the schema's grammar, whose
    bounded strings bound the reply: its budget is that bound, so no reply is ever cut inside a
    string (servers and vLLM keep max_new_tokens: they refuse budgets past the model's context)."""
    bound = worst_case_tokens(schema) if cfg.teacher.backend == "local" and cfg.teacher.structured else None
    return bound or cfg.teacher.max_new_tokens


def prepare_out(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out} ({exc.strerror}); choose another --out") from exc
    return out


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name))


# ---------------------------------------------------------------- run


def run(cfg: GenConfig, plan: Plan, teacher: CachedTeacher, show_progress: bool) -> Outcome:
    """Ask for every chunk (facts first: for its listing, then for the items of the listed facts)."""
    outcome = Outcome()
    prompts = plan.prompts
    if plan.facts is not None:  # span answers: the prompts are the item requests of the sentence facts
        outcome.facts = plan.facts
    elif plan.facts_first:
        outcome.facts = {}
        ask_all(cfg, prompts, teacher, FactCollector(cfg, plan.task, outcome), show_progress, "facts")
        outcome.counts["fact_requests"] = len(prompts)
        if outcome.interrupted:
            return outcome
        prompts = item_prompts(cfg, plan.task, plan.chunks, outcome.facts)
    ask_all(cfg, prompts, teacher, Collector(cfg, plan.task, outcome), show_progress, "chunks")
    return outcome


# ---------------------------------------------------------------- save


def save(cfg: GenConfig, plan: Plan, outcome: Outcome, started: float) -> dict:
    """Decide what is written (duplicates, near-twins, the split) on light records, then write train.jsonl,
    test.jsonl, rejects, text and the manifest (under Ray, generate/ray_decide.py does this row by row)."""
    teacher = {"backend": cfg.teacher.backend, "model": cfg.teacher.model}
    records = decided_records(plan.chunks, outcome.items, outcome.rejects, cfg.near_twin_threshold)
    train, test, dropped = split(records, cfg.split_by, cfg.test_fraction, cfg.seed, cfg.near_dup_threshold)
    written = write_records(plan.out, train, test, teacher, plan.task.name)  # other files it wrote
    write_jsonl(plan.out / "rejects.jsonl", outcome.rejects)
    text = []
    if cfg.rewrites:
        held_out_docs = {r["source"]["doc"] for r in test} if cfg.split_by == "document" else set()
        text = text_rows(plan.chunks, outcome.text, held_out_docs)
        write_jsonl(plan.out / "text.jsonl", text)
    order = range(len(plan.chunks))
    counted = tally(plan.chunks, order, outcome.items, outcome.rejects, train, test, dropped, outcome.facts, len(outcome.text), len(text))
    return finish(cfg, plan, outcome, counted, started, {**({"text": "text.jsonl"} if text else {}), **written})


def decided_records(chunks: list[Chunk], items: dict[str, list[dict]], rejects: list, twin_threshold: float) -> list[dict]:
    """The light records (generate.records) of the chunks' items, in corpus order, less exact repeats of a question
    and near-twin phrasings of a fact, each with its reject added to `rejects`."""
    records, seen = [], {}
    for chunk in chunks:
        for item in items.get(chunk.key, []):
            qkey = question_key(item["question"])
            if qkey in seen:
                rejects.append({"reason": "duplicate", "detail": f"same question as {seen[qkey]}", "chunk": chunk.key, "item": item})
                continue
            record = light_record(item, chunk)
            seen[qkey] = record["id"]
            records.append(record)
    del seen
    records, twins = drop_near_twins(records, twin_threshold)
    for record, like in twins:
        item = record["made_from"][0]
        twin = {k: item[k] for k in ("question", "reasoning", "answer", "evidence")}
        where = f"{record['source']['doc']}#{record['source']['chunk']}"
        rejects.append({"reason": "near_twin", "detail": f"like: {like}"[:300], "chunk": where, "item": twin})
    return records


def finish(cfg: GenConfig, plan: Plan, outcome: Outcome, counted: Tally, started: float, files: dict) -> dict:
    """The exports and the manifest, written last, from the tally of what was written."""
    if cfg.export:  # export_dir reads the files back: skip it when there is nothing to export
        export_dir(plan.out, cfg.export)
    manifest = build_manifest(cfg, plan, outcome, counted, started)
    manifest["counts"]["text"] = counted.text
    manifest["answers"] = "span" if cfg.extractive else "free"
    manifest["facts"] = describe_split(counted, cfg.split_by, cfg.questions_per_fact)
    per_request = cfg.facts_per_request * cfg.questions_per_fact
    asked = plan.request_count * per_request
    if outcome.facts is not None:  # facts first: every listed fact is asked
        asked = (counted.facts_listed or 0) * cfg.questions_per_fact
    manifest["coverage"] = coverage(counted, asked, per_request)
    manifest["files"].update(files)
    manifest["warnings"] = low_yield_warnings(manifest)
    write_json(plan.out / "manifest.json", manifest)
    return manifest


def write_records(out: Path, train: list[dict], test: list[dict], teacher: dict, task: str) -> dict:
    """train.jsonl and test.jsonl from light records, each full record made when it is checked and when it is
    written; every record is checked before either file is replaced."""
    for light in train + test:
        checked(full_record(light, teacher, task))
    write_jsonl(out / "train.jsonl", (full_record(r, teacher, task) for r in train))
    write_jsonl(out / "test.jsonl", (full_record(r, teacher, task) for r in test))
    shutil.rmtree(out / "shards", ignore_errors=True)  # a --ray run's shards of other files than these
    return {}


def checked(record: dict) -> dict:
    problems = schemas.errors("record", record)
    if problems:  # a bug, not a user error: never write an invalid record
        raise RuntimeError(f"record {record['id']} violates record.schema.json: {problems[0]}")
    return record


def build_manifest(cfg, plan, outcome, counted: Tally, started) -> dict:
    rejected, n_train, n_test, dropped = counted.rejected, counted.train, counted.test, counted.dropped
    counts = {
        "files": len(plan.docs) + len(plan.skipped),
        "docs": len(plan.docs),
        "files_skipped": len(plan.skipped),
        "chunks": counted.chunks,
        **{k: outcome.counts.get(k, 0) for k in ("requests", "cache_hits", "sent", "repairs", "failed_requests", "finish_length", "judge_cache_hits", "judge_sent", "rewrites_cut")},
        "rewrites": counted.rewrites,
        "answered": counted.answered,
        "accepted": n_train + n_test + dropped,
        "train": n_train,
        "test": n_test,
        "deduplicated": rejected.get("duplicate", 0) + rejected.get("near_duplicate", 0),
        "test_near_duplicates_removed": dropped,
        "near_twins_dropped": rejected.get("near_twin", 0),
        **({"fact_requests": outcome.counts.get("fact_requests", 0)} if plan.facts_first else {}),
    }
    failed = outcome.counts.get("failed_requests", 0)
    done = "complete" if counts["accepted"] else "empty"  # nothing accepted: distill gen exits 4
    teacher = {"backend": cfg.teacher.backend, "model": cfg.teacher.model}
    if outcome.structured_output:
        teacher["structured_output"] = outcome.structured_output
    if outcome.schema_rendering:
        teacher["schema_rendering"] = outcome.schema_rendering
    return {
        "status": "interrupted" if outcome.interrupted else "incomplete" if failed else done,
        **({"failures": {"requests": failed, "last_error": outcome.last_error}} if failed else {}),
        "split_by": cfg.split_by,
        "task": plan.task.name,
        "counts": counts,
        "rejected": dict(sorted(rejected.items())),
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in plan.skipped],
        "tokens": {"prompt": outcome.tokens["prompt"], "completion": outcome.tokens["completion"]},
        "wall_time_s": round(time.time() - started, 3),
        "teacher": teacher,
        "config": redact(cfg.model_dump(mode="json")),
        "schemas": {"task": schemas.digest(plan.task.schema), "record": schemas.digest(schemas.load("record"))},
        "versions": versions(),
        "files": {"train": "train.jsonl", "test": "test.jsonl", "rejects": "rejects.jsonl", "cache": "cache.sqlite"},
    }


def dry_run_manifest(cfg: GenConfig, plan: Plan) -> dict:
    """Counts and a token estimate, without calling the teacher or writing anything."""
    tokenizer = load_tokenizer(cfg.tokenizer)
    # tokenize the rendered text: apply_chat_template(tokenize=True) returns a dict in transformers 5
    prompts = [tokenizer.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True) for p in plan.prompts]
    prompt_tokens = sum(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]) if prompts else 0
    per_item = EST_TOKENS_PER_ITEM.get(plan.task.name, 200)
    completion = len(plan.prompts) * min(cfg.teacher.max_new_tokens, per_item * cfg.facts_per_request)
    return {
        "status": "dry-run",
        "split_by": cfg.split_by,
        "task": plan.task.name,
        "counts": {"docs": len(plan.docs), "files_skipped": len(plan.skipped), "chunks": len(plan.chunks), "requests": len(plan.prompts)},
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in plan.skipped],
        "tokens": {"prompt_estimate": prompt_tokens, "completion_estimate": completion},
        "teacher": {"backend": cfg.teacher.backend, "model": cfg.teacher.model},
        "config": redact(cfg.model_dump(mode="json")),
    }
