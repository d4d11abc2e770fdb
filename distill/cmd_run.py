"""`distill run PIPELINE.yaml`: gen -> train -> eval from one file, resumable (see distill/pipeline.py)."""

from __future__ import annotations

import click

from distill.pipeline import STAGES, run_pipeline


@click.command("run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[STAGE.KEY=VALUE]...")
@click.option("--force", multiple=True, type=click.Choice(STAGES), help="Run this stage even if it is up to date (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no tables.")
def run(pipeline, overrides, force, quiet):
    """Run the stages of PIPELINE (sections gen, train, eval); `stage.key=value` overrides a key.

    A stage whose outputs are up to date for its config and inputs is skipped, so a rerun after
    a crash resumes where it stopped.
    """
    from distill.cmd_eval import print_summary

    log = (lambda line: None) if quiet else (lambda line: click.secho(line, fg="cyan", err=True))
    done = run_pipeline(pipeline, list(overrides), tuple(force), show_progress=not quiet, log=log)
    if "eval" in done and not quiet:
        metrics = done["eval"]["result"]
        print_summary(metrics, metrics["config"]["out"])


COMMANDS = (run,)
