"""`distill gen --teacher openai` end to end against a loopback server: repair, faults, curation, resume."""

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
from common.teacher import backend_openai
from distill.cli import main
from generate.collect import Outcome
from generate.curate import drop_near_duplicates

from openai_server import FakeOpenAI, Reply, good_json, make_docs

KEY = "sk-test-secret-4242424242"
PHRASINGS = 3  # questions per fact in the item split (phrasings: auto)


@pytest.fixture
def docs(tmp_path) -> Path:
    make_docs(tmp_path / "docs", docs=3, paragraphs=3)
    return tmp_path / "docs"


def gen_args(docs: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "gen", str(docs), "--out", str(out), "--teacher", "openai", "--base-url", url, "--model", "teacher", "-q",
        "chunk_tokens=128", "chunk_overlap=0", "teacher.backoff_s=0.001", "teacher.backoff_max_s=0.01",
        "-n", "2", *extra,  # a fixed number: one request a chunk (facts first: tests/test_facts.py)
    ]  # fmt: skip


def gen(docs: Path, out: Path, url: str, *extra: str) -> tuple[int, dict]:
    with pytest.raises(SystemExit) as done:
        main(gen_args(docs, out, url, *extra))
    manifest = out / "manifest.json"
    return done.value.code, json.loads(manifest.read_text()) if manifest.exists() else {}


def records(out: Path) -> list[dict]:
    return [json.loads(line) for name in ("train.jsonl", "test.jsonl") for line in (out / name).read_text().splitlines()]


