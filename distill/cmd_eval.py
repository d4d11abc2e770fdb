"""`distill eval`: the students, their base and the teacher answer test.jsonl; graded and reported."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from common.config import load_config
from distill.cmd_gen import BACKENDS, split_overrides
from distill.report import perf_table, score_table


@click.command("eval")
@click.argument("args", nargs=-1, metavar="DATA [KEY=VALUE]...")
@click.option("-s", "--student", "students", multiple=True, help="Trained student: model dir (adapter or merged) or hub id (repeatable).")
@click.option("-o", "--out", help="Output directory (report.md, report.html, metrics.json, predictions.jsonl).")
@click.option("-c", "--config", "config_path", type=click.Path(), help="YAML file with EvalConfig keys.")
@click.option("--base", help="Base student (default: the base named by the student, else 'embedded').")
@click.option("--teacher", "backend", type=click.Choice(BACKENDS), help="Also evaluate the teacher through this backend.")
@click.option("-m", "--model", help="Teacher model: 'embedded', a path, a hub id or a served model name.")
@click.option("--base-url", multiple=True, envvar="DISTILL_BASE_URL", help="openai teacher: server URL (repeatable).")
@click.option("--api-key-env", help="Environment variable holding the API key (default OPENAI_API_KEY).")
@click.option("--mode", type=click.Choice(["auto", "closed-book", "open-book"]), help="Prompt mode; auto follows the data's split.")
@click.option("--judge/--no-judge", default=None, help="LLM-as-judge grade of every answer (by the teacher).")
@click.option("--pairwise/--no-pairwise", default=None, help="Student-vs-teacher preference, judged in both orders.")
@click.option("--max-questions", type=int, help="Evaluate only the first N questions.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of tables.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, no table.")
def eval_(args, students, config_path, backend, model, base_url, api_key_env, as_json, quiet, **flags):
    """Evaluate on DATA/test.jsonl (positional: the data directory, then key=value overrides)."""
    from distill.eval_config import EvalConfig
    from distill.evaluate import run_eval

    paths, overrides = split_overrides(args)
    if len(paths) > 1:
        raise click.UsageError(f"one data directory expected, got {len(paths)}: {' '.join(paths)}")
    flags["data"] = paths[0] if paths else None
    flags["students"] = list(students) or None
    if backend or model or base_url:
        teacher = {"backend": backend, "model": model, "base_url": list(base_url) or None, "api_key_env": api_key_env}
        flags.update({f"teacher.{k}": v for k, v in teacher.items()})
    cfg = load_config(EvalConfig, config_path, flags, overrides)
    metrics = run_eval(cfg, show_progress=not (quiet or as_json))
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    elif not quiet:
        print_summary(metrics, cfg.out)


def print_summary(metrics: dict, out: str) -> None:
    """The scores and speed tables, then where the report is."""
    console = Console(width=None if sys.stdout.isatty() else 200)  # pipes and logs get the whole table
    for title, rows in ((f"distill eval ({metrics['mode']}, {metrics['questions']} questions)", score_table(metrics)), ("speed", perf_table(metrics))):
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
