"""`distill eval`: the students, their base and the teacher answer test.jsonl; graded and reported."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from common.config import load_config
from common.errors import IncompleteRun, failed_requests_line
from distill.options import TEACHER_FLAGS, Flag, config_command, one_path
from evaluation.config import EvalConfig
from evaluation.report import perf_table, score_table

FLAGS = (
    Flag("students", "-s", "--student"),
    Flag("out", "-o", "--out"),
    Flag("base"),
    *TEACHER_FLAGS,
    Flag("mode"),
    Flag("judge"),
    Flag("pairwise"),
    Flag("max_questions"),
    Flag("engine"),
)
EXAMPLES = """\b
Examples:
  distill eval data --student student --out eval              # student vs its base
  distill eval data -s student -s grpo --out eval             # two students side by side
  distill eval chats.jsonl -s student --out eval             # your own questions (chat, Alpaca, ShareGPT, records)
  distill eval data -s student --engine vllm --out eval      # base and LoRA students served by one vLLM engine
  distill eval data -s student --teacher openai --base-url http://localhost:8000/v1 -m Qwen/Qwen3-32B --judge --pairwise

\b
Exit codes: 0 complete; 2 a user error; 3 incomplete: some teacher or judge requests failed
(metrics.json says status incomplete; rerun the same command to send only those); 130 interrupted.
"""


@config_command("eval", EvalConfig, FLAGS, "DATA [KEY=VALUE]...", EXAMPLES)
def eval_(args, config_path, as_json, quiet, flags):
    """Evaluate on DATA/test.jsonl (positional: the data directory, or a file, or a `datasets` folder, then key=value overrides)."""
    from evaluation.stage import run_eval

    flags["data"], overrides = one_path(args, "data directory")
    cfg = load_config(EvalConfig, config_path, flags, overrides)
    metrics = run_eval(cfg, show_progress=not (quiet or as_json))
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    elif not quiet:
        print_summary(metrics, cfg.out)
    if metrics["status"] == "incomplete":
        raise IncompleteRun(incomplete_message(metrics))


def incomplete_message(metrics: dict) -> str:
    """The one line of an eval whose teacher or judge requests failed."""
    return failed_requests_line(metrics["failures"], "teacher or judge request")


def print_summary(metrics: dict, out: str) -> None:
    """The scores and speed tables, then where the report is."""
    console = Console(width=None if sys.stdout.isatty() else 200)  # pipes and logs get the whole table
    for title, rows in ((f"distill eval ({metrics['data_format']} data, {metrics['mode']}, {metrics['questions']} questions)", score_table(metrics)), ("speed", perf_table(metrics))):
        table = Table(title=title)
        for column in rows[0]:
            table.add_column(column)
        for row in rows[1:]:
            table.add_row(*row)
        console.print(table)
    for label, entry in metrics["models"].items():
        if entry["status"] != "ok":
            console.print(f"[yellow]{label} missing[/]: {entry['reason']}")
    console.print(f"report: {out}/report.html")


COMMANDS = (eval_,)
