"""The fault matrix of docs/reliability.md ("Teacher servers"): `distill gen` against a loopback
server that misbehaves in one way, then a rerun against a well-behaved one.

Each case checks that the faulty run finishes (exit 0) or stops with one clear line (exit 3,
status incomplete), and that after the rerun the data equal a clean run's (items lost: the
record ids of the clean run that are missing) with no prompt answered twice over both runs
(sent twice: good 200 answers for the same prompt, counted from the servers' logs).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from test_openai_gen import gen_args, records

import generate.stage
from distill.cli import main

from openai_server import FakeOpenAI, Reply, completion, default_script, good_json, make_docs
from reliability import record

pytestmark = pytest.mark.faults
KEY = "sk-fault-test-0123456789"
FAST = ("teacher.max_retries=2", "teacher.backoff_s=0.01", "teacher.backoff_max_s=0.05")
HTML_502 = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
PORTAL = b"<!DOCTYPE html><html><head><title>Sign in to the guest network</title></head><body><form>...</form></body></html>"


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults") / "docs"
    make_docs(folder, docs=2, paragraphs=3)
    return folder


@pytest.fixture(scope="module")
def clean(docs, tokenizer, tmp_path_factory) -> list[str]:
    """Record ids of a run against a well-behaved server."""
    out = tmp_path_factory.mktemp("clean") / "out"
    with pytest.MonkeyPatch.context() as patch, FakeOpenAI() as server:
        patch.setattr(generate.stage, "load_tokenizer", lambda name: tokenizer)
        code = run(docs, out, server.url)
    assert code == 0
    return sorted(r["id"] for r in records(out))


def run(docs: Path, out: Path, url: str, *extra: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(gen_args(docs, out, url, *FAST, *extra))
    return done.value.code


def printed(capsys, caplog) -> str:
    """What the user saw on stderr: the CLI's lines, and the warnings logged (pytest captures those apart).
    The loopback server's own log (aiohttp's, e.g. a client that hung up mid-body) is not the user's."""
    ours = [r for r in caplog.records if r.levelno >= logging.WARNING and not r.name.startswith("aiohttp")]
    lines = [r.getMessage() for r in ours] + capsys.readouterr().err.splitlines()
    caplog.clear()
    return "\n".join(lines)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def judge(fault: str, clean: list[str], out: Path, servers: list[FakeOpenAI], first: tuple[int, str], rerun_code: int) -> None:
    """Count, record for docs/reliability.md, then check."""
    code, err = first
    lines = err.strip().splitlines()
    clear = (code == 0 and len(lines) <= 1) or (code == 3 and len(lines) == 1 and lines[0].startswith("incomplete: ") and "rerun the same command" in lines[0])
    got = sorted(r["id"] for r in records(out))
    answered = sum((s.answered for s in servers), Counter())
    lost, twice = len(set(clean) - set(got)), sum(n - 1 for n in answered.values() if n > 1)
    record("gen", fault, runs=1, survived=int(clear and rerun_code == 0 and got == clean), items_lost=lost, sent_twice=twice)
    assert clear, (code, err)
    assert rerun_code == 0 and manifest(out)["status"] == "complete"
    assert got == clean and lost == 0 and twice == 0
    assert KEY not in err


def faulty_then_healthy(docs, out, capsys, caplog, script, *extra, **server) -> tuple[tuple[int, str], list[FakeOpenAI], int]:
    with FakeOpenAI(script, **server) as bad:
        code = run(docs, out, bad.url, *extra)
    first = (code, printed(capsys, caplog))
    with FakeOpenAI() as good:
        rerun = run(docs, out, good.url)
    return first, [bad, good], rerun


# ---------------------------------------------------------------- the matrix


def test_html_error_pages(docs, clean, tmp_path, capsys, caplog, shared_tokenizer):
    """A proxy answers 502 with nginx's HTML page for every request (the issue: exit 0, nothing accepted)."""
    started = time.monotonic()
    script = lambda call: Reply(status=502, raw=HTML_502, content_type="text/html")  # noqa: E731
    first, servers, rerun = faulty_then_healthy(docs, tmp_path / "out", capsys, caplog, script, "--concurrency", "2")
    judge("HTML error pages (502 from a proxy)", clean, tmp_path / "out", servers, first, rerun)
    assert first[0] == 3 and "HTTP 502: an HTML page: 502 Bad Gateway" in first[1] and "<" not in first[1]
    assert len(servers[0].calls) <= 3 + 1 < manifest(tmp_path / "out")["counts"]["chunks"]  # down after 3 failed requests in a row: the rest were not sent
    assert time.monotonic() - started < 20


