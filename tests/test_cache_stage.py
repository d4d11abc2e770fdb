"""The gen stage with a scripted teacher: cache, resume, repair, rejects, outputs, exports, Ctrl-C."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import schemas
from common.teacher.ask import prompt_key
from common.teacher.backends import Response
from common.teacher.cache import Cache
from distill.cli import main
from generate.config import GenConfig
from generate.ingest import read
from generate.stage import run_gen, setup

from conftest import FACTS, good_output, good_response

pytestmark = pytest.mark.usefixtures("shared_tokenizer")

PAIRS = 2
DOCS = 5  # the corpus fixture: one small document per format, one chunk each


def make_cfg(tmp_path: Path, corpus: Path, **changes) -> GenConfig:
    base = dict(
        inputs=[str(corpus)],
        out=str(tmp_path / "out"),
        chunk_tokens=96,
        chunk_overlap=0,
        pairs_per_chunk=PAIRS,
        phrasings=1,  # these tests are about the cache and the outputs; test_split.py covers phrasings
        test_fraction=0.25,
    )
    return GenConfig.model_validate({**base, **changes})


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def records(out: Path) -> list[dict]:
    return rows(out / "train.jsonl") + rows(out / "test.jsonl")


DOC_OF_FORMAT = {"txt": "lighthouse.txt", "md": "river.md", "html": "bridge.html", "pdf": "observatory.pdf", "docx": "guild.docx"}


def doc_of(request) -> str:
    """The corpus document a request was written from (its prompt quotes that document's facts)."""
    prompt = request.messages[1]["content"]
    return next(DOC_OF_FORMAT[fmt] for fmt, facts in FACTS.items() if facts[0] in prompt)


def cache_rows(out: Path) -> int:
    cache = Cache(out / "cache.sqlite")
    try:
        return len(cache)
    finally:
        cache.close()


def test_outputs_are_valid_and_a_rerun_sends_nothing(tmp_path, corpus, teacher_factory):
    cfg = make_cfg(tmp_path, corpus)
    out = Path(cfg.out)
    teacher = teacher_factory()
    manifest = run_gen(cfg, show_progress=False)

    assert len(teacher.sent) == DOCS and teacher.closed
    counts = manifest["counts"]
    assert counts["docs"] == counts["chunks"] == counts["requests"] == counts["sent"] == counts["answered"] == DOCS
    assert counts["cache_hits"] == 0 and counts["files_skipped"] == 0
    assert counts["accepted"] == DOCS * PAIRS and counts["train"] + counts["test"] == DOCS * PAIRS
    assert manifest["status"] == "complete" and manifest["split_by"] == "item" and manifest["rejected"] == {}
    assert schemas.errors("manifest", manifest) == []
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["tokens"] == {"prompt": 50 * DOCS, "completion": 20 * DOCS}
    assert cache_rows(out) == DOCS
    assert (out / "rejects.jsonl").read_text() == ""

    found = records(out)
    assert len(found) == DOCS * PAIRS and len({r["id"] for r in found}) == len(found)
    assert {r["split"] for r in rows(out / "train.jsonl")} == {"train"} and {r["split"] for r in rows(out / "test.jsonl")} == {"test"}
    for record in found:
        assert schemas.errors("record", record) == []
        source = record["source"]
        assert read(corpus / source["doc"])[source["start"] : source["end"]] == record["context"]  # named under it
        assert record["evidence"] in record["context"]
        assert record["messages"] == [
            {"role": "user", "content": record["question"]},
            {"role": "assistant", "content": f"<think>\n{record['reasoning']}\n</think>\n\n{record['answer']}"},
        ]
        assert record["teacher"] == {"backend": "local", "model": "embedded"} and record["task"] == "qa"

    train_bytes, test_bytes = (out / "train.jsonl").read_bytes(), (out / "test.jsonl").read_bytes()
    again = teacher_factory()
    second = run_gen(cfg, show_progress=False)
    assert again.sent == []
    assert second["counts"]["cache_hits"] == DOCS and second["counts"]["sent"] == 0
    assert (out / "train.jsonl").read_bytes() == train_bytes and (out / "test.jsonl").read_bytes() == test_bytes


def test_records_load_with_datasets(tmp_path, corpus, teacher_factory):
    from datasets import load_dataset

    cfg = make_cfg(tmp_path, corpus)
    teacher_factory()
    manifest = run_gen(cfg, show_progress=False)
    files = {split: str(Path(cfg.out) / f"{split}.jsonl") for split in ("train", "test")}
    data = load_dataset("json", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert data["train"].num_rows == manifest["counts"]["train"] and data["test"].num_rows == manifest["counts"]["test"]
    assert data["train"].num_rows > 0 and data["test"].num_rows > 0
    row = data["train"][0]
    assert row["messages"][1]["role"] == "assistant" and isinstance(row["source"]["start"], int)


def test_the_cache_key_covers_chunk_prompt_schema_model_and_parameters(tmp_path, corpus):
    def keys(**changes):
        cfg = make_cfg(tmp_path, corpus, **changes)
        return [prompt_key(cfg.teacher, p) for p in setup(cfg).prompts]

    base = keys()
    assert len(set(base)) == DOCS and keys() == base
    for changes in (
        {"teacher": {"temperature": 0.3}},
        {"teacher": {"max_new_tokens": 100, "structured": False}},
        {"teacher": {"model": "org/other"}},
        {"teacher": {"seed": 1}},
        {"pairs_per_chunk": 3},
        {"phrasings": 3},
        {"task": "reasoning"},
    ):
        assert set(keys(**changes)).isdisjoint(base), changes
    assert keys(test_fraction=0.5, split_by="document", teacher={"batch_size": 1}) == base  # not part of an answer
    # the local teacher's budget is the bound of its bounded schema, not max_new_tokens: no reply is cut in a string
    assert keys(teacher={"max_new_tokens": 100}) == base


def test_a_schema_failure_is_repaired_once(tmp_path, corpus, teacher_factory):
    def script(request):
        if doc_of(request) == "river.md" and len(request.messages) == 2:
            return Response(request.key, text='{"items": [{"question": "What?"}]}')
        return good_response(request)

    cfg = make_cfg(tmp_path, corpus)
    teacher = teacher_factory(script)
    manifest = run_gen(cfg, show_progress=False)
    assert manifest["counts"]["repairs"] == 1 and manifest["counts"]["sent"] == DOCS + 1 and manifest["rejected"] == {}
    (original,) = [r for r in teacher.sent[:DOCS] if doc_of(r) == "river.md"]
    repair = teacher.sent[-1]
    assert doc_of(repair) == "river.md" and repair.messages[:2] == original.messages and repair.key != original.key
    assert repair.messages[2] == {"role": "assistant", "content": '{"items": [{"question": "What?"}]}'}
    assert repair.messages[3]["role"] == "user" and "is not valid" in repair.messages[3]["content"]
    assert "items/0" in repair.messages[3]["content"]
    assert sum(Path(r["source"]["doc"]).name == "river.md" for r in records(Path(cfg.out))) == PAIRS

    again = teacher_factory(script)
    second = run_gen(cfg, show_progress=False)
    assert again.sent == [] and second["counts"]["cache_hits"] == DOCS  # the repair answer is cached too
    assert second["counts"]["train"] + second["counts"]["test"] == DOCS * PAIRS


@pytest.mark.parametrize("attempts, sent", [(0, DOCS), (2, DOCS + 2)])
def test_unrepairable_output_is_rejected_after_the_allowed_attempts(tmp_path, corpus, teacher_factory, attempts, sent):
    def script(request):
        if doc_of(request) == "river.md":
            return Response(request.key, text='{"items": [')
        return good_response(request)

    cfg = make_cfg(tmp_path, corpus, teacher={"repair_attempts": attempts})
    teacher_factory(script)
    manifest = run_gen(cfg, show_progress=False)
    assert manifest["counts"]["sent"] == sent and manifest["counts"]["repairs"] == attempts
    assert manifest["rejected"] == {"invalid_json": 1}
    (reject,) = rows(Path(cfg.out) / "rejects.jsonl")
    assert reject["reason"] == "invalid_json" and reject["output"] == '{"items": [' and reject["chunk"].endswith("river.md#0")


def scripted_faults(request):
    """One failure of every kind, by document."""
    name = doc_of(request)
    if name == "lighthouse.txt":
        return Response(request.key, text=json.dumps({"items": [{"question": "Which year?"}] * PAIRS}))
    if name == "river.md":
        return Response(request.key, text=good_output(request)[:40], finish_reason="length")
    if name == "bridge.html":
        return Response(request.key, error="APIConnectionError after 6 retries")
    output = json.loads(good_output(request, name))
    if name == "observatory.pdf":
        output["items"][0]["evidence"] = "The observatory stands on the moon."
    if name == "guild.docx":
        first, rest = output["items"][0]["question"].split(" ", 1)
        output["items"][1]["question"] = f"{first}  {rest.upper()}  "  # same question up to case and spacing
    return Response(request.key, text=json.dumps(output))


def test_rejects_carry_their_reasons_and_failed_requests_are_retried(tmp_path, corpus, teacher_factory):
    cfg = make_cfg(tmp_path, corpus, teacher={"repair_attempts": 0}, answers="free")  # the duplicate quotes its answer
    out = Path(cfg.out)
    teacher_factory(scripted_faults)
    manifest = run_gen(cfg, show_progress=False)
    assert manifest["rejected"] == {"duplicate": 1, "failed_request": 1, "schema": 1, "truncated": 1, "ungrounded": 1}
    assert manifest["counts"]["deduplicated"] == 1 and manifest["counts"]["accepted"] == 2
    assert manifest["status"] == "incomplete" and manifest["failures"] == {"requests": 1, "last_error": "APIConnectionError after 6 retries"}
    assert schemas.errors("manifest", manifest) == []
    by_reason = {r["reason"]: r for r in rows(out / "rejects.jsonl")}
    assert set(by_reason) == set(manifest["rejected"])
    assert by_reason["failed_request"]["detail"] == "APIConnectionError after 6 retries"
    assert by_reason["ungrounded"]["item"]["evidence"] == "The observatory stands on the moon."
    assert by_reason["schema"]["detail"].startswith("items/") and by_reason["truncated"]["chunk"].endswith("river.md#0")
    assert all(r["detail"] for r in by_reason.values())
    assert sorted(Path(r["source"]["doc"]).name for r in records(out)) == ["guild.docx", "observatory.pdf"]
    assert cache_rows(out) == DOCS - 1  # the failed request is not cached...

    retry = teacher_factory(good_response)
    second = run_gen(cfg, show_progress=False)
    assert [doc_of(r) for r in retry.sent] == ["bridge.html"]  # ...so only it is sent again
    assert second["counts"]["cache_hits"] == DOCS - 1
    assert "failed_request" not in second["rejected"] and second["counts"]["accepted"] == 2 + PAIRS
    assert second["status"] == "complete" and "failures" not in second


def test_exports_write_every_format(tmp_path, corpus, teacher_factory):
    cfg = make_cfg(tmp_path, corpus, export=["alpaca", "sharegpt", "openai"])
    out = Path(cfg.out)
    teacher_factory()
    run_gen(cfg, show_progress=False)
    for split in ("train", "test"):
        source = rows(out / f"{split}.jsonl")
        alpaca, sharegpt, openai = (rows(out / f"{split}.{fmt}.jsonl") for fmt in ("alpaca", "sharegpt", "openai"))
        assert len(source) == len(alpaca) == len(sharegpt) == len(openai) > 0
        for record, a, s, o in zip(source, alpaca, sharegpt, openai):
            assistant = record["messages"][-1]["content"]
            assert a == {"instruction": record["question"], "input": "", "output": assistant}
            assert s == {"conversations": [{"from": "human", "value": record["question"]}, {"from": "gpt", "value": assistant}]}
            assert o == {"messages": record["messages"]}


def test_export_command_writes_beside_the_data(tmp_path, corpus, teacher_factory, capsys):
    cfg = make_cfg(tmp_path, corpus)
    teacher_factory()
    run_gen(cfg, show_progress=False)
    with pytest.raises(SystemExit) as exit_:
        main(["export", cfg.out, "-f", "sharegpt"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(Path(cfg.out) / "train.sharegpt.jsonl"), str(Path(cfg.out) / "test.sharegpt.jsonl")]


def interrupt_after(count: int):
    answered = []

    def script(request):
        if len(answered) == count:
            raise KeyboardInterrupt
        answered.append(request)
        return good_response(request)

    return script


def test_ctrl_c_keeps_what_is_done_and_a_rerun_finishes(tmp_path, corpus, teacher_factory):
    cfg = make_cfg(tmp_path, corpus)
    out = Path(cfg.out)
    first = teacher_factory(interrupt_after(2))
    manifest = run_gen(cfg, show_progress=False)
    assert manifest["status"] == "interrupted" and first.closed
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    assert schemas.errors("manifest", manifest) == []
    assert manifest["counts"]["sent"] == manifest["counts"]["answered"] == 2 and cache_rows(out) == 2
    kept = records(out)
    assert len(kept) == 2 * PAIRS
    done = {r.key for r in first.sent[:2]}

    rest = teacher_factory()
    final = run_gen(cfg, show_progress=False)
    assert final["status"] == "complete" and len(rest.sent) == DOCS - 2
    assert done.isdisjoint(r.key for r in rest.sent)  # nothing answered is sent twice
    assert final["counts"]["cache_hits"] == 2 and cache_rows(out) == DOCS
    assert {r["id"] for r in kept} <= {r["id"] for r in records(out)} and len(records(out)) == DOCS * PAIRS


def test_ctrl_c_through_the_cli_exits_130(tmp_path, corpus, teacher_factory, capsys):
    out = tmp_path / "out"
    teacher_factory(interrupt_after(1))
    with pytest.raises(SystemExit) as exit_:
        main(["gen", str(corpus), "--out", str(out), "--quiet", "chunk_tokens=96", "chunk_overlap=0"])
    assert exit_.value.code == 130
    assert "rerun the same command" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"


def test_document_split_through_the_stage(tmp_path, corpus, teacher_factory):
    cfg = make_cfg(tmp_path, corpus, split_by="document", test_fraction=0.4)
    teacher_factory()
    manifest = run_gen(cfg, show_progress=False)
    train_docs = {r["source"]["doc"] for r in rows(Path(cfg.out) / "train.jsonl")}
    test_docs = {r["source"]["doc"] for r in rows(Path(cfg.out) / "test.jsonl")}
    assert manifest["split_by"] == "document" and len(test_docs) == 2 and len(train_docs) == 3
    assert train_docs.isdisjoint(test_docs)


def test_the_records_and_the_split_stay_wherever_the_corpus_lies(tmp_path, corpus, teacher_factory, monkeypatch):
    """A record's document, id and fact (and so which phrasings are held out) come from the documents' names
    under the corpus root, not from where the corpus lies or how its path was given."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(corpus, elsewhere / "deep" / "pages")
    monkeypatch.chdir(elsewhere)
    written = {}
    for name, inputs in (("absolute", [str(corpus)]), ("relative", ["deep/pages/"]), ("glob", ["deep/pages/*"])):
        teacher_factory()
        run_gen(make_cfg(tmp_path, corpus, inputs=inputs, out=str(tmp_path / name), phrasings=2), show_progress=False)
        written[name] = [(tmp_path / name / f).read_text() for f in ("train.jsonl", "test.jsonl")]
    assert written["absolute"] == written["relative"] == written["glob"]
    train, test = ([json.loads(line) for line in text.splitlines()] for text in written["absolute"])
    assert train and test and {r["source"]["doc"] for r in train + test} == set(DOC_OF_FORMAT.values())


def test_dry_run_calls_no_teacher_and_writes_nothing(tmp_path, corpus, teacher_factory, tokenizer):
    cfg = make_cfg(tmp_path, corpus)
    teacher = teacher_factory()
    manifest = run_gen(cfg, dry_run=True, show_progress=False)
    assert teacher.sent == [] and not Path(cfg.out).exists()
    assert manifest["status"] == "dry-run" and manifest["counts"]["requests"] == manifest["counts"]["chunks"] == DOCS
    assert schemas.errors("manifest", {**manifest, **{k: {} for k in ("rejected", "schemas", "versions")}, "wall_time_s": 0}) == []
    plan = setup(cfg, create_out=False)
    chunk_tokens = sum(len(tokenizer(c.text)["input_ids"]) for c in plan.chunks)
    assert manifest["tokens"]["prompt_estimate"] > chunk_tokens + 100 * DOCS  # chunks + the task prompt
    assert manifest["tokens"]["completion_estimate"] == DOCS * min(cfg.teacher.max_new_tokens, 120 * PAIRS)


def test_skipped_files_reach_the_manifest(tmp_path, corpus, teacher_factory):
    (corpus / "blob.txt").write_bytes(b"\x00" * 100)
    cfg = make_cfg(tmp_path, corpus)
    teacher_factory()
    manifest = run_gen(cfg, show_progress=False)
    assert manifest["counts"]["files"] == DOCS + 1 and manifest["counts"]["files_skipped"] == 1
    assert manifest["skipped_files"] == [{"path": str(corpus / "blob.txt"), "reason": "binary content (NUL bytes)"}]


def test_cache_stores_answers_only(tmp_path):
    cache = Cache(tmp_path / "cache.sqlite")
    cache.put(Response("a", text="{}", reasoning="r", finish_reason="length", prompt_tokens=3, completion_tokens=4))
    cache.put(Response("b", error="timeout"))
    cache.close()
    cache = Cache(tmp_path / "cache.sqlite")  # committed at once: a new connection sees it
    assert len(cache) == 1
    assert cache.get_many(["a", "b", "c"]) == {"a": Response("a", "{}", "r", "length", 3, 4)}
    cache.close()


def gen_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["gen", *argv])
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def test_cli_shows_progress_and_a_summary_table(tmp_path, corpus, teacher_factory, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # rich wraps long paths at 80 columns otherwise
    (corpus / "blob.txt").write_bytes(b"\x00" * 100)
    teacher_factory(scripted_faults)
    out = tmp_path / "out"
    code, stdout, stderr = gen_cli([str(corpus), "--out", str(out), "chunk_tokens=96", "chunk_overlap=0", "teacher.repair_attempts=0", "phrasings=1", "-n", str(PAIRS)], capsys)
    assert code == 3, stderr  # one request failed: incomplete
    assert "chunks" in stderr and f"{DOCS}/{DOCS}" in stderr  # the live bar, on stderr
    assert stderr.strip().splitlines()[-1].startswith("incomplete: 1 teacher request failed (last error: APIConnectionError after 6 retries)")
    assert "distill gen: incomplete" in stdout
    for row in ("requests", "cache_hits", "rejected: ungrounded", "rejected: failed_request", "tokens: completion", "skipped"):
        assert row in stdout, row
    assert "binary content" in stdout and f"wrote {out}/train.jsonl" in stdout


def test_cli_json_prints_the_manifest_and_quiet_prints_nothing(tmp_path, corpus, teacher_factory, capsys):
    teacher_factory()
    out = tmp_path / "out"
    args = [str(corpus), "--out", str(out), "-n", "1", "--export", "alpaca", "--export", "openai", "chunk_tokens=96", "chunk_overlap=0"]
    code, stdout, stderr = gen_cli([*args, "--json"], capsys)
    assert code == 0 and stderr == ""
    manifest = json.loads(stdout)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["pairs_per_chunk"] == 1 and manifest["config"]["export"] == ["alpaca", "openai"]
    assert (out / "train.alpaca.jsonl").exists() and (out / "test.openai.jsonl").exists()
    code, stdout, stderr = gen_cli([*args, "--quiet"], capsys)
    assert (code, stdout, stderr) == (0, "", "")


def test_cli_dry_run_writes_nothing(tmp_path, corpus, teacher_factory, capsys):
    teacher = teacher_factory()
    out = tmp_path / "out"
    code, stdout, _ = gen_cli([str(corpus), "--out", str(out), "--dry-run", "--json"], capsys)
    manifest = json.loads(stdout)
    assert code == 0 and teacher.sent == [] and not out.exists()
    assert manifest["status"] == "dry-run" and manifest["counts"]["requests"] == DOCS and manifest["tokens"]["prompt_estimate"] > 0
    code, stdout, _ = gen_cli([str(corpus), "--out", str(out), "--dry-run"], capsys)
    assert code == 0 and "distill gen: dry-run" in stdout and "prompt_estimate" in stdout and "wrote" not in stdout


def test_rewrites_become_text_through_the_cache(tmp_path, corpus, teacher_factory):
    """--rewrites: every chunk and its rewrites in text.jsonl (valid rows, in corpus order); a
    rerun asks nothing; the document split keeps held-out documents' text out."""
    cfg = make_cfg(tmp_path, corpus, rewrites=2, phrasings=3)
    teacher = teacher_factory()
    manifest = run_gen(cfg, show_progress=False)
    text = rows(Path(cfg.out) / "text.jsonl")
    assert manifest["counts"]["rewrites"] == 2 * DOCS and manifest["counts"]["text"] == len(text) == 3 * DOCS
    assert [r["form"] for r in text[:3]] == ["original", "paraphrase", "notes"]
    assert all(schemas.errors("text", r) == [] for r in text)
    assert sum(r.schema is None for r in teacher.sent) == 2 * DOCS
    again = teacher_factory()
    assert run_gen(cfg, show_progress=False)["counts"]["text"] == len(text) and again.sent == []
    assert rows(Path(cfg.out) / "text.jsonl") == text

    by_document = make_cfg(tmp_path, corpus, out=str(tmp_path / "docsplit"), rewrites=1, split_by="document", test_fraction=0.4)
    teacher_factory()
    run_gen(by_document, show_progress=False)
    held_out = {r["source"]["doc"] for r in rows(tmp_path / "docsplit" / "test.jsonl")}
    assert held_out and not held_out & {r["source"]["doc"] for r in rows(tmp_path / "docsplit" / "text.jsonl")}
