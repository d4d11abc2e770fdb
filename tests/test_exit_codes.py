"""Every exit code of the README's table, through `distill.cli.main`, on a scripted teacher and tiny
models: 0 done, 2 a user error, 3 incomplete (gen or eval: failed teacher or judge requests),
4 empty (gen accepted nothing), 130 interrupted; `distill run` stops and stamps nothing on 3 and 4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_cache_stage import interrupt_after
from test_pipeline import FakeTrainConfig

import schemas
from common.teacher.backends import Response
from distill.cli import main

from conftest import good_output, good_response, write_txt
from tiny_models import one_thread, record, tiny_model

pytestmark = pytest.mark.usefixtures("shared_tokenizer")
GEN = ["chunk_tokens=96", "chunk_overlap=0", "pairs_per_chunk=1", "phrasings=1", "teacher.repair_attempts=0"]
QUESTIONS = [
    ("How many times does the loop run?", "3"),
    ("Which keyword ends a loop early?", "break"),
    ("What does pass do?", "Nothing."),
]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    previous = one_thread()
    yield
    torch.set_num_threads(previous)


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    return exit_.value.code, [
        line for line in lines if not line.startswith("Loading weights")
    ]  # transformers' load bar


def documents(folder: Path, n: int) -> Path:
    """n one-chunk documents, each with its own sentences (so each asks its own request)."""
    for i in range(n):
        write_txt(
            folder / f"doc{i}.txt",
            f"Note {i}\n\nThe beacon number {i} was lit in the year 18{i:02d}. "
            f"Its keeper number {i} was called Orm{i}.\n",
        )
    return folder


def invalid_json(request) -> Response:
    return Response(key=request.key, text='{"items": [', prompt_tokens=10, completion_tokens=5)


def ungrounded(request) -> Response:
    output = json.loads(good_output(request))
    for item in output["items"]:
        item["evidence"] = "a quote found nowhere in the chunk"
    return Response(key=request.key, text=json.dumps(output), prompt_tokens=10, completion_tokens=5)


# ---------------------------------------------------------------- gen: 0, 2, 4, 130, and the low-yield warning


def test_gen_exits_0_when_done_and_2_on_a_user_error(tmp_path, teacher_factory, capsys):
    teacher_factory()
    code, err = run_cli(
        ["gen", str(documents(tmp_path / "docs", 2)), "--out", str(tmp_path / "data"), "-q", *GEN], capsys
    )
    assert (
        code == 0
        and err == []
        and json.loads((tmp_path / "data" / "manifest.json").read_text())["status"] == "complete"
    )
    code, err = run_cli(["gen", str(tmp_path / "nothing"), "--out", str(tmp_path / "bad"), "-q"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")


def test_gen_that_accepts_nothing_exits_4_with_its_reasons_counted(tmp_path, teacher_factory, capsys):
    """Every reply invalid or ungrounded: status empty, exit 4, one line counting the reject reasons."""
    docs = documents(tmp_path / "docs", 4)
    teacher_factory(
        lambda request: (
            invalid_json(request) if "beacon number 0" in request.messages[-1]["content"] else ungrounded(request)
        )
    )
    out = tmp_path / "data"
    code, err = run_cli(["gen", str(docs), "--out", str(out), "-q", *GEN], capsys)
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == 4 and manifest["status"] == "empty" and schemas.errors("manifest", manifest) == []
    assert err == [f"empty: 0 of 4 replies accepted: 3 ungrounded, 1 invalid_json; see {out}/rejects.jsonl"]
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 4


def test_gen_with_under_a_tenth_of_chunks_accepted_warns_with_the_top_reason(tmp_path, teacher_factory, capsys):
    docs = documents(tmp_path / "docs", 11)
    teacher_factory(
        lambda request: (
            good_response(request) if "beacon number 0 " in request.messages[-1]["content"] else invalid_json(request)
        )
    )
    out = tmp_path / "data"
    code, err = run_cli(["gen", str(docs), "--out", str(out), "-q", *GEN, "test_fraction=0"], capsys)
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == 0 and manifest["status"] == "complete" and manifest["counts"]["accepted"] == 1
    assert err == [
        "warning: only 1 of 11 chunks (9%) gave an accepted item; top reject reason: 10 invalid_json; see rejects.jsonl"
    ]
    assert manifest["warnings"] == [err[0].removeprefix("warning: ")] and schemas.errors("manifest", manifest) == []


def test_gen_interrupted_exits_130(tmp_path, teacher_factory, capsys):
    teacher_factory(interrupt_after(1))
    code, err = run_cli(
        ["gen", str(documents(tmp_path / "docs", 3)), "--out", str(tmp_path / "data"), "-q", *GEN], capsys
    )
    assert code == 130 and "rerun the same command" in err[-1]


# ---------------------------------------------------------------- eval: 0, 2, 3


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("exit-eval")
    data = root / "data"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps(record(n, q, a)) + "\n" for n, (q, a) in enumerate(QUESTIONS)))
    (data / "manifest.json").write_text(json.dumps({"split_by": "item"}))
    return {"data": data, "base": tiny_model(root / "base")}


def flaky_teacher(request) -> Response:
    """Answers every question but the first; the judge (schema'd requests) fails on every 'break' answer."""
    content = request.messages[-1]["content"]
    if request.schema is None:
        failed = "How many times" in content
        return Response(
            key=request.key, text="" if failed else "break", error="HTTP 500: teacher down" if failed else None
        )
    if "Answer to grade: break" in content:
        return Response(key=request.key, error="HTTP 503: judge overloaded")
    return Response(key=request.key, text='{"score": 3}', completion_tokens=5)


def healthy_teacher(request) -> Response:
    return Response(key=request.key, text="break" if request.schema is None else '{"score": 4}', completion_tokens=5)


def eval_args(eval_data: dict, out: Path) -> list[str]:
    teacher = ["--teacher", "local", "-m", "embedded", "--judge"]
    return [
        "eval",
        str(eval_data["data"]),
        "--base",
        str(eval_data["base"]),
        "--out",
        str(out),
        "-q",
        *teacher,
        "max_new_tokens=4",
        "bootstrap_samples=100",
    ]


def test_eval_with_failed_teacher_and_judge_requests_exits_3_and_a_rerun_retries_them(
    eval_data, tmp_path, teacher_factory, capsys
):
    out = tmp_path / "eval"
    teacher_factory(flaky_teacher)
    code, err = run_cli(eval_args(eval_data, out), capsys)
    assert code == 3, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "incomplete"
    # teacher: 1 of 3 answers failed; judge: the base's answers (none is 'break') are judged, the teacher is missing
    assert metrics["failures"] == {"requests": 1, "teacher": 1, "last_error": "HTTP 500: teacher down"}
    assert metrics["models"]["teacher"]["status"] == "missing"
    assert err == [
        (
            "incomplete: 1 teacher or judge request failed (last error: HTTP 500: teacher down); "
            "what was answered is saved: rerun the same command to retry them"
        )
    ]

    again = teacher_factory(healthy_teacher)
    code, err = run_cli(eval_args(eval_data, out), capsys)
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0 and err == [] and metrics["status"] == "complete" and "failures" not in metrics
    teacher_asks = [r for r in again.sent if r.schema is None]
    assert [r.messages[-1]["content"] for r in teacher_asks] == [
        QUESTIONS[0][0]
    ]  # only the failed request is sent again
    judged = [r for r in again.sent if r.schema is not None]
    assert len(judged) == len(QUESTIONS) and all("Answer to grade: break" in r.messages[-1]["content"] for r in judged)


def test_eval_judge_failures_alone_make_it_incomplete(eval_data, tmp_path, teacher_factory, capsys):
    teacher_factory(
        lambda r: healthy_teacher(r) if r.schema is None else Response(key=r.key, error="HTTP 503: judge overloaded")
    )
    code, err = run_cli(eval_args(eval_data, tmp_path / "eval"), capsys)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        code == 3
        and metrics["failures"]["judge"] == 2 * len(QUESTIONS)
        and metrics["models"]["teacher"]["status"] == "ok"
    )
    assert err[0].startswith(
        f"incomplete: {2 * len(QUESTIONS)} teacher or judge requests failed (last error: HTTP 503: judge overloaded)"
    )