def test_body_trickled_byte_by_byte(docs, clean, tmp_path, capsys, caplog, shared_tokenizer):
    """Every byte comes within the read timeout, the whole never does: the request's time limit applies."""
    started = time.monotonic()
    script = lambda call: Reply(good_json(call), trickle_s=0.02)  # noqa: E731
    first, servers, rerun = faulty_then_healthy(docs, tmp_path / "out", capsys, caplog, script, "teacher.timeout_s=0.4")
    elapsed = time.monotonic() - started
    judge("body trickled byte by byte", clean, tmp_path / "out", servers, first, rerun)
    assert first[0] == 3 and "timed out after 0.4 s" in first[1] and elapsed < 15


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_20_mb_body(docs, clean, tmp_path, capsys, caplog, shared_tokenizer, chunked):
    huge = json.dumps(completion({"model": "teacher"}, Reply("x" * 20 * 2**20))).encode()
    script = lambda call: Reply(raw=huge, chunked=chunked)  # noqa: E731

    first, servers, rerun = faulty_then_healthy(docs, tmp_path / "out", capsys, caplog, script)
    judge(f"20 MB body ({'chunked' if chunked else 'with Content-Length'})", clean, tmp_path / "out", servers, first, rerun)
    assert first[0] == 3 and "larger than 8 MiB" in first[1]


def test_json_body_with_a_wrong_content_type_is_read(docs, clean, tmp_path, capsys, caplog, shared_tokenizer):
    script = lambda call: Reply(good_json(call), content_type="text/plain")  # noqa: E731
    first, servers, rerun = faulty_then_healthy(docs, tmp_path / "out", capsys, caplog, script)
    judge("completion sent as text/plain", clean, tmp_path / "out", servers, first, rerun)
    assert first == (0, "") and not servers[1].calls  # nothing left for the rerun


def test_html_page_with_status_200(docs, clean, tmp_path, capsys, caplog, shared_tokenizer):
    """A captive portal answers 200 with its sign-in page."""
    first, servers, rerun = faulty_then_healthy(docs, tmp_path / "out", capsys, caplog, lambda call: Reply(raw=PORTAL, content_type="text/html"))
    judge("HTML page with status 200", clean, tmp_path / "out", servers, first, rerun)
    assert first[0] == 3 and "not a chat completion: an HTML page: Sign in to the guest network" in first[1]


@pytest.mark.parametrize("every_time", [False, True], ids=["first-attempt", "every-attempt"])
def test_json_cut_mid_string_with_finish_reason_stop(docs, clean, tmp_path, capsys, caplog, shared_tokenizer, every_time):
    def script(call):
        if every_time or call.attempt == 1:
            return Reply(good_json(call)[:40], finish_reason="stop", fault=True)
        return Reply(good_json(call))

    first, servers, rerun = faulty_then_healthy(docs, tmp_path / "out", capsys, caplog, script)
    judge(f"JSON cut mid-string, finish_reason stop ({'every attempt' if every_time else 'first attempt'})", clean, tmp_path / "out", servers, first, rerun)
    assert first[0] == (3 if every_time else 0) and (every_time or first[1] == "")
    assert not manifest(tmp_path / "out")["counts"]["repairs"]  # retried as a fault of the wire, never cached as the model's answer


