"""`distill run`: gen + eval from one file end to end, a rerun skips every stage, bad files fail in one line.

The gen stage runs for real, but its teacher's answers are put in its request cache first
(the keys come from the stage's own setup), so no teacher model is loaded.
"""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict

from common.errors import UserError
from common.teacher.ask import prompt_key
from common.teacher.backends import Response
from common.teacher.cache import Cache
from distill.cli import main
from distill.pipeline import load_sections, resolve
from generate.config import GenConfig
from generate.stage import setup
from generate.validate import normalize_space

from tiny_models import one_thread, tiny_adapter, tiny_model

DOCS = {
    "loops.md": "# Loops\n\nThe while statement repeats a block as long as its condition is true. " * 3,
    "errors.md": "# Errors\n\nThe try statement specifies exception handlers and cleanup code. " * 3,
    "imports.md": "# Imports\n\nThe import statement finds a module, loads it and binds a name. " * 3,
    "lambda.md": "# Lambda\n\nLambda expressions create anonymous functions of one expression. " * 3,
}
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def fill_cache(gen: GenConfig) -> int:
    """Answer every request of the gen stage in its cache, as the teacher would."""
    plan = setup(gen)
    cache = Cache(plan.out / "cache.sqlite")
    for n, prompt in enumerate(plan.prompts):
        quote = normalize_space(prompt.tag.text)[:60]
        items = [
            {"question": f"What is question {WORDS[n]} {WORDS[-1 - i]} number {n}{i}?", "evidence": quote, "reasoning": f"It says {n}.", "answer": f"{n * 10 + i}"}
            for i in range(gen.pairs_per_chunk)
        ]
        cache.put(Response(prompt_key(gen.teacher, prompt), json.dumps({"items": items})))
    cache.close()
    return len(plan.prompts)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    previous = one_thread()
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def pipeline(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    student = tiny_model(tmp_path / "student")
    config = {
        "gen": {"inputs": [str(docs)], "out": str(tmp_path / "data"), "test_fraction": 0.5, "pairs_per_chunk": 2, "phrasings": 1, "teacher": {"model": "cached-teacher"}},
        "eval": {"out": str(tmp_path / "eval"), "base": str(student), "teacher": None, "max_new_tokens": 8, "bootstrap_samples": 100},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    assert fill_cache(GenConfig(**config["gen"])) == len(DOCS)
    return path, tmp_path


def test_run_gen_then_eval_then_rerun_skips(pipeline, capsys):
    path, root = pipeline
    with pytest.raises(SystemExit) as first:
        main(["run", str(path)])
    assert first.value.code == 0
    out = capsys.readouterr()
    assert "gen: running" in out.err and "eval: running" in out.err
    assert "report:" in out.out and "report.html" in out.out
    timed = r"took (\d+ min )?\d+ s: gen (\d+ min )?\d+ s, eval (\d+ min )?\d+ s"  # the timings make demo ends with
    assert re.search(timed, out.err), out.err
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert list(metrics["models"]) == ["base"]  # no train section: the base student alone
    assert metrics["questions"] == json.loads((root / "data" / "manifest.json").read_text())["counts"]["test"] > 0
    stamps = {stage: (root / folder / "stage.json").stat().st_mtime_ns for stage, folder in (("gen", "data"), ("eval", "eval"))}

    with pytest.raises(SystemExit) as second:
        main(["run", str(path)])
    assert second.value.code == 0
    out = capsys.readouterr()
    assert "gen: up to date, skipped" in out.err and "eval: up to date, skipped" in out.err
    assert "running" not in out.err and "report.html" in out.out and "gen skipped, eval skipped" in out.err
    for stage, folder in (("gen", "data"), ("eval", "eval")):
        assert (root / folder / "stage.json").stat().st_mtime_ns == stamps[stage]

    with pytest.raises(SystemExit):  # a changed eval key reruns eval only
        main(["run", str(path), "eval.max_new_tokens=4"])
    out = capsys.readouterr()
    assert "gen: up to date, skipped" in out.err and "eval: running" in out.err


def test_pipeline_wiring(tmp_path):
    sections = {"gen": {"inputs": ["docs"], "out": "d", "teacher": {"model": "t"}}, "eval": {"students": ["s"]}}
    configs = resolve(sections)
    assert configs["eval"].data == "d" and configs["eval"].teacher.model == "t"
    sections["eval"]["data"] = "elsewhere"
    with pytest.raises(UserError, match="gen.out"):
        resolve(sections)


def test_grpo_is_wired_after_sft_and_both_are_evaluated():
    sections = {"gen": {"inputs": ["docs"], "out": "d"}, "train": {"out": "sft"}, "grpo": {"out": "rl", "num_generations": 4}, "eval": {}}
    configs = resolve(sections)
    assert configs["grpo"].data == "d" and configs["grpo"].from_model == "sft"
    assert configs["eval"].students == ["sft", "rl"]
    with pytest.raises(UserError, match="num_generations"):
        resolve({**sections, "grpo": {"num_generations": 1}})
    with pytest.raises(UserError, match="grpo.from_model: GRPO refines an SFT student: add a train section"):
        resolve({"gen": sections["gen"], "grpo": {"out": "rl"}})  # RL on the untrained base only when said
    assert resolve({"gen": sections["gen"], "grpo": {"out": "rl", "from_model": "embedded"}})["grpo"].from_model == "embedded"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"gen": {}, "evaluate": {}}, "unknown stage 'evaluate'"),
        ({"gen": {"inptus": ["x"]}}, "unknown key 'gen.inptus'"),
        ({"eval": {"teacher": {"modle": "x"}}}, "unknown key 'eval.teacher.modle'"),
        ({}, "names no stage"),
    ],
)
def test_bad_pipeline_file(tmp_path, capsys, content, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(UserError, match=message):
        resolve(load_sections(path))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path)])
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


