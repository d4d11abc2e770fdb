"""Honest exit codes: a gen run with failed teacher requests ends `incomplete` (manifest, one
line, exit 3), and `distill run` stops there unless `--allow-incomplete`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_openai_gen import gen_args, records
from test_pipeline import FakeTrainConfig

import schemas
from distill.cli import main

from openai_server import FakeOpenAI, Reply, first_user, good_json, make_docs

KEY = "sk-incomplete-test-4242"


@pytest.fixture
def docs(tmp_path) -> Path:
    make_docs(tmp_path / "docs", docs=2, paragraphs=2)
    return tmp_path / "docs"


def doomed(call) -> bool:
    """One chunk of each document fails: the server errs on it, every time."""
    return "Topic 0" in first_user(call.body) or "Topic 1" in first_user(call.body)


def failing_some(call) -> Reply:
    return Reply(status=500, error=f"upstream model crashed (key {KEY})") if doomed(call) else Reply(good_json(call))


def test_gen_with_failed_requests_exits_3_with_one_line(docs, tmp_path, capsys, monkeypatch, shared_tokenizer):
    monkeypatch.setenv("DISTILL_TEST_KEY", KEY)
    out = tmp_path / "out"
    with FakeOpenAI(failing_some, api_key=KEY) as server:
        with pytest.raises(SystemExit) as done:
            main(gen_args(docs, out, server.url, "--api-key-env", "DISTILL_TEST_KEY", "--json", "teacher.max_retries=1"))
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # --json: the manifest on stdout, the line on stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert done.value.code == 3 and printed["status"] == manifest["status"] == "incomplete"
    assert schemas.errors("manifest", manifest) == []
    failed = manifest["counts"]["failed_requests"]
    assert failed == manifest["failures"]["requests"] == manifest["rejected"]["failed_request"] == sum(1 for p in server.calls if not server.answered[p]) == 2
    assert manifest["failures"]["last_error"] == "HTTP 500: upstream model crashed (key ***)"
    (line,) = captured.err.strip().splitlines()
    assert line == f"incomplete: {failed} teacher requests failed (last error: HTTP 500: upstream model crashed (key ***)); what was answered is saved: rerun the same command to retry them"
    assert manifest["counts"]["train"] > 0  # what was answered is written


@pytest.fixture
def pipeline(docs, tmp_path):
    def write(url: str) -> Path:
        teacher = {"backend": "openai", "model": "teacher", "base_url": [url], "backoff_s": 0.001, "max_retries": 1}
        config = {
            # a fixed number of facts: the rerun then sends exactly the failed requests (facts first, a failed
            # listing's item requests are sent after it: new requests, not retries)
            "gen": {"inputs": [str(docs)], "out": str(tmp_path / "data"), "chunk_tokens": 128, "chunk_overlap": 0, "pairs_per_chunk": 2, "teacher": teacher},
            "train": {"out": str(tmp_path / "student"), "max_steps": 1},
        }
        path = tmp_path / "pipeline.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def test_distill_run_stops_before_training_on_incomplete_data(pipeline, tmp_path, capsys, monkeypatch, shared_tokenizer):
    trained = []

    def run_sft(cfg, show_progress=True):
        trained.append(len(records(Path(cfg.data))))
        record = {"status": "done", "config": cfg.model_dump()}
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "run.json").write_text(json.dumps(record))
        return record

    monkeypatch.setattr("distill.pipeline.train_classes", lambda: (FakeTrainConfig, run_sft))
    with FakeOpenAI(failing_some) as flaky:
        path = pipeline(flaky.url)
        with pytest.raises(SystemExit) as stopped:
            main(["run", str(path), "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == 3 and not trained and not (tmp_path / "student").exists()
        assert len(err) == 1 and err[0].startswith("incomplete: gen: ") and err[0].endswith("or pass --allow-incomplete to go on with what was answered")
        assert not (tmp_path / "data" / "stage.json").exists()

        with pytest.raises(SystemExit) as allowed:
            main(["run", str(path), "--allow-incomplete"])
        assert allowed.value.code == 0 and len(trained) == 1
        assert "going on with what was answered" in capsys.readouterr().err
        asked_before = sum(flaky.calls.values())

    with FakeOpenAI() as healthy:  # the next distill run sends only the failed requests, then trains on the whole data
        with pytest.raises(SystemExit) as rerun:
            main(["run", str(pipeline(healthy.url)), "-q"])
        manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
        assert rerun.value.code == 0 and manifest["status"] == "complete"
        assert sum(healthy.calls.values()) == len([p for p in flaky.calls if flaky.answered[p] == 0])
    assert asked_before > 0 and len(trained) == 2 and trained[1] > trained[0]
    assert (tmp_path / "data" / "stage.json").exists()
