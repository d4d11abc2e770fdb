"""`distill gen --ray` on a local Ray with 2 CPUs, against a loopback OpenAI server: the same records
and split as the single-process run, the cache shared with it, and a killed driver's rerun
re-sending nothing answered. Tests that start Ray are skipped where Ray is not installed (pip install
'distill[ray]'); the full runs are `slow` (each 1-1.5 min on the shared 2-core machine: Ray's worker
processes import torch and transformers): `pytest -m slow tests/test_ray_gen.py`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import schemas
from distill.cli import main

from openai_server import FakeOpenAI, Reply, good_json, make_docs

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from driver_memory import single_process  # noqa: E402  (the one-process run's state, from the actors' rows)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes seconds); the stage joins it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'distill[ray]' to run the Ray tests")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def docs(tmp_path) -> Path:
    make_docs(tmp_path / "docs", docs=4, paragraphs=3)
    return tmp_path / "docs"


def gen_args(docs: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "gen", str(docs), "--out", str(out), "--teacher", "openai", "--base-url", url, "--model", "teacher", "-q",
        "chunk_tokens=128", "chunk_overlap=0", "teacher.backoff_s=0.001", "teacher.backoff_max_s=0.01", *extra,
    ]  # fmt: skip


def gen(docs: Path, out: Path, url: str, *extra: str) -> dict:
    with pytest.raises(SystemExit) as done:
        main(gen_args(docs, out, url, *extra))
    assert done.value.code == 0
    return json.loads((out / "manifest.json").read_text())


def records(out: Path) -> set[tuple[str, str]]:
    return {
        (r["id"], r["split"])
        for name in ("train.jsonl", "test.jsonl")
        for r in map(json.loads, (out / name).read_text().splitlines())
    }


@pytest.mark.slow  # 85 s a case on the shared 2-core machine (load 15): actors start fresh Python processes
@pytest.mark.parametrize(
    "settings", [[], ["phrasings=1"], ["min_score=3"], ["rewrites=1", "split_by=document"], ["max_chunks=6"]]
)
def test_ray_run_writes_the_single_process_records_and_split(docs, tmp_path, local_ray, settings):
    """Documents that repeat another's paragraph, as is and with a word changed: the repeats' questions are
    dropped across teacher batches as the single-process run drops them. Ray decides which items stay and their
    split (ray_decide), with one phrasing a fact as with three, judge actors score the items (min_score), the
    teacher actors write the rewrites (text.jsonl, a held-out document's left out); max_chunks draws its sample
    on the driver, in the order of the paths (here a folder `a/` sorts after `a-b.md` by path, before it as
    found), as one process draws it."""
    paragraph = (docs / "doc0.md").read_text().split("\n\n")[1]
    (docs / "doc2.md").write_text((docs / "doc2.md").read_text() + "\n" + paragraph + "\n")
    changed = paragraph.replace(" ", " also ", 1)
    (docs / "doc3.md").write_text((docs / "doc3.md").read_text() + "\n" + changed + "\n")
    if "max_chunks=6" in settings:
        (docs / "doc1.md").rename(docs / "a-b.md")
        (docs / "a").mkdir()
        (docs / "doc0.md").rename(docs / "a" / "x.md")
    with FakeOpenAI() as server:
        single = gen(docs, tmp_path / "single", server.url, *settings)
        spread = ("ray.teacher_workers=2", "ray.files_per_batch=1", "--ray")
        on_ray = gen(docs, tmp_path / "ray", server.url, *settings, *spread)
        assert (
            max(server.answered.values()) == 2
        )  # each prompt once per run: the Ray run shares no cache with the first
    assert on_ray["status"] == "complete" and on_ray["config"]["ray"]["teacher_workers"] == 2
    assert schemas.errors("manifest", on_ray) == []
    assert records(tmp_path / "ray") == records(tmp_path / "single") and len(records(tmp_path / "single")) > 10
    for key in ("docs", "chunks", "requests", "sent", "accepted", "train", "test", "deduplicated"):
        assert on_ray["counts"][key] == single["counts"][key], key
    assert on_ray["rejected"] == single["rejected"]
    if "max_chunks=6" not in settings:  # (a sample may leave the repeats out)
        assert single["rejected"].get("duplicate", 0) > 0 and single["rejected"].get("near_duplicate", 0) > 0
    else:
        assert on_ray["counts"]["chunks"] == single["counts"]["chunks"] == 6  # a sample of more
    for name in ("train.jsonl", "test.jsonl"):  # written by Ray as shards, joined in corpus order
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
    assert len(list((tmp_path / "ray" / "shards").glob("train-*.jsonl"))) == 4  # one a teacher batch of one file
    assert len(list((tmp_path / "ray" / "shards").glob("rejects-*.jsonl"))) == 4  # decided in Ray
    for key in ("coverage", "facts", "warnings"):
        assert on_ray[key] == single[key], key
    if "rewrites=1" in settings:
        assert (tmp_path / "ray" / "text.jsonl").read_bytes() == (tmp_path / "single" / "text.jsonl").read_bytes()
        assert 0 < on_ray["counts"]["text"] == single["counts"]["text"] and on_ray["counts"]["rewrites"] > 0
        return  # split by document: no facts listed
    assert single["coverage"]["facts_listed"] > 0  # facts first, gathered
    assert not (tmp_path / "ray" / "cache").exists() or not list(
        (tmp_path / "ray" / "cache").glob("*.sqlite")
    )  # merged


def test_every_teacher_actor_gets_a_share_of_a_read_task(docs, local_ray):
    """Read tasks take many files (ray.files_per_read); the teacher stage gets them in blocks of one batch."""
    import ray

    from generate.config import GenConfig
    from generate.ingest import discover
    from generate.ray_stage import read_files, teacher_batches

    cfg = GenConfig.model_validate({"inputs": [str(docs)], "ray": {"files_per_read": 64, "files_per_batch": 1}})
    read = read_files(ray, cfg, discover(cfg.inputs)).materialize()
    assert read.num_blocks() == 1 and read.count() == 4
    assert teacher_batches(read, cfg).materialize().num_blocks() == 4


def test_the_driver_counts_the_actors_requests_without_planning_them_again(tmp_path, monkeypatch):
    """Building every request schema again on the driver cost ~4 ms a chunk on one core (docs/scale.md)."""
    import generate.ray_stage as ray_stage
    import generate.stage as stage
    from generate.collect import Outcome
    from generate.config import GenConfig
    from generate.tasks import load_task

    def planned(*args, **kwargs):
        raise AssertionError("the driver built the requests again")

    for module, name in ((ray_stage, "make_plan"), (stage, "item_prompts"), (stage, "chunk_prompts")):
        monkeypatch.setattr(module, name, planned)
    cfg = GenConfig.model_validate({"inputs": [str(tmp_path)]})
    summary = ray_stage.summary(Outcome())
    outcome = json.dumps({"items": {}, "rejects": [], "facts": None, "text": []})
    rows = [
        {"files": json.dumps([[o, doc, ""]]), "chunks": json.dumps([[o, doc, 0, 0, 5, "Words"]]), "outcome": outcome}
        | {"requests": n, "summary": summary}
        for o, doc, n in ((1, "b.md", 2), (0, "a.md", 3))
    ]
    plan, _, _ = ray_stage.gather(cfg, tmp_path, load_task(cfg.task), rows, [])
    assert plan.request_count == 5 and [d.doc for d in plan.docs] == ["a.md", "b.md"] and not plan.chunks
    assert plan.facts_first == cfg.facts_first


def test_read_workers_tokenize_without_a_thread_pool_of_their_own(docs, local_ray, monkeypatch):
    """One read task per CPU: a tokenizer thread pool in each worker would compete with the other workers."""
    import ray

    from generate.config import GenConfig
    from generate.ingest import discover
    from generate.ray_stage import read_files

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)  # the workers' environment comes from here

    def worker_setting(batch: dict) -> dict:
        return {"setting": [os.environ.get("TOKENIZERS_PARALLELISM", "unset")] * len(batch["doc"])}

    cfg = GenConfig.model_validate({"inputs": [str(docs)], "ray": {"files_per_read": 2}})
    rows = read_files(ray, cfg, discover(cfg.inputs)).map_batches(worker_setting, batch_size=None).take_all()
    assert {r["setting"] for r in rows} == {"false"} and len(rows) == 4


@pytest.mark.slow  # 25-77 s on the shared 2-core machine (load 10-15)
def test_ray_answers_are_read_by_the_single_process_run(docs, tmp_path, local_ray):
    out = tmp_path / "out"
    with FakeOpenAI() as server:
        first = gen(docs, out, server.url, "--ray")
        again = gen(docs, out, server.url)
        assert max(server.answered.values()) == 1
    assert again["counts"]["sent"] == 0 and again["counts"]["cache_hits"] == first["counts"]["requests"]


@pytest.mark.slow  # 93 s on the shared 2-core machine (load 15): two driver processes join the Ray
def test_killed_ray_driver_rerun_resends_nothing_answered(docs, tmp_path, local_ray):
    """SIGKILL the driver once some answers sit in the workers' shards; the rerun (joining the same
    Ray through RAY_ADDRESS) completes and the server answers no prompt twice."""
    answered_before_kill, killed, release = 4, [False], threading.Event()
    order = iter(range(10**6))

    def script(call):
        if not killed[0] and next(order) >= answered_before_kill:
            return Reply(status=503, hold=release)  # in flight when the driver dies
        return Reply(good_json(call))

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": local_ray}
    with FakeOpenAI(script) as server:
        args = [sys.executable, "-m", "distill", *gen_args(docs, out, server.url, "--concurrency", "4", "--ray")]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while shard_rows(out) < answered_before_kill:
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.poll() is not None else "timeout"
            )
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(2)  # Ray ends the dead driver's job and its actors
        killed[0] = True
        release.set()
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert max(server.answered.values()) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["cache_hits"] >= answered_before_kill


def shard_rows(out: Path) -> int:
    rows = 0
    for shard in (out / "cache").glob("*.sqlite"):
        try:
            with sqlite3.connect(shard, timeout=1) as db:
                rows += db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        except sqlite3.OperationalError:  # table not created yet
            pass
    return rows


def test_unreachable_teacher_under_ray_is_one_line(docs, tmp_path, local_ray, capsys):
    with pytest.raises(SystemExit) as done:
        main(gen_args(docs, tmp_path / "out", "http://127.0.0.1:9/v1", "--ray"))
    err = capsys.readouterr().err.strip()
    assert (
        done.value.code == 2
        and err == "error: cannot reach the teacher at http://127.0.0.1:9/v1; start the server or fix --base-url"
    )


def test_cache_shards_are_read_by_every_worker_and_merged(tmp_path):
    from common.teacher.backends import Response
    from common.teacher.cache import Cache, merge_shards

    run_cache = tmp_path / "cache.sqlite"
    one, two = Cache(run_cache, shard="one"), Cache(run_cache, shard="two")
    one.put(Response("k1", "answer one"))
    assert (
        two.get_many(["k1", "k2"])["k1"].text == "answer one" and len(two) == 0
    )  # read from the other shard, not copied
    two.put(Response("k2", "answer two"))
    one.close(), two.close()
    assert set(Cache(run_cache).get_many(["k1", "k2"])) == {"k1", "k2"}  # the single-process run reads the shards
    assert merge_shards(run_cache) == 2 and not list((tmp_path / "cache").glob("*"))
    assert len(Cache(run_cache)) == 2


def test_missing_ray_is_one_line_naming_the_extra(docs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SystemExit) as done:
        main(gen_args(docs, tmp_path / "out", "http://127.0.0.1:9/v1", "--ray"))
    err = capsys.readouterr().err
    assert done.value.code == 2 and "pip install 'distill[ray]'" in err and len(err.strip().splitlines()) == 1


def test_ray_flag_that_swallowed_an_input_says_so(docs, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["gen", "--out", str(tmp_path / "out"), "--ray", str(docs)])
    assert done.value.code == 2 and "--ray=ADDRESS" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # a setting after --ray: no Ray would be joined at "max_chunks=5"
        main(["gen", str(docs), "--out", str(tmp_path / "out"), "--ray", "max_chunks=5"])
    assert done.value.code == 2 and "took the setting max_chunks=5" in capsys.readouterr().err


def test_a_small_corpus_is_read_in_enough_tasks_for_every_cpu():
    """At 64 files a task, 500 files were 8 tasks (half of 16 CPUs idle) and 60 files one task on one CPU:
    now one task a CPU at least, where the corpus gives each 8 files or more."""
    from generate.ray_stage import read_tasks

    class Cluster:
        def __init__(self, resources: dict):
            self.resources = resources

        def cluster_resources(self) -> dict:
            return self.resources

    two, sixteen = Cluster({"CPU": 2.0}), Cluster({"CPU": 16.0, "GPU": 8.0})
    assert read_tasks(500, 64, sixteen) == 16 and read_tasks(60, 64, two) == 2
    assert read_tasks(200, 64, two) == 4 and read_tasks(2000, 64, sixteen) == 32  # files_per_read decides
    assert read_tasks(20, 64, sixteen) == 3 and read_tasks(12, 64, two) == 2 and read_tasks(4, 64, two) == 1
    assert read_tasks(10, 1, two) == 10 and read_tasks(0, 64, Cluster({})) == 1


def test_spread_near_duplicate_search_keeps_what_the_index_keeps(local_ray):
    """Near-duplicates under Ray: the actors' signatures, partitioned by band key across 2 CPUs, give the
    driver the pairs from which it keeps and drops the very items the one-process index does, with the same
    rejects (repeats across batches, a chain a~b~c where c stays, phrasings of one fact that all stay)."""
    import copy

    import ray

    from generate.collect import Outcome
    from generate.curate import drop_near_duplicates
    from generate.ray_corpus import near_duplicate_pairs, signed
    from generate.ray_decide import near_duplicate_rejects

    topics = ["the boiling point of water at sea level", "the capital city of Norway", "the speed of light in vacuum",
              "the tallest mountain on Earth", "the author of the novel Middlemarch", "the year the Berlin Wall fell"]
    outcome, batches = Outcome(), []
    for b in range(4):  # four teacher batches of three chunks, every chunk asking of every topic
        batch = {}
        for c in range(3):
            key = f"doc{b}.md#{c}"
            batch[key] = [
                {"question": f"{opening} {topic}?", "evidence": topic, "answer": f"{topic} ({b}{c})", "reasoning": "r"}
                for topic in topics[(b + c) % 3 :: 2] for opening in ("What is", "what is", "Tell me what is")
            ]  # fmt: skip
            batch[key].append({"question": f"Is it {'one two three four five'[: 9 + 2 * c]}?", "evidence": "x",
                               "answer": "yes", "reasoning": "r"})  # fmt: skip
        outcome.items.update(copy.deepcopy(batch))
        batches.append(signed(batch, 0.8, {key: (b, int(key[-1])) for key in batch}, b))
    chunk_keys = list(outcome.items)
    items = sum(map(len, outcome.items.values()))
    on_index = copy.deepcopy(outcome)
    drop_near_duplicates(chunk_keys, on_index, 0.8)
    rows = ray.data.from_items([{column: values[0] for column, values in batch.items()} for batch in batches])
    pairs = near_duplicate_pairs(ray, rows, 0.8, items)
    by_row = near_duplicate_rejects(pairs)  # the driver's decisions from the pairs alone (ray_decide)
    decided = {
        f"{r['chunk']}:{outcome.items[r['chunk']].index(r['item'])}": [r["reason"], r["detail"][6:]]
        for r in on_index.rejects
    }
    assert {key: why for row in by_row.values() for key, why in row.items()} == decided
    assert set(by_row) == {int(r["chunk"][3]) for r in on_index.rejects}  # each row's, by its first file
    reasons = {r["reason"] for r in on_index.rejects}
    assert reasons == {"duplicate", "near_duplicate"} and 0 < len(on_index.rejects) < items
    asked = {key: [item["question"] for item in kept] for key, kept in on_index.items.items()}
    assert "Is it one two three?" in asked["doc0.md#2"] and "Is it one two thr?" not in asked["doc0.md#1"]  # the chain
    norway = {"What is the capital city of Norway?", "Tell me what is the capital city of Norway?"}
    assert norway <= set(asked["doc0.md#1"])  # phrasings of one fact


TOWNS = ["Aberdeen", "Bexleyheath", "Carrickfergus", "Dunfermline", "Enniskillen", "Fishguard", "Glastonbury",
         "Haverfordwest", "Inverness", "Jedburgh", "Kirkcaldy", "Llandudno"]  # fmt: skip


def mill_rows(signed_at: float, phrasings: int = 3) -> list[dict]:
    """Three teacher actors' rows of two files each, two chunks a file: every chunk asks its fact in (up to)
    three alike phrasings, and every chunk asks "What is the mill?" again (repeated across rows)."""
    from generate.chunk import Chunk
    from generate.collect import Outcome
    from generate.ray_corpus import signed
    from generate.ray_stage import astuple, summary

    rows = []
    for first in (0, 2, 4):
        files, chunks, outcome, places = [], [], Outcome(), {}
        for ordinal in (first, first + 1):
            doc = f"docs/file{ordinal}.md"
            files.append([ordinal, doc, ""])
            for index in range(2):
                town = TOWNS[2 * ordinal + index]
                text = f"The mill of {town} ground {100 + ordinal} sacks. It had {index + 3} stones."
                chunk = Chunk(doc, index, 100 * index, 100 * index + len(text), text)
                chunks.append([ordinal, *astuple(chunk)])
                places[chunk.key] = (ordinal, index)
                evidence = text.split(". ")[0] + "."
                asked = [f"How many sacks did the mill of {town} grind?",
                         f"What number of sacks was ground by the mill in {town}?",
                         f"Sacks ground at {town}'s mill: how many?"][:phrasings]  # fmt: skip
                fact = {"reasoning": "Step 1: the text says so.", "answer": str(100 + ordinal), "evidence": evidence}
                stones = {"reasoning": "Step 1: it says so.", "answer": str(index + 3), "evidence": text.split(". ")[1]}
                outcome.items[chunk.key] = [{"question": q, **fact} for q in asked]
                outcome.items[chunk.key].append({"question": "What is the mill?", **stones})
        items = json.dumps({"items": outcome.items, "rejects": [], "facts": None, "text": []})
        rows.append({"files": json.dumps(files), "chunks": json.dumps(chunks), "outcome": items,
                     "summary": summary(outcome), "requests": 4, **{
                         k: v[0] for k, v in signed(outcome.items, signed_at, places, first).items()}})  # fmt: skip
    return rows


@pytest.mark.parametrize(
    "settings, phrasings",
    [({}, 3), ({"test_fraction": 0.5}, 3), ({"split_by": "document", "test_fraction": 0.34}, 3), ({}, 1)],
)
def test_ray_decides_and_writes_the_records_a_run_without_ray_writes(local_ray, tmp_path, settings, phrasings):
    """Two ways to the same train.jsonl and test.jsonl, byte for byte, and the same manifest: one process, and Ray
    deciding the records row by row from the near-duplicate pairs and a cutoff rank found in two passes
    (ray_decide.decide), the driver holding no item. The question repeated in later rows is written once; a
    test fraction of 0.5 holds out a second phrasing of some facts; with one phrasing a fact, whole items are
    held out."""
    import ray

    from generate.config import GenConfig
    from generate.curate import drop_near_duplicates
    from generate.ray_corpus import near_duplicate_pairs
    from generate.ray_decide import ROW, decide, spread_rejects
    from generate.ray_stage import GATHERED, gather
    from generate.stage import save
    from generate.tasks import load_task

    rows = mill_rows(0.8, phrasings)
    asked = ray.data.from_items(rows).materialize()
    written = {}
    for way in ("one process", "ray"):
        out = tmp_path / way.replace(" ", "-")
        out.mkdir()
        cfg = GenConfig.model_validate({"inputs": [str(tmp_path)], "out": str(out), **settings, "teacher": {
            "backend": "openai", "model": "none", "base_url": ["http://127.0.0.1:9/v1"]}})  # fmt: skip
        task = load_task(cfg.task)
        if way == "ray":
            plan, outcome, items = gather(cfg, out, task, iter([{k: r[k] for k in GATHERED} for r in rows]), [])
            pairs = near_duplicate_pairs(ray, asked, 0.8, items)
            assert not outcome.items and not plan.chunks  # the driver holds counters only
            rejected = spread_rejects(ray, pairs)
            written[way] = (decide(ray, cfg, plan, outcome, asked.select_columns(ROW), rejected, time.time()), out)
            continue
        plan, outcome = single_process(cfg, out, task, rows)
        drop_near_duplicates([c.key for c in plan.chunks], outcome, 0.8)
        written[way] = (save(cfg, plan, outcome, time.time()), out)
    (single, plain), (on_ray, sharded) = written["one process"], written["ray"]
    assert single["counts"]["train"] > single["counts"]["test"] > 0 and single["rejected"] == {"duplicate": 11}, single
    unit = "documents" if "split_by" in settings else "phrasings" if phrasings > 1 else "items"
    assert single["facts"]["held_out"] == unit
    for name in ("train.jsonl", "test.jsonl"):
        assert (sharded / name).read_bytes() == (plain / name).read_bytes(), name
        shards = sorted((sharded / "shards").glob(f"{name.split('.')[0]}-*.jsonl"))
        assert [p.name for p in shards] == [f"{name.split('.')[0]}-000000{n}.jsonl" for n in (0, 2, 4)]
        assert b"".join(p.read_bytes() for p in shards) == (plain / name).read_bytes()
    for key in ("status", "counts", "rejected", "coverage", "facts", "warnings"):
        assert on_ray[key] == single[key], key
    assert on_ray["files"]["shards"] == "shards" and not (sharded / "shards.tmp").exists()
    rejects = [json.loads(line) for line in (sharded / "rejects.jsonl").read_text().splitlines()]
    assert [r["detail"] for r in rejects] == ["like: What is the mill?"] * 11  # named by the driver's decision
    assert "shards" not in single["files"]


def test_ray_judges_the_items_as_a_run_without_ray_judges_them(local_ray, tmp_path):
    """min_score under Ray: judge actors score each row's items left by the near-duplicate decisions (the repeated
    question is not judged twice), the scores keep or drop the same items as curate.judge in one process, and the
    records, rejects and manifest come out the same; a rerun is answered from the cache."""
    import zlib

    import ray

    from common.teacher.ask import CachedTeacher
    from generate.config import GenConfig
    from generate.curate import curate
    from generate.ray_corpus import near_duplicate_pairs
    from generate.ray_decide import ROW, decide, spread_rejects
    from generate.ray_stage import GATHERED, gather, judge_rows
    from generate.stage import save
    from generate.tasks import load_task

    def half_judged(call):  # a judge that scores half the items 2 (dropped at min_score 3), by their prompt
        text = call.body["messages"][-1]["content"]
        return Reply(good_json(call, score=2 if zlib.crc32(text.encode()) % 2 else 5))

    rows = mill_rows(0.8)
    asked = ray.data.from_items(rows).materialize()
    written = {}
    with FakeOpenAI(half_judged) as server:
        for way in ("one process", "ray"):
            out = tmp_path / way.replace(" ", "-")
            out.mkdir()
            cfg = GenConfig.model_validate({"inputs": [str(tmp_path)], "out": str(out), "min_score": 3, "teacher": {
                "backend": "openai", "model": "teacher", "base_url": [server.url], "backoff_s": 0.001},
                **({"ray": {"teacher_workers": 2}} if way == "ray" else {})})  # fmt: skip
            task = load_task(cfg.task)
            if way == "ray":
                plan, outcome, items = gather(cfg, out, task, iter([{k: r[k] for k in GATHERED} for r in rows]), [])
                rejected = spread_rejects(ray, near_duplicate_pairs(ray, asked, 0.8, items))
                judged = judge_rows(ray, cfg, out, asked.select_columns(ROW), rejected, outcome)
                written[way] = (decide(ray, cfg, plan, outcome, judged, {}, time.time()), out)
                continue
            plan, outcome = single_process(cfg, out, task, rows)
            with CachedTeacher(cfg.teacher, out / "cache.sqlite") as teacher:
                curate(cfg, plan, outcome, teacher, False)
            written[way] = (save(cfg, plan, outcome, time.time()), out)
        judged_prompts = sum(1 for b in server.bodies if "reviewer" in b["messages"][0]["content"])
    (single, plain), (on_ray, sharded) = written["one process"], written["ray"]
    assert judged_prompts == 2 * 37  # each run judged the 36 phrasings and "What is the mill?" once
    assert single["rejected"]["low_score"] > 5 and single["counts"]["train"] > single["counts"]["test"] > 0
    assert single["counts"]["judge_sent"] == 37 and on_ray["counts"]["judge_sent"] == 37
    for name in ("train.jsonl", "test.jsonl"):
        assert (sharded / name).read_bytes() == (plain / name).read_bytes(), name
    for key in ("status", "counts", "rejected", "coverage", "facts", "warnings"):
        assert on_ray[key] == single[key], key


def test_a_run_without_ray_removes_the_shards_of_an_earlier_ray_run(tmp_path):
    """Shards left by a --ray run would disagree with the train.jsonl a later run without Ray writes."""
    from generate.stage import write_records

    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "train-0000000.jsonl").write_text('{"id": "old"}\n')
    assert write_records(tmp_path, [], [], {"backend": "openai", "model": "m"}, "qa") == {}
    assert (tmp_path / "train.jsonl").read_text() == "" and not (tmp_path / "shards").exists()
