"""The `distill` command line: one subcommand per job (gen, train, eval, run, ...).

User mistakes (`UserError`) print one line and exit 2; Ctrl-C exits 130 after the stage has
saved what it finished.
"""

from __future__ import annotations

import sys

import click

from common.errors import UserError
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
    distill eval DATA --student DIR   student vs base vs teacher on held-out questions
    distill run PIPELINE.yaml         all stages from one file, resumable
    """


def _register() -> None:
    from distill import cmd_eval, cmd_gen, cmd_run, cmd_train

    for module in (cmd_gen, cmd_train, cmd_eval, cmd_run):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    quiet_libraries()
    try:
        code = cli.main(args=argv, prog_name="distill", standalone_mode=False)
    except UserError as exc:
        click.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
