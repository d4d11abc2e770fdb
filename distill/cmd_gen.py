"""`distill gen` (documents -> train/test.jsonl) and `distill export` (other dataset formats)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.config import load_config
from common.errors import EmptyRun, IncompleteRun, UserError
from distill.options import TEACHER_FLAGS, Flag, config_command, split_args
from distill.quiet import verbose_option
from generate.config import GenConfig
from generate.export import EXPORTS, export_dir

FLAGS = (
    Flag("out", "-o", "--out"),
    Flag("task"),
    Flag("prompt_file"),
    Flag("schema_file"),
    Flag("pairs_per_chunk", "-n", "--pairs-per-chunk"),
    Flag("phrasings"),
    Flag("answers"),
    Flag("rewrites"),
    Flag("test_fraction"),
    Flag("split_by"),
    Flag("seed"),
    Flag("max_chunks"),
    Flag("min_score"),
    Flag("export"),
    *TEACHER_FLAGS,
    Flag("teacher.concurrency"),
)
EXAMPLES = """\b
Examples:
  distill gen docs/ --out data                              # the embedded teacher, on the CPU
  distill gen manual.pdf notes/*.md --out data --task reasoning -n 3
  distill gen docs/ --out data --rewrites 3                 # + paraphrases, notes, summaries as training text
  distill gen docs/ --out data --dry-run                    # chunks, requests, token estimate
  distill gen docs/ --out data --teacher openai --base-url http://localhost:8000/v1 -m Qwen/Qwen3-32B
  distill gen docs/ --out data --config gen.yaml teacher.temperature=0.3
  distill gen docs/ --out data --ray                        # a Ray Data pipeline on a local Ray (distill[ray])
  distill gen docs/ --out data --teacher openai --base-url http://gpu1:8000/v1 --ray=ray://head:10001

\b
Exit codes: 0 complete; 2 a user error; 3 incomplete: some teacher requests failed (the
manifest says status incomplete; rerun the same command to send only those); 4 empty: no reply
was accepted (the line counts the reject reasons; rejects.jsonl holds each); 130 interrupted.
"""


@config_command("gen", GenConfig, FLAGS, "INPUTS... [KEY=VALUE]...", EXAMPLES)
@click.option("--dry-run", is_flag=True, help="Show chunks, requests and a token estimate; call no teacher.")
@click.option(
    "--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
    help="Run as a Ray Data pipeline on the cluster at ADDRESS (or $RAY_ADDRESS), else on a local Ray; "
    "put it last or write --ray=ADDRESS.",
)  # fmt: skip
def gen(args, config_path, as_json, quiet, flags, dry_run=False, ray_address=None):
    """Write QA pairs with reasoning traces from INPUTS (files, directories, globs; key=value overrides)."""
    from generate.ray_stage import run_gen_ray
    from generate.stage import run_gen
    from generate.verdict import empty_message, incomplete_message

    paths, overrides = split_args(args)
    flags["inputs"] = paths or None
    if ray_address is not None:
        flags.update(ray_flags(ray_address))
    cfg = load_config(GenConfig, config_path, flags, overrides)
    show = not (quiet or as_json)
    if cfg.ray is not None and not dry_run:
        manifest = run_gen_ray(cfg, show)
    else:
        manifest = run_gen(cfg, dry_run=dry_run, show_progress=show)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    elif not quiet:
        print_summary(manifest, cfg.out)
    else:  # a file left out concerns the user's run: one line each, even when quiet
        for skipped in manifest["skipped_files"]:
            click.echo(f"skipped {skipped['path']}: {skipped['reason']}", err=True)
    for warning in manifest.get("warnings", []):
        click.secho(f"warning: {warning}", err=True, fg="yellow")
    if manifest["status"] == "interrupted":
        click.echo("interrupted: finished requests are saved; rerun the same command to continue", err=True)
        sys.exit(130)
    if manifest["status"] == "incomplete":
        raise IncompleteRun(incomplete_message(manifest))
    if manifest["status"] == "empty":
        raise EmptyRun(empty_message(manifest))


def ray_flags(address: str) -> dict:
    """--ray [ADDRESS] as config keys; an address that is an existing path was an input taken by --ray, one
    with '=' and no scheme a setting (key=value; a Ray address is auto, host:port or ray://host:port)."""
    if address and Path(address).exists():
        raise UserError(f"--ray took the input {address} as a cluster address; put --ray last or write --ray=ADDRESS")
    if "=" in address and "://" not in address:
        raise UserError(f"--ray took the setting {address} as a cluster address; put --ray last or write --ray=ADDRESS")
    return {"ray": {"address": address} if address else {}}


def print_summary(manifest: dict, out: str) -> None:
    console = Console()
    table = Table(title=f"distill gen: {manifest['status']}", show_header=True)
    table.add_column("stage")
    table.add_column("count", justify="right")
    for key, value in manifest["counts"].items():
        table.add_row(key, str(value))
    for reason, value in manifest.get("rejected", {}).items():
        table.add_row(f"rejected: {reason}", str(value))
    for key, value in manifest["tokens"].items():
        table.add_row(f"tokens: {key}", str(value))
    console.print(table)
    coverage = manifest.get("coverage", {})
    if coverage.get("chunks_without_items"):
        console.print(f"[yellow]{coverage['chunks_without_items']} of {coverage['chunks']} chunks gave no item[/] (manifest.json: coverage)")
    if coverage.get("factual_sentences"):
        console.print(coverage_line(coverage), highlight=False)
    for skipped in manifest["skipped_files"]:
        console.print(f"[yellow]skipped[/] {escape(skipped['path'])}: {escape(skipped['reason'])}", soft_wrap=True, highlight=False)
    if manifest["status"] != "dry-run":
        console.print(f"wrote {out}/train.jsonl, test.jsonl, rejects.jsonl, manifest.json")


def coverage_line(coverage: dict) -> str:
    """What share of the documents' factual sentences the training items quote, and facts listed vs taught."""
    line = f"coverage: {coverage['sentences_covered']} of {coverage['factual_sentences']} factual sentences ({coverage['sentence_coverage']:.0%}) are the evidence of a training item"
    if "facts_listed" in coverage:
        line += f"; facts listed {coverage['facts_listed']}, taught {coverage['facts_taught']}"
    return line + " (manifest.json: coverage.uncovered_sentences)"


@click.command("export")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-f", "--format", "formats", multiple=True, required=True, type=click.Choice(EXPORTS))
@verbose_option
def export(data_dir, formats):
    """Write DATA_DIR's train/test.jsonl in other formats (alpaca, sharegpt, openai)."""
    for path in export_dir(data_dir, list(formats)):
        click.echo(str(path))


COMMANDS = (gen, export)
