"""A quiet start: no library notice reaches the terminal unless it concerns the user's run; `-v` shows them.

Notices are hidden by logger and message, never by category: the same logger's other records
and Unsloth's import-order warning still show.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from distill.quiet import NOISY_LOGS, quiet_libraries, show_libraries

from trainkit import data_dir, tiny_model

# what the libraries print on this stack when nothing hides it (distill train -v, tiny model, CPU)
LIBRARY_LINES = ("is an Enum subclass", "gemm_4bit_forward", "Padding-free training is enabled", "Loading weights")


def distill(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(key, None)  # as a user's shell has them
    return subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("args", [["--help"], ["gen", "--help"], ["train", "--help"], ["eval", "--help"], ["run", "--help"]])
def test_help_prints_nothing_on_stderr(args):
    done = distill(*args)
    assert done.returncode == 0 and done.stdout and done.stderr == "", done.stderr


def test_gen_dry_run_prints_nothing_on_stderr(tmp_path):
    """Loads the tokenizer (transformers) and reads every format, pypdf included."""
    from conftest import write_every_format

    write_every_format(tmp_path / "docs")
    done = distill("gen", str(tmp_path / "docs"), "--out", str(tmp_path / "out"), "--dry-run", "-q")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_train_is_quiet_and_verbose_shows_library_notices(tmp_path):
    """One real (tiny) training step: under -q stderr is empty; with -v the libraries' notices are there,
    and without -q the recipe chosen, with why, in one line."""
    model, data = tiny_model(tmp_path / "tiny"), data_dir(tmp_path / "data", n=8)
    common = ["train", str(data), "--model", str(model), "--backend", "hf", "--max-steps", "1"]
    quiet = distill(*common, "-q", "--out", str(tmp_path / "quiet"))
    loud = distill(*common, "--out", str(tmp_path / "loud"), "-v")
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr[-2000:] + loud.stderr[-2000:]
    assert quiet.stderr == "", quiet.stderr
    shown = [line for line in LIBRARY_LINES if line in loud.stderr]
    assert len(shown) >= 3, loud.stderr  # pytree, bitsandbytes, TRL, loading bars: which depend on the stack's versions
    assert "recipe: knowledge (distill gen data split by item): 10.0 epochs, lr 0.001, LoRA rank 64" in loud.stderr


@pytest.mark.parametrize("argv", [["-v", "gen", "--help"], ["gen", "-v", "--help"], ["export", "-v", "--help"], ["run", "-v", "--help"]])
def test_verbose_flag_lifts_the_filters_before_any_library_loads(argv, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import cli

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    quiet_libraries()
    name = NOISY_LOGS[0][0]
    assert logging.getLogger(name).filters and os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    try:
        assert CliRunner().invoke(cli, argv).exit_code == 0
        assert not logging.getLogger(name).filters and "TRANSFORMERS_VERBOSITY" not in os.environ
    finally:
        show_libraries()


def test_filters_go_by_message_not_by_logger(caplog, monkeypatch):
    """A hidden notice's logger still passes its other records; a user's own setting is kept; show_libraries undoes everything."""
    name = NOISY_LOGS[0][0]
    logger = logging.getLogger(name)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    quiet_libraries()
    try:
        with caplog.at_level(logging.WARNING, logger=name):
            logger.warning("<enum 'X'> is an Enum subclass and is now natively supported by torch.compile as an opaque value type.")
            logger.warning("something about the user's run")
        assert [r.getMessage() for r in caplog.records] == ["something about the user's run"]
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    finally:
        show_libraries()
    assert not logger.filters and os.environ["TRANSFORMERS_VERBOSITY"] == "info"


def test_unsloth_import_order_warning_is_not_hidden():
    """Unsloth's own warning about import order concerns the user's run: the quiet filters let it through."""
    code = (
        "import warnings\nfrom distill.quiet import quiet_libraries\nquiet_libraries()\n"
        "warnings.warn(\"WARNING: Unsloth should be imported before [transformers] to ensure all optimizations are applied. "
        "Please restructure your imports with 'import unsloth' at the top of your file.\")\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "restructure your imports" in done.stderr, done.stderr
