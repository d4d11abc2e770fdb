"""Each config key is defined once: CLI flags take their type, choices and help from the config
fields; every subcommand has --help-config and examples; a pipeline file is checked whole, with
every problem reported at once, before any stage runs."""

from __future__ import annotations

import click
import pytest
import yaml
from click.testing import CliRunner

from common.errors import UserError
from distill import cmd_eval, cmd_gen, cmd_grpo, cmd_train
from distill.cli import cli
from distill.options import field_of
from distill.pipeline import load_sections, resolve, run_pipeline

COMMANDS = {"gen": cmd_gen, "train": cmd_train, "grpo": cmd_grpo, "eval": cmd_eval}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_flags_take_help_type_and_choices_from_the_config(name):
    module = COMMANDS[name]
    model = {"gen": "GenConfig", "train": "TrainConfig", "grpo": "GRPOConfig", "eval": "EvalConfig"}[name]
    model = getattr(module, model)
    params = {p.name: p for p in module.__dict__[name if name != "eval" else "eval_"].params}
    for flag in module.FLAGS:
        param, field = params[flag.dest], field_of(model, flag.key)
        assert param.help.startswith(field.description), flag.key
        if isinstance(param.type, click.Choice):
            assert set(param.type.choices) == {str(v) for v in field.annotation.__args__ if v is not None} or param.multiple


@pytest.mark.parametrize("name", ["gen", "train", "eval", "run"])
def test_every_subcommand_has_help_config_and_examples(name):
    runner = CliRunner()
    helped = runner.invoke(cli, [name, "--help"])
    assert helped.exit_code == 0 and "Examples:" in helped.output and "--help-config" in helped.output
    keys = runner.invoke(cli, [name, "--help-config"])
    assert keys.exit_code == 0
    assert "teacher.model (default: 'embedded')" in keys.output or name == "train"
    assert "out (default:" in keys.output


def test_gen_flags_reach_the_config(tmp_path, monkeypatch):
    seen = {}

    def fake_run_gen(cfg, dry_run, show_progress):
        seen["cfg"] = cfg
        return {"status": "dry-run", "counts": {}, "tokens": {}, "skipped_files": []}

    monkeypatch.setattr("generate.stage.run_gen", fake_run_gen)
    docs = tmp_path / "docs"
    docs.mkdir()
    result = CliRunner().invoke(cli, ["gen", str(docs), "-o", "out", "-n", "3", "--teacher", "openai", "-m", "m", "--base-url", "http://a/v1", "--base-url", "http://b/v1", "--dry-run", "-q", "seed=4"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.inputs == [str(docs)] and cfg.out == "out" and cfg.pairs_per_chunk == 3 and cfg.seed == 4
    assert cfg.teacher.backend == "openai" and cfg.teacher.model == "m" and cfg.teacher.base_url == ["http://a/v1", "http://b/v1"]


def test_a_bad_pipeline_reports_every_problem_before_running(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr("distill.pipeline.run_stage", lambda stage, cfg, show: ran.append(stage))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "gen": {"inputs": ["docs"], "chunk_tokens": 64, "chunk_overlap": 40},
        "train": {"lr": -1},
        "eval": {"judge": True, "teacher": None},
    }))  # fmt: skip
    with pytest.raises(UserError) as caught:
        run_pipeline(path)
    message = str(caught.value)
    assert message.startswith("3 problems in the pipeline file, nothing was run")
    assert "gen: chunk_overlap (40) must be at most half" in message
    assert "'train.lr' is invalid" in message
    assert "eval: judge and pairwise need a judge model" in message
    assert ran == [] and "\n" not in message
    with pytest.raises(UserError, match="unknown key 'train.lrr'"):
        resolve(load_sections(path, ["train.lrr=1", "train.lr=0.1", "gen.chunk_overlap=8", "eval.judge=false"]))


def test_the_cli_imports_no_ml_library():
    """Unsloth must be imported before transformers, peft and trl: the CLI leaves that to the stage."""
    import subprocess
    import sys

    code = "import sys, distill.cli\nprint(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'unsloth') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_repeatable_flags_left_out_are_not_given(tmp_path, monkeypatch):
    """No --base-url is no teacher: an empty repeatable flag must not create the eval's teacher."""
    seen = {}
    monkeypatch.setattr("evaluation.stage.run_eval", lambda cfg, show_progress: seen.setdefault("cfg", cfg) and {"status": "complete"})
    result = CliRunner().invoke(cli, ["eval", str(tmp_path), "-s", "student", "-q"])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].teacher is None and seen["cfg"].students == ["student"]


def test_grpo_has_its_own_command_with_grpo_keys_and_defaults():
    """`distill grpo --help` is made from GRPOConfig: its defaults (lr 5e-6, batch size in prompts), no SFT key."""
    shown = CliRunner().invoke(cli, ["grpo", "--help"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "[default: 5e-06]" in text and "Prompts per optimizer step" in text
    assert "--from" in text and "--reward" in text and "--packing" not in text and "8bit" not in text
    assert "[default: auto]" not in text.split("--lr", 1)[1].split("--", 1)[0]
    keys = CliRunner().invoke(cli, ["grpo", "--help-config"]).output
    assert "num_generations" in keys and "packing" not in keys and "recall_probe" not in keys
    assert "Records per micro-batch" not in keys
    train = " ".join(CliRunner().invoke(cli, ["train", "--help"]).output.split()).split("Examples:")[0]
    assert "--num-generations" not in train and "--from" not in train and "--reward" not in train


def test_shared_keys_are_declared_once():
    """A key both recipes read alike comes from StageConfig; a key each declares differs (GRPO's own defaults)."""
    from train.config import StageConfig, TrainConfig
    from train.grpo_config import GRPOConfig

    sft, grpo = TrainConfig.model_fields, GRPOConfig.model_fields
    for key in set(sft) & set(grpo):
        if key in StageConfig.model_fields:
            assert key not in TrainConfig.__annotations__, f"{key} declared again"
            assert key not in GRPOConfig.__annotations__, f"{key} declared again"
            continue
        assert (sft[key].default, sft[key].description) != (grpo[key].default, grpo[key].description), key
    assert {"split", "backend", "dtype", "target_modules", "resume"} <= set(StageConfig.model_fields)
    assert GRPOConfig().lr == 5e-6 and TrainConfig().lr == "auto" and GRPOConfig().lr_scheduler == "cosine"


def test_dash_m_names_the_teacher_only():
    """-m/--model is the teacher in gen and eval; train names its base student with --model alone."""
    for command in ("gen", "eval"):
        assert "-m, --model" in CliRunner().invoke(cli, [command, "--help"]).output
    for command in ("train", "grpo"):
        assert "-m," not in CliRunner().invoke(cli, [command, "--help"]).output