def test_gen_end_to_end_and_rerun_from_cache(docs, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", KEY)
    out = tmp_path / "out"
    with FakeOpenAI(api_key=KEY) as server:
        code, manifest = gen(docs, out, server.url, "--api-key-env", "DISTILL_TEST_KEY", "--concurrency", "8")
        sent = sum(server.calls.values())
        assert code == 0 and manifest["status"] == "complete"
        assert schemas.errors("manifest", manifest) == []
        counts = manifest["counts"]
        assert counts["requests"] == counts["chunks"] == sent == counts["sent"] and counts["cache_hits"] == 0
        assert set(manifest["rejected"]) <= {"duplicate"} and manifest["coverage"]["chunks_without_items"] == 0
        assert counts["train"] + counts["test"] + counts["deduplicated"] == 2 * PHRASINGS * counts["chunks"]
        assert manifest["facts"]["held_out"] == "phrasings" and manifest["facts"]["test_facts_taught"] == manifest["facts"]["facts_in_test"] > 0
        assert {r["teacher"]["backend"] for r in records(out)} == {"openai"}
        for path in out.iterdir():  # the key is nowhere in the outputs (cache included)
            assert KEY.encode() not in path.read_bytes(), path
        assert manifest["config"]["teacher"]["api_key_env"] == "DISTILL_TEST_KEY"

        code, again = gen(docs, out, server.url, "--api-key-env", "DISTILL_TEST_KEY")
        assert code == 0 and sum(server.calls.values()) == sent  # nothing asked twice
        assert again["counts"]["cache_hits"] == again["counts"]["requests"]
        assert again["counts"]["train"] == counts["train"]


def test_invalid_json_is_repaired_with_the_error_shown(docs, tmp_path):
    script = lambda call: Reply(good_json(call)) if call.repair else Reply("Here you go: {oops")  # noqa: E731
    with FakeOpenAI(script) as server:
        code, manifest = gen(docs, tmp_path / "out", server.url)
    assert code == 0 and set(manifest["rejected"]) <= {"duplicate"}
    assert manifest["counts"]["repairs"] == manifest["counts"]["chunks"]
    repairs = [b for b in server.bodies if any(m["role"] == "assistant" for m in b["messages"])]
    assert len(repairs) == manifest["counts"]["chunks"]
    assert all("not valid" in b["messages"][-1]["content"] and b["messages"][-2]["content"] == "Here you go: {oops" for b in repairs)


def test_truncated_and_failed_are_counted_and_failed_retried_next_run(docs, tmp_path):
    seen: list[str] = []

    def script(call):
        if call.prompt not in seen:
            seen.append(call.prompt)
        if call.prompt == seen[0]:
            return Reply(status=500)
        if call.prompt == seen[1]:
            return Reply('{"items": [{"question": "Which', finish_reason="length")
        return Reply(good_json(call))

    out = tmp_path / "out"
    with FakeOpenAI(script) as server:
        code, manifest = gen(docs, out, server.url, "--concurrency", "1", "teacher.max_retries=1")
    assert code == 3 and manifest["status"] == "incomplete" and manifest["failures"] == {"requests": 1, "last_error": "HTTP 500: scripted error"}
    assert {k: v for k, v in manifest["rejected"].items() if k != "duplicate"} == {"failed_request": 1, "truncated": 1}
    assert manifest["counts"]["failed_requests"] == 1 and manifest["counts"]["finish_length"] == 1
    coverage = manifest["coverage"]
    assert coverage["chunks_without_items"] == 2 and coverage["items_lost"]["request"] == 2 * 2 * PHRASINGS
    assert sorted(c["reason"] for c in coverage["empty_chunks"]) == ["failed_request", "truncated"]
    with FakeOpenAI() as healthy:
        code, again = gen(docs, out, healthy.url)
    assert code == 0 and again["status"] == "complete"
    assert sum(healthy.calls.values()) == 1  # only the failed request; the truncated answer is cached
    assert again["rejected"].get("failed_request") is None and again["rejected"]["truncated"] == 1
    assert again["counts"]["failed_requests"] == 0


def test_reasoning_task_takes_the_native_trace(docs, tmp_path):
    script = lambda call: Reply(good_json(call), reasoning_content="1. Native step.\n2. Conclusion.")  # noqa: E731
    with FakeOpenAI(script) as server:
        code, _ = gen(docs, tmp_path / "out", server.url, "--task", "reasoning", "-n", "1")
    assert code == 0
    assert {r["reasoning"] for r in records(tmp_path / "out")} == {"1. Native step.\n2. Conclusion."}


def test_judge_drops_low_scores_and_its_answers_are_cached(docs, tmp_path):
    def script(call):
        if call.judge:
            return Reply(good_json(call, score=2 if int(call.prompt, 16) % 3 == 0 else 5))
        return Reply(good_json(call))

    out = tmp_path / "out"
    with FakeOpenAI(script) as server:
        code, manifest = gen(docs, out, server.url, "--min-score", "4")
        judged = sum(1 for b in server.bodies if "reviewer" in b["messages"][0]["content"])
        counts = manifest["counts"]
        assert code == 0 and judged == 2 * PHRASINGS * counts["chunks"] - counts["deduplicated"]
        assert 0 < manifest["rejected"]["low_score"] < judged
        assert counts["train"] + counts["test"] + manifest["rejected"]["low_score"] == judged
        assert manifest["coverage"]["items_lost"]["judge"] == manifest["rejected"]["low_score"]
        calls = sum(server.calls.values())
        code, again = gen(docs, out, server.url, "--min-score", "4")
        assert sum(server.calls.values()) == calls and again["counts"]["judge_cache_hits"] == judged
        assert again["rejected"] == manifest["rejected"]


BOILING = "What is the boiling point of pure water at sea level under standard atmospheric pressure?"


def test_near_duplicate_questions_are_dropped():
    def item(question):
        return {"question": question, "reasoning": "r", "answer": "x", "evidence": "e"}

    outcome = Outcome(items={
        "doc#0": [item(BOILING), item("Who wrote the treaty of Brel?")],
        "doc#1": [item(BOILING.replace("is", "was", 1)), item(BOILING.lower().replace("sea level", "sea-level"))],
    })  # fmt: skip
    drop_near_duplicates(["doc#0", "doc#1"], outcome, threshold=0.8)
    assert [i["question"] for i in outcome.items["doc#0"]] == [BOILING, "Who wrote the treaty of Brel?"]
    assert outcome.items["doc#1"] == []
    assert sorted(r["reason"] for r in outcome.rejects) == ["duplicate", "near_duplicate"]


def test_unreachable_teacher_fails_fast_with_one_line(docs, tmp_path, capsys):
    code, manifest = gen(docs, tmp_path / "out", "http://127.0.0.1:9/v1")
    err = capsys.readouterr().err.strip()
    assert code == 2 and not manifest
    assert err.startswith("error: cannot reach the teacher at http://127.0.0.1:9/v1") and "\n" not in err


def test_a_busy_server_that_answers_no_model_list_in_time_is_asked_all_the_same(docs, tmp_path, monkeypatch):
    """llama-cpp-python's server answers GET /models only between two generations: after a kill, the
    resumed run found it busy with the killed run's requests, and ended on "cannot reach" (issue 27)."""
    monkeypatch.setattr(backend_openai, "PROBE_TIMEOUT_S", 0.2)
    with FakeOpenAI() as server:
        server.models_wait_s = 1.0
        code, manifest = gen(docs, tmp_path / "out", server.url)
    assert code == 0 and manifest["status"] == "complete" and manifest["counts"]["accepted"] > 0


def test_rejected_key_fails_fast_without_printing_it(docs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-wrong-key-777")
    with FakeOpenAI(api_key=KEY) as server:
        code, manifest = gen(docs, tmp_path / "out", server.url, "--api-key-env", "DISTILL_TEST_KEY")
        assert not server.bodies
    err = capsys.readouterr().err
    assert code == 2 and not manifest and "rejected the API key" in err and "sk-wrong" not in err


def test_sigkill_and_resume_answers_no_request_twice(docs, tmp_path):
    """Kill the CLI once some answers are cached and the rest are in flight; the rerun completes
    the run, no record is lost or duplicated, and the server answers every prompt exactly once."""
    with FakeOpenAI() as reference:
        gen(docs, tmp_path / "ref", reference.url)
    expected = sorted(r["id"] for r in records(tmp_path / "ref"))

    killed, answered_before_kill = [False], 5
    release = threading.Event()
    order = iter(range(10**6))

    def script(call):
        if not killed[0] and next(order) >= answered_before_kill:
            return Reply(status=503, hold=release)  # in flight when the client dies; never answered
        return Reply(good_json(call))

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    with FakeOpenAI(script) as server:
        args = [sys.executable, "-m", "distill", *gen_args(docs, out, server.url, "--concurrency", "4")]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while cached_rows(out) < answered_before_kill:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed[0] = True
        release.set()
        assert sum(server.answered.values()) == answered_before_kill
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert max(server.answered.values()) == 1 and len(server.answered) == len(reference.answered)
    assert sorted(r["id"] for r in records(out)) == expected


def cached_rows(out: Path) -> int:
    if not (out / "cache.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(out / "cache.sqlite", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0
