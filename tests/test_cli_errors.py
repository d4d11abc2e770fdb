"""Bad input through `distill.cli.main`: one line on stderr, exit code 2, nothing left looking complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main

from conftest import write_broken

OUTPUTS = ("manifest.json", "train.jsonl", "test.jsonl", "rejects.jsonl")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def assert_user_error(argv, capsys, out: Path, *words: str) -> str:
    code, stdout, stderr = run_cli(argv, capsys)
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and stdout == ""
    for word in words:
        assert word in lines[0]
    for name in OUTPUTS:
        assert not (out / name).exists()
    return lines[0]


def test_nonexistent_path(tmp_path, capsys):
    out = tmp_path / "out"
    assert_user_error(["gen", str(tmp_path / "missing"), "--out", str(out)], capsys, out, "does not exist", str(tmp_path / "missing"))


def test_empty_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert_user_error(["gen", str(tmp_path / "empty"), "--out", str(out)], capsys, out, "no files found")


def test_no_inputs_at_all(tmp_path, capsys):
    out = tmp_path / "out"
    assert_user_error(["gen", "--out", str(out)], capsys, out, "no input documents")


def test_directory_of_only_unreadable_files(tmp_path, capsys):
    broken = write_broken(tmp_path / "broken")
    out = tmp_path / "out"
    line = assert_user_error(["gen", str(tmp_path / "broken"), "--out", str(out)], capsys, out, f"none of the {len(broken)} input files")
    assert "pass readable documents" in line


def test_unknown_task(tmp_path, corpus, capsys):
    out = tmp_path / "out"
    assert_user_error(["gen", str(corpus), "--out", str(out), "--task", "poetry"], capsys, out, "unknown task 'poetry'", "qa, reasoning")


def test_schema_file_that_is_not_json_schema(tmp_path, corpus, capsys):
    schema = tmp_path / "bad.schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"items": {"type": "lists"}}}))
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Write {n} questions about {chunk}")
    out = tmp_path / "out"
    argv = ["gen", str(corpus), "--out", str(out), "--task", "mine", "--prompt-file", str(prompt), "--schema-file", str(schema)]
    assert_user_error(argv, capsys, out, "not a valid JSON Schema", str(schema))


def test_unwritable_output_directory(tmp_path, corpus, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a directory")
    out = blocker / "out"  # root ignores chmod, but nobody can create a directory under a file
    line = assert_user_error(["gen", str(corpus), "--out", str(out)], capsys, out, "cannot write to output directory", "--out")
    assert blocker.read_text() == "I am a file, not a directory" and "Not a directory" in line


def test_output_path_that_is_a_file(tmp_path, corpus, capsys):
    blocker = tmp_path / "data"
    blocker.write_text("x")
    assert_user_error(["gen", str(corpus), "--out", str(blocker)], capsys, tmp_path / "nowhere", "cannot write to output directory")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    "extra, words",
    [
        (["chunk_size=3"], "unknown key 'chunk_size'"),
        (["teacher.temperature=9"], "teacher.temperature"),
        (["chunk_tokens=64", "chunk_overlap=40"], "chunk_overlap (40) must be at most half"),
    ],
)
def test_bad_config_values(tmp_path, corpus, capsys, extra, words):
    out = tmp_path / "out"
    assert_user_error(["gen", str(corpus), "--out", str(out), *extra], capsys, out, words)


def test_bad_config_file(tmp_path, corpus, capsys):
    config = tmp_path / "gen.yaml"
    config.write_text("pairs_per_chunk: 2\nteacher:\n  modle: x\n")
    out = tmp_path / "out"
    assert_user_error(["gen", str(corpus), "--out", str(out), "--config", str(config)], capsys, out, "unknown key 'teacher.modle'")


def test_click_usage_errors_exit_2(tmp_path, capsys):
    code, _, stderr = run_cli(["gen", str(tmp_path), "--split-by", "chapter"], capsys)
    assert code == 2 and "chapter" in stderr
    code, _, stderr = run_cli(["nonsense"], capsys)
    assert code == 2 and "No such command" in stderr


def test_help_lists_gen(capsys):
    code, stdout, _ = run_cli(["--help"], capsys)
    assert code == 0
    commands = stdout.split("Commands:")[1].split()
    assert "gen" in commands and "export" in commands
    code, stdout, _ = run_cli(["gen", "--help"], capsys)
    assert code == 0 and "--pairs-per-chunk" in stdout and "--dry-run" in stdout and "--split-by" in stdout


@pytest.mark.parametrize("command", ["gen", "train", "grpo", "eval", "run"])
def test_help_shows_real_defaults(command, capsys):
    """A key whose default comes from a factory (eval --student, --base-url) showed `[default: PydanticUndefined]`."""
    code, stdout, _ = run_cli([command, "--help"], capsys)
    assert code == 0 and "PydanticUndefined" not in stdout


def test_version(capsys):
    from distill import __version__

    code, stdout, _ = run_cli(["--version"], capsys)
    assert code == 0 and __version__ in stdout


def grpo_data(folder: Path) -> Path:
    from trainkit import data_dir

    return data_dir(folder, n=4)


def test_train_stage_grpo_names_the_grpo_command(tmp_path, capsys):
    """GRPO has its own command; the old spelling says which, in one line."""
    data = grpo_data(tmp_path / "data")
    out = tmp_path / "g"
    argv = ["train", str(data), "--stage", "grpo", "--out", str(out)]
    assert_user_error(argv, capsys, out, "distill grpo DATA --from")


def test_grpo_without_from_names_the_sft_output(tmp_path, capsys):
    """GRPO on the untrained base must be asked for (--from embedded), never a default."""
    data = grpo_data(tmp_path / "data")
    out = tmp_path / "g"
    line = assert_user_error(["grpo", str(data), "--out", str(out)], capsys, out, "--from SFT_OUT", "--from embedded")
    assert "distill train --out SFT_OUT" in line and not (tmp_path / "g").exists()


def test_grpo_with_failed_judge_requests_exits_3(tmp_path, capsys, monkeypatch):
    """A GRPO run whose judge requests partly failed says how many, that a rerun retries them, and exits 3."""
    record = {"status": "incomplete", "backend": "hf", "judge_failures": {"requests": 3, "last_error": "HTTP 503"},
              "metrics": {"steps": 2, "reward": {"first": 0.1, "last": 0.2}, "by_epoch": {}, "seconds_per_step": 1.0}}
    monkeypatch.setattr("train.grpo.run_grpo", lambda cfg, show_progress: record)
    code, _, stderr = run_cli(["grpo", str(tmp_path), "--from", "embedded", "-q"], capsys)
    assert code == 3 and stderr.startswith("incomplete: 3 judge requests failed (last error: HTTP 503)"), stderr
    assert "rerun the same command to retry them" in stderr and len(stderr.strip().splitlines()) == 1


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """`import distill` sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP (docs/benchmarks.md), keeping a user's value."""
    import os
    import subprocess
    import sys

    code = "import os, distill; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "PASSIVE"
    done = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True)
    assert done.stdout.strip() == "ACTIVE"