class FakeTrainConfig(BaseModel):
    """The train stage's interface as the pipeline sees it (train/ ships separately)."""

    model_config = ConfigDict(extra="forbid")
    data: str = "data"
    split: str = "train"
    out: str = "student"
    model: str = "embedded"
    backend: str = "hf"
    max_steps: int | None = None
    resume: bool = False
    overwrite: bool = False


def test_train_is_wired_between_gen_and_eval(pipeline, monkeypatch, capsys):
    """gen.out -> train.data, train.out -> eval's student, train.model -> eval's base; a rerun skips all three."""
    path, root = pipeline
    calls = []

    def run_sft(cfg, show_progress=True):
        calls.append(cfg)
        tiny_adapter(Path(cfg.out), Path(cfg.model))
        record = {"status": "done", "base_model": {"name": cfg.model, "path": cfg.model}, "config": cfg.model_dump()}
        (Path(cfg.out) / "run.json").write_text(json.dumps(record))
        return record

    monkeypatch.setattr("distill.pipeline.train_classes", lambda: (FakeTrainConfig, run_sft))
    config = yaml.safe_load(path.read_text())
    config["train"] = {"out": str(root / "student-sft"), "model": config["eval"].pop("base"), "max_steps": 2}
    path.write_text(yaml.safe_dump(config))
    for _ in range(2):
        with pytest.raises(SystemExit) as done:
            main(["run", str(path)])
        assert done.value.code == 0
    assert len(calls) == 1 and calls[0].data == str(root / "data") and calls[0].resume and not calls[0].overwrite
    assert "train: up to date, skipped" in capsys.readouterr().err
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert list(metrics["models"]) == ["base", "student-sft"]
    assert metrics["models"]["base"]["name"] == config["train"]["model"]

    with pytest.raises(SystemExit):  # a changed train key: the finished run is replaced, eval reruns
        main(["run", str(path), "train.max_steps=3"])
    assert len(calls) == 2 and calls[1].overwrite and calls[1].max_steps == 3
    err = capsys.readouterr().err
    assert "gen: up to date, skipped" in err and "train: running" in err and "eval: running" in err


def test_an_incomplete_grpo_stage_runs_again_keeping_its_judge_cache(tmp_path):
    """A stale finished stage is replaced (overwrite); an incomplete GRPO run is not: a rerun asks only what failed."""
    from distill.pipeline import train_run_flags
    from train.grpo_config import GRPOConfig

    cfg = GRPOConfig(out=str(tmp_path), from_model="embedded")
    (tmp_path / "run.json").write_text('{"status": "incomplete"}')
    assert train_run_flags(cfg).overwrite is False and train_run_flags(cfg).resume is True
    (tmp_path / "run.json").write_text('{"status": "done"}')
    assert train_run_flags(cfg).overwrite is True


def test_gpus_in_a_pipeline_is_a_one_line_error_before_any_stage(tmp_path, capsys, monkeypatch):
    """gen and eval would run on every rank: `distill run` refuses train.gpus > 1 and names `distill train --gpus`."""
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "p.yaml"
    sections = {"gen": {"inputs": [str(tmp_path)], "out": str(tmp_path / "d")}, "train": {"gpus": 2}}
    path.write_text(yaml.safe_dump(sections))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "distill train ... --gpus 2" in err[0]
    assert not (tmp_path / "d").exists()
