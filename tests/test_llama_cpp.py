"""A real llama.cpp server (issue 27): llama-cpp-python[server] serving the embedded SmolLM2 GGUF
on 127.0.0.1, and `distill gen` on 8 chunks of CPython's language reference against it: killed
once its first answer is cached, resumed (at least one accepted record, no request answered
twice, the server still up), then rerun (nothing sent).

`slow`: llama-cpp-python compiles llama.cpp when installed (about 12 minutes on 2 cores), so it is
not a dependency; the test uses the python named by $DISTILL_LLAMA_PYTHON, or this one where it
imports llama_cpp, and is skipped with the reason otherwise:

    python3 -m venv /tmp/llama && /tmp/llama/bin/pip install 'llama-cpp-python[server]'
    DISTILL_LLAMA_PYTHON=/tmp/llama/bin/python pytest -m slow tests/test_llama_cpp.py tests/test_grammar_converters.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_grammar_converters import LLAMA_MISSING, other_python
from test_openai_gen import cached_rows

from common.models import embedded_gguf

from reliability import record

ROOT = Path(__file__).parents[1]
START_S = 180  # the server loads a 100 MB model
ANSWER_S = 900  # first answer of a 135M model on a loaded 2-core CPU, grammar included


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    python = other_python("DISTILL_LLAMA_PYTHON", "llama_cpp")
    if python is None:
        pytest.skip(LLAMA_MISSING)
    if subprocess.run([python, "-c", "import llama_cpp.server.app"], check=False, capture_output=True).returncode:
        pytest.skip(f"{python} has llama_cpp but not its server; pip install 'llama-cpp-python[server]'")
    port, log = free_port(), tmp_path_factory.mktemp("llama") / "server.log"
    command = [python, "-m", "llama_cpp.server", "--model", str(embedded_gguf()), "--model_alias", "smollm2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "1"]  # one core
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_S
    while not answers(url):
        assert proc.poll() is None and time.monotonic() < deadline, f"no server: {log.read_text()[-2000:]}"
        time.sleep(1)
    yield url, proc, log
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def corpus(folder: Path) -> Path:
    command = [sys.executable, str(ROOT / "examples/make_corpus.py"), str(folder), "--python-reference"]
    subprocess.run(command, check=True, capture_output=True)
    return folder


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def record_ids(out: Path) -> list[str]:
    lines = [line for name in ("train.jsonl", "test.jsonl") for line in (out / name).read_text().splitlines()]
    return [json.loads(line)["id"] for line in lines]


@pytest.mark.slow
@pytest.mark.faults
def test_gen_against_a_real_llama_cpp_server(llama_server, tmp_path):
    url, server, log = llama_server
    docs, out = corpus(tmp_path / "docs"), tmp_path / "out"
    args = [sys.executable, "-m", "distill", "gen", str(docs), "--out", str(out), "--teacher", "openai"]
    args += ["--base-url", url, "--model", "smollm2", "--max-chunks", "8", "--pairs-per-chunk", "2", "-q"]
    args += ["teacher.timeout_s=1800", "teacher.concurrency=2"]  # 135M under grammar, loaded CPU: minutes a reply
    args += ["teacher.temperature=0.2"]  # a 135M model at 0.7 wrote off-topic text in every field
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while cached_rows(out) < 1:  # killed once its first answer is cached
        assert first.poll() is None, f"gen ended before its first answer: {first.stderr.read()[-2000:]}"
        assert time.monotonic() - started < ANSWER_S and server.poll() is None, log.read_text()[-2000:]
        time.sleep(0.5)
    first.kill()
    first.wait()
    before = cached_rows(out)

    resumed = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=3000)
    assert (out / "manifest.json").exists(), f"exit {resumed.returncode}: {resumed.stderr[-2000:]}"
    done = manifest(out)
    counts, ids = done["counts"], record_ids(out)
    alive = server.poll() is None and answers(url)
    note = f"{counts['chunks']} chunks, {counts['accepted']} accepted, {sum(done['rejected'].values())} rejected; "
    note += f"{before} answered before the kill, {counts['sent']} sent after it; {time.monotonic() - started:.0f} s"
    survived = int(resumed.returncode == 0 and counts["accepted"] > 0 and alive)
    twice = before + counts["sent"] - cached_rows(out)
    fault = "a real llama.cpp server (llama-cpp-python), SIGKILL and resume"
    record("gen", fault, runs=1, survived=survived, sent_twice=twice, kills=1, note=note)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert alive, f"the server is gone: {log.read_text()[-2000:]}"
    assert done["status"] == "complete" and counts["chunks"] == 8 and counts["accepted"] >= 1
    assert done["teacher"]["schema_rendering"] == {url: "gbnf"}
    assert twice == 0 and counts["cache_hits"] >= 1  # every answer asked for once: the cache grew by what was sent
    assert len(ids) == len(set(ids)) == counts["train"] + counts["test"]

    rerun = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=600)
    again = manifest(out)
    assert rerun.returncode == 0 and again["counts"]["sent"] == 0 and sorted(record_ids(out)) == sorted(ids)
    assert server.poll() is None and answers(url)
