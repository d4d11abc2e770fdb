"""`distill run PIPELINE.yaml`: gen -> train -> eval from one file, resumable (see distill/pipeline.py)."""

from __future__ import annotations

import json
import time

import click

from distill.options import one_path
from distill.pipeline import STAGES, run_pipeline
from distill.quiet import verbose_option

EXAMPLES = """\b
Examples:
  distill run examples/quickstart.yaml                  # gen -> train -> eval; a rerun skips what is up to date
  distill run pipeline.yaml train.epochs=3              # override one stage's key
  distill run pipeline.yaml --force eval                # rerun eval even if it is up to date
  distill run pipeline.yaml --allow-incomplete          # train on what gen got even if some requests failed
"""


def print_stage_keys(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from common.config import describe
    from distill.pipeline import stage_models

    for stage, model in stage_models().items():
        click.echo(f"{stage}:\n{describe(model)}")
    ctx.exit()


ALLOW_INCOMPLETE = "Go on after a gen or eval stage whose teacher requests partly failed (by default: stop, exit 3)."


@click.command("run", epilog=EXAMPLES)
@click.argument("args", nargs=-1, metavar="PIPELINE [STAGE.KEY=VALUE]...")
@click.option("--force", multiple=True, type=click.Choice(STAGES), help="Run this stage even if it is up to date (repeatable).")
@click.option("--help-config", is_flag=True, expose_value=False, is_eager=True, callback=print_stage_keys, help="List every key of every stage section and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print what each stage did (ran or skipped, and its result) as JSON.")
@click.option("--allow-incomplete", is_flag=True, help=ALLOW_INCOMPLETE)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no tables.")
@verbose_option
def run(args, force, as_json, quiet, allow_incomplete):
    """Run the stages of PIPELINE (sections gen, train, eval); `stage.key=value` overrides a key.

    Every section is checked before any stage runs. A stage whose outputs are up to date for its
    config and inputs is skipped, so a rerun after a crash resumes where it stopped. A gen or eval
    stage whose teacher (or judge) requests partly failed stops the run (exit 3) unless
    --allow-incomplete, and is not marked done: rerunning sends only the failed requests. A gen
    stage that accepted nothing stops the run (exit 4).
    """
    from distill.cmd_eval import print_summary

    started = time.monotonic()
    pipeline, overrides = one_path(args, "pipeline file")
    if pipeline is None:
        raise click.UsageError("a pipeline file is needed, e.g. distill run examples/quickstart.yaml")
    silent = quiet or as_json
    log = (lambda line: None) if silent else (lambda line: click.secho(line, fg="cyan", err=True))
    done = run_pipeline(pipeline, overrides, tuple(force), show_progress=not silent, log=log, allow_incomplete=allow_incomplete)
    if as_json:
        click.echo(json.dumps(done, indent=2))
    elif "eval" in done and not quiet:
        metrics = done["eval"]["result"]
        print_summary(metrics, metrics["config"]["out"])
    if not silent:
        click.secho(timings(done, time.monotonic() - started), fg="cyan", err=True)


def clock(seconds: float) -> str:
    """65.2 -> '1 min 05 s'; 9.4 -> '9 s'."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def timings(done: dict, total: float) -> str:
    """One line: the whole run's wall time and each stage's (stages skipped as up to date say so)."""
    parts = [f"{stage} {clock(entry['seconds'])}" if "seconds" in entry else f"{stage} {entry['status']}"
             for stage, entry in done.items()]
    return f"took {clock(total)}: " + ", ".join(parts)


COMMANDS = (run,)