def test_eval_user_error_exits_2(tmp_path, capsys):
    code, err = run_cli(["eval", str(tmp_path / "nowhere"), "--out", str(tmp_path / "eval"), "-q"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")


# ---------------------------------------------------------------- run: 3 and 4 stop the pipeline, no stamp


def test_run_stops_after_an_empty_gen(tmp_path, teacher_factory, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(
        "distill.pipeline.train_classes", lambda: (FakeTrainConfig, lambda cfg, show_progress=True: trained.append(cfg))
    )
    docs = documents(tmp_path / "docs", 2)
    path = tmp_path / "pipeline.yaml"
    gen = {"inputs": [str(docs)], "out": str(tmp_path / "data"), "chunk_tokens": 96, "chunk_overlap": 0}
    gen.update(pairs_per_chunk=1, phrasings=1, teacher={"repair_attempts": 0})
    path.write_text(yaml.safe_dump({"gen": gen, "train": {"out": str(tmp_path / "student")}}))
    teacher_factory(invalid_json)
    code, err = run_cli(["run", str(path), "-q"], capsys)
    assert code == 4, err
    assert not trained and not (tmp_path / "data" / "stage.json").exists()
    assert err == [f"empty: gen: 0 of 2 replies accepted: 2 invalid_json; see {tmp_path / 'data'}/rejects.jsonl"]


def test_run_does_not_stamp_an_incomplete_eval(eval_data, tmp_path, teacher_factory, capsys):
    path = tmp_path / "pipeline.yaml"
    section = {"data": str(eval_data["data"]), "base": str(eval_data["base"]), "out": str(tmp_path / "eval")}
    section.update(judge=True, teacher={"backend": "local", "model": "embedded"})
    section.update(max_new_tokens=4, bootstrap_samples=100)
    path.write_text(yaml.safe_dump({"eval": section}))
    teacher_factory(flaky_teacher)
    code, err = run_cli(["run", str(path), "-q"], capsys)
    assert code == 3 and not (tmp_path / "eval" / "stage.json").exists()
    assert len(err) == 1 and err[0].startswith("incomplete: eval: 1 teacher or judge request failed")
    again = teacher_factory(healthy_teacher)
    code, err = run_cli(["run", str(path), "-q"], capsys)
    assert (
        code == 0
        and (tmp_path / "eval" / "stage.json").exists()
        and len([r for r in again.sent if r.schema is None]) == 1
    )


# ---------------------------------------------------------------- train, grpo: 0, 2, 130; eval, run: 130; a bug


def fake_run(status: str, stage: str | None = None):
    def run(cfg, show_progress=True):
        metrics = {"steps": 1, "first_loss": 1.0, "final_loss": 0.5, "tokens_per_s": 1, "seconds_per_step": 1}
        metrics["reward"] = {"first": 0.1, "last": 0.2}
        return {"status": status, **({"stage": stage} if stage else {}), "backend": "hf", "metrics": metrics}

    return run


COMMANDS = {"train": ["train"], "grpo": ["grpo", "--from", "embedded"]}


@pytest.mark.parametrize("status, code", [("done", 0), ("interrupted", 130)])
def test_train_and_grpo_exit_codes(tmp_path, capsys, monkeypatch, status, code):
    monkeypatch.setattr("train.sft.run_sft", fake_run(status))
    monkeypatch.setattr("train.grpo.run_grpo", fake_run(status, "grpo"))
    for name, command in COMMANDS.items():
        got, err = run_cli([*command, str(tmp_path), "--out", str(tmp_path / "out"), "-q"], capsys)
        assert got == code and (err == [] if code == 0 else "rerun with --resume" in err[-1]), (name, err)


def test_grpo_with_failed_judge_requests_exits_3(tmp_path, capsys, monkeypatch):
    def incomplete(cfg, show_progress=True):
        record = fake_run("incomplete", "grpo")(cfg)
        return record | {"judge_failures": {"requests": 2, "last_error": "HTTP 503"}}

    monkeypatch.setattr("train.grpo.run_grpo", incomplete)
    code, err = run_cli([*COMMANDS["grpo"], str(tmp_path), "--out", str(tmp_path / "out"), "-q"], capsys)
    assert code == 3 and len(err) == 1 and "2 judge requests failed (last error: HTTP 503)" in err[0], err


def test_train_and_grpo_user_errors_exit_2(tmp_path, capsys):
    for name, command in COMMANDS.items():
        code, err = run_cli([*command, str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "-q"], capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (name, err)


def test_eval_and_run_interrupted_exit_130(eval_data, tmp_path, teacher_factory, capsys):
    def interrupt(request):
        raise KeyboardInterrupt

    teacher_factory(interrupt)
    code, err = run_cli(eval_args(eval_data, tmp_path / "eval"), capsys)
    assert code == 130 and err[-1] == "interrupted"
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        yaml.safe_dump({"gen": {"inputs": [str(documents(tmp_path / "docs", 2))], "out": str(tmp_path / "data")}})
    )
    code, err = run_cli(["run", str(path), "-q"], capsys)
    assert code == 130 and err[-1] == "interrupted" and not (tmp_path / "data" / "stage.json").exists()


def test_a_bug_is_not_exit_0(tmp_path, monkeypatch):
    """An unexpected exception is not mapped to a code: it propagates (Python prints the traceback, exit 1)."""

    def broken(cfg, dry_run=False, show_progress=True):
        raise RuntimeError("a bug")

    monkeypatch.setattr("generate.stage.run_gen", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["gen", str(documents(tmp_path / "docs", 1)), "--out", str(tmp_path / "data"), "-q"])
