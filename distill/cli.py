"""The `distill` command line: one subcommand per job (gen, train, eval, run, ...).

Exit codes:
  0    done
  2    a user mistake (`UserError`): one line says what to fix
  3    incomplete (`IncompleteRun`): some teacher (or judge) requests failed in gen, eval or GRPO; what was
       answered is saved and the same command, run again, sends only the failed requests (`distill run`
       stops before training on such data unless `--allow-incomplete`, and never marks the stage done)
  4    empty (`EmptyRun`): gen finished but accepted no reply; the line counts the reject reasons
       (rejects.jsonl holds each one)
  130  interrupted (Ctrl-C) after the stage saved what it finished
"""

from __future__ import annotations

import sys

import click

from common.errors import EXIT_EMPTY, EXIT_INCOMPLETE, EXIT_USER_ERROR, EmptyRun, IncompleteRun, UserError
from distill import __version__
from distill.quiet import quiet_libraries, verbose_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distill")
@verbose_option
def cli() -> None:
    """Turn documents into a small domain-specific reasoning model.

    \b
    distill gen DOCS --out DATA       teacher writes QA pairs + reasoning traces
    distill train DATA --out STUDENT  fine-tune the student (Unsloth SFT)
    distill grpo DATA --from STUDENT  refine it with rewards (GRPO)
    distill eval DATA --student DIR   student vs base vs teacher on held-out questions
    distill run PIPELINE.yaml         all stages from one file, resumable

    \b
    Exit codes: 0 done, 2 user error, 3 incomplete (failed teacher or judge
    requests: rerun to retry them), 4 empty (gen accepted nothing), 130 interrupted.
    """


def _register() -> None:
    from distill import cmd_eval, cmd_gen, cmd_grpo, cmd_run, cmd_train

    for module in (cmd_gen, cmd_train, cmd_grpo, cmd_eval, cmd_run):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    from distill import launch

    launch.ARGV = list(argv) if argv is not None else sys.argv[1:]  # `--gpus N` relaunches these under torchrun
    quiet_libraries()
    try:
        code = cli.main(args=argv, prog_name="distill", standalone_mode=False)
    except UserError as exc:
        click.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(EXIT_USER_ERROR)
    except IncompleteRun as exc:
        click.secho(f"incomplete: {exc}", err=True, fg="yellow")
        sys.exit(EXIT_INCOMPLETE)
    except EmptyRun as exc:
        click.secho(f"empty: {exc}", err=True, fg="red")
        sys.exit(EXIT_EMPTY)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