@pytest.mark.parametrize("back_at_once", [False, True], ids=["restarted-after-the-run", "restarted-during-retries"])
def test_server_killed_mid_run_and_restarted(docs, clean, tmp_path, capsys, caplog, shared_tokenizer, back_at_once):
    """The server dies after 3 answers (the issue: 3 of 6 requests failed, exit 0) and comes back on the same port."""
    out, never = tmp_path / "out", threading.Event()
    servers: list[FakeOpenAI] = []

    def script(call):
        return Reply(good_json(call)) if sum(servers[0].answered.values()) < 3 else Reply(good_json(call), hold=never)

    def kill_after_three() -> None:
        while sum(servers[0].answered.values()) < 3 or servers[0].inflight < 1:
            time.sleep(0.01)
        servers[0].__exit__()
        if back_at_once:
            servers.append(FakeOpenAI(port=servers[0].port).__enter__())

    servers.append(FakeOpenAI(script).__enter__())
    killer = threading.Thread(target=kill_after_three)
    killer.start()
    retries = ("teacher.max_retries=8", "teacher.backoff_s=0.05", "teacher.backoff_max_s=0.2") if back_at_once else ()
    code = run(docs, out, servers[0].url, "--concurrency", "1", *retries)
    killer.join(10)
    first = (code, printed(capsys, caplog))
    if not back_at_once:
        servers.append(FakeOpenAI(port=servers[0].port).__enter__())
    try:
        rerun = run(docs, out, servers[0].url)
    finally:
        servers[1].__exit__()
    judge(f"server killed mid-run, {'back during the retries' if back_at_once else 'restarted after the run'}", clean, out, servers, first, rerun)
    if back_at_once:
        assert first == (0, "")
    else:
        assert first[0] == 3 and "stopped answering after 3 answers" in first[1]
        assert manifest(out)["counts"]["cache_hits"] == 3  # the rerun asked only what the first run lost


def test_key_revoked_mid_run(docs, clean, tmp_path, capsys, caplog, shared_tokenizer, monkeypatch):
    """401 after 3 answers: the run stops with one line naming the variable (never the key); a rerun with a valid key completes."""
    monkeypatch.setenv("DISTILL_TEST_KEY", KEY)
    holder: list[FakeOpenAI] = []

    def script(call):
        if sum(holder[0].answered.values()) >= 2:
            holder[0].api_key = "sk-the-new-key"  # revoked: the next requests get 401
        return default_script(call)

    out = tmp_path / "out"
    with FakeOpenAI(script, api_key=KEY) as server:
        holder.append(server)
        code = run(docs, out, server.url, "--api-key-env", "DISTILL_TEST_KEY", "--concurrency", "1")
        first = (code, printed(capsys, caplog))
        monkeypatch.setenv("DISTILL_TEST_KEY", "sk-the-new-key")
        rerun = run(docs, out, server.url, "--api-key-env", "DISTILL_TEST_KEY")
    judge("API key revoked mid-run (401 after successes)", clean, out, [server], first, rerun)
    assert first[0] == 3 and "rejected the API key from $DISTILL_TEST_KEY (HTTP 401) after 3 answers" in first[1]
    assert "sk-the-new-key" not in first[1]
    for path in out.iterdir():
        assert KEY.encode() not in path.read_bytes() and b"sk-the-new-key" not in path.read_bytes(), path


def test_one_of_two_servers_killed_mid_run(docs, clean, tmp_path, capsys, caplog, shared_tokenizer):
    """The other server takes the dead one's requests: the run completes, and says so once."""
    out, never = tmp_path / "out", threading.Event()
    with FakeOpenAI() as steady:
        holder: list[FakeOpenAI] = []
        script = lambda call: Reply(good_json(call)) if sum(holder[0].answered.values()) < 2 else Reply(good_json(call), hold=never)  # noqa: E731
        holder.append(FakeOpenAI(script).__enter__())
        killer = threading.Thread(target=lambda: (wait_until(lambda: sum(holder[0].answered.values()) >= 2 and holder[0].inflight >= 1), holder[0].__exit__()))
        killer.start()
        code = run(docs, out, holder[0].url, "--base-url", steady.url, "--concurrency", "2")
        killer.join(10)
        first = (code, printed(capsys, caplog))
        rerun = run(docs, out, steady.url)
    lines = first[1].strip().splitlines()
    assert len(lines) == 1 and f"the teacher at {holder[0].url} stopped answering after 2 answers" in lines[0] and "go to the 1 other server" in lines[0]
    judge("one of two servers killed mid-run", clean, out, [holder[0], steady], first, rerun)
    assert first[0] == 0 and manifest(out)["counts"]["cache_hits"] == manifest(out)["counts"]["chunks"]


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)
