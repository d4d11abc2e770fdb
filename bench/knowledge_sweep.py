"""Training recipes against the knowledge benchmark: which settings make the student recall facts?

    .venv/bin/python bench/knowledge_sweep.py --data runs/knowledge/defaults/data --untaught runs/knowledge/untaught \\
        --out runs/sweep --parallel 4 --recipe "lora-r64-lr1e-3: --lr 1e-3 lora_r=64 lora_alpha=64 --epochs 10" \\
        --recipe "full-lr1e-4: --method full --lr 1e-4 --epochs 6" --recipe "r64-text@runs/k/data-rewrites: lora_r=64"

Data made once (bench/knowledge.py's gen stage with the exact teacher, so every item is right);
every recipe is `distill train DATA --out OUT/<name>/student <its arguments>`, up to --parallel at
a time (one GPU holds several small students), then `distill eval` on the data (held-out
phrasings, and the training questions) and on the untaught control set. The table is
bench/knowledge.py's: student (base) exact match and contains-answer per section, seconds, epochs;
written to OUT/results.md and OUT/results.json with date, machine and commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from knowledge import StageFailed, collect, commit, distill, table


def run_recipe(name: str, args: list[str], data: Path, untaught: Path, out: Path, eval_args: tuple[str, ...] = ()) -> dict:
    here = out / name
    row = {"variant": name, "wall_seconds": {}, "arguments": " ".join(args)}
    steps = [
        ("train", ["train", str(data), "--out", str(here / "student"), "--overwrite", "--json", "-q", *args]),
        ("eval", ["eval", str(data), "--student", str(here / "student"), "--out", str(here / "eval"), "--json", "-q", *eval_args]),
        ("eval_untaught", ["eval", str(untaught), "--student", str(here / "student"), "--out", str(here / "eval-untaught"), "--json", "-q", *eval_args]),
    ]
    for stage, argv in steps:
        try:
            row["wall_seconds"][stage] = distill(stage, argv, here / "logs")
        except StageFailed as exc:
            row["error"] = str(exc)
            break
    row.update(collect(here))
    print(f"[{name}] done: {row.get('error') or row.get('held_out', {}).get('student', {})}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--untaught", required=True, type=Path)
    parser.add_argument("--out", default="runs/sweep", type=Path)
    parser.add_argument("--parallel", type=int, default=1, help="recipes trained at the same time")
    parser.add_argument("--recipe", action="append", default=[], help="'NAME[@DATA]: distill train arguments' (repeatable)")
    parser.add_argument("--recipes", type=Path, help="a file of recipes, one a line (# comments); DATA_REWRITES in it stands for --rewrites-data")
    parser.add_argument("--rewrites-data", type=Path, help="the data directory with text.jsonl that DATA_REWRITES names")
    parser.add_argument("--only", help="comma-separated recipe names to run (default: all)")
    parser.add_argument("--eval-args", default="", help="extra `distill eval` arguments, e.g. 'batch_size=64'")
    opts = parser.parse_args()
    lines = list(opts.recipe)
    if opts.recipes:
        lines += [line.replace("DATA_REWRITES", str(opts.rewrites_data)) for line in opts.recipes.read_text().splitlines() if line.strip() and not line.startswith("#")]
    recipes = []
    for text in lines:
        head, _, rest = text.partition(":")
        name, _, data = head.strip().partition("@")  # NAME@DIR: a recipe on other data (e.g. with text.jsonl)
        if not opts.only or name in opts.only.split(","):
            recipes.append((name, shlex.split(rest), Path(data or opts.data).resolve()))
    opts.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=opts.parallel) as pool:
        rows = list(pool.map(lambda r: run_recipe(r[0], r[1], r[2], opts.untaught.resolve(), opts.out.resolve(), tuple(shlex.split(opts.eval_args))), recipes))
    head = f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, commit {commit()}, {opts.parallel} at a time\n\n"
    text = head + table(rows) + "\nRecipes:\n" + "".join(f"- {r['variant']}: `{r['arguments']}`\n" for r in rows)
    (opts.out / "results.md").write_text(text)
    (opts.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(text)


if __name__ == "__main__":
    main()
