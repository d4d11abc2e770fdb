"""`distill gen` (documents -> train/test.jsonl) and `distill export` (other dataset formats)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from common.config import load_config
from generate.export import EXPORTS, export_dir

BACKENDS = ("local", "openai", "vllm")


def split_overrides(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Positional arguments are paths, except `key=value` words that are no existing path."""
    paths, overrides = [], []
    for arg in args:
        is_override = "=" in arg and not Path(arg).exists() and arg.split("=", 1)[0].replace(".", "_").isidentifier()
        (overrides if is_override else paths).append(arg)
    return paths, overrides


@click.command("gen")
@click.argument("inputs", nargs=-1)
@click.option("-o", "--out", help="Output directory (train.jsonl, test.jsonl, rejects.jsonl, manifest.json, cache).")
@click.option("-c", "--config", "config_path", type=click.Path(), help="YAML file with GenConfig keys.")
@click.option("--task", help="Built-in task (qa, reasoning) or the name of a custom task.")
@click.option("--prompt-file", help="Custom prompt template ({chunk}, {n}, {schema}).")
@click.option("--schema-file", help="Custom JSON Schema of the teacher output.")
@click.option("-n", "--pairs-per-chunk", type=int, help="QA items asked for every chunk.")
@click.option("--test-fraction", type=float, help="Share held out in test.jsonl.")
@click.option("--split-by", type=click.Choice(["item", "document"]), help="item: closed-book knowledge; document: open-book skill.")
@click.option("--seed", type=int, help="Seed of the split and of chunk sampling.")
@click.option("--max-chunks", type=int, help="Use at most this many chunks (a quick try).")
@click.option("--teacher", "backend", type=click.Choice(BACKENDS), help="Teacher backend (default: local, the embedded model).")
@click.option("-m", "--model", help="Teacher model: 'embedded', a path, a hub id, or a served model name.")
@click.option("--base-url", multiple=True, envvar="DISTILL_BASE_URL", help="OpenAI-compatible server URL (repeatable).")
@click.option("--api-key-env", help="Environment variable holding the API key (default OPENAI_API_KEY).")
@click.option("--concurrency", type=int, help="openai backend: requests in flight.")
@click.option("--min-score", type=click.IntRange(1, 5), help="Have the teacher judge every item (1-5); keep those scoring at least this.")
@click.option("--export", "exports", multiple=True, type=click.Choice(EXPORTS), help="Also write this format (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show chunks, requests and a token estimate; call no teacher.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of a table.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no table.")
def gen(inputs, config_path, backend, model, base_url, api_key_env, concurrency, dry_run, as_json, quiet, **flags):
    """Write QA pairs with reasoning traces from INPUTS (files, directories, globs; key=value overrides)."""
    from generate.config import GenConfig
    from generate.stage import run_gen

    paths, overrides = split_overrides(inputs)
    flags["inputs"] = paths or None
    flags["export"] = list(flags.pop("exports")) or None
    teacher = {"backend": backend, "model": model, "base_url": list(base_url) or None, "api_key_env": api_key_env, "concurrency": concurrency}
    flags.update({f"teacher.{k}": v for k, v in teacher.items()})
    cfg = load_config(GenConfig, config_path, flags, overrides)
    manifest = run_gen(cfg, dry_run=dry_run, show_progress=not (quiet or as_json))
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    elif not quiet:
        print_summary(manifest, cfg.out)
    if manifest["status"] == "interrupted":
        click.echo("interrupted: finished requests are saved; rerun the same command to continue", err=True)
        sys.exit(130)


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
    for skipped in manifest["skipped_files"]:
        console.print(f"[yellow]skipped[/] {skipped['path']}: {skipped['reason']}")
    if manifest["status"] != "dry-run":
        console.print(f"wrote {out}/train.jsonl, test.jsonl, rejects.jsonl, manifest.json")


@click.command("export")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-f", "--format", "formats", multiple=True, required=True, type=click.Choice(EXPORTS))
def export(data_dir, formats):
    """Write DATA_DIR's train/test.jsonl in other formats (alpaca, sharegpt, openai)."""
    for path in export_dir(data_dir, list(formats)):
        click.echo(str(path))


COMMANDS = (gen, export)
