"""Knowledge benchmark: does the student learn the facts of documents (closed-book recall)?

    .venv/bin/python bench/knowledge.py [--out runs/knowledge] [--pages 20] [--variants defaults,rewrites]
        [--teacher exact|embedded] [--seed 0] [--gen-arg='--seed 1'] [--train-arg='--epochs 3'] [--eval-arg=...]

1. writes a corpus of invented facts (bench/knowledge_corpus.py: OUT/docs, OUT/facts.json,
   OUT/untaught, facts written into no page, and OUT/unseen, every taught fact asked in the two
   question templates of its kind that generation never uses, for any subject);
2. starts the exact teacher (bench/exact_teacher.py, in this process) unless --teacher embedded
   (the local 135M teacher writes the data), so the data is as good as data can be and only the
   student's learning is measured;
3. per variant, through the real CLI in subprocesses: `distill gen` with its defaults (facts
   first: every listed fact asked in 3 phrasings, 10% of phrasings held out; `rewrites` adds
   --rewrites 3), `distill train`, `distill eval` on the data (held-out phrasings; training
   questions), on OUT/unseen (unseen wordings) and on OUT/untaught (should stay ~0);
4. reads the metrics.json files, the data's manifest and the student's run.json, prints a Markdown
   table and writes it with the raw numbers to OUT/results.md and OUT/results.json. Coverage:
   the share of the corpus's taught facts whose evidence some training item quotes.
--gen-arg/--train-arg/--eval-arg (repeatable; write them with '=') add arguments to that stage,
split like a shell would: --train-arg='--epochs 3' --train-arg=lr=1e-4. Each stage's stdout and
stderr go to OUT/<variant>/logs/. A failed stage ends its variant (the error is in the table).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from exact_teacher import MODEL, ExactTeacher
from knowledge_corpus import write_corpus, write_unseen

FACTS_PER_PAGE = 5
VARIANTS = {"defaults": [], "rewrites": ["--rewrites", "3"]}
METRICS = ("exact_match", "contains")
SECTIONS = (("held_out", "eval", None), ("unseen", "eval-unseen", None), ("taught", "eval", "train_questions"), ("untaught", "eval-untaught", None))
PHRASINGS = 3  # gen's default phrasings per fact: the corpus's questions after these are never used


class StageFailed(Exception):
    pass


def distill(stage: str, argv: list[str], logs: Path) -> float:
    """Run `python -m distill ARGV` from the repository root; returns wall seconds."""
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "distill", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    (logs / f"{stage}.out").write_text(done.stdout)
    (logs / f"{stage}.err").write_text(done.stderr)
    if done.returncode != 0:
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no message")
        raise StageFailed(f"{stage} exited with {done.returncode}: {last.strip()[:300]}")
    return round(seconds, 1)


def stages(variant: str, out: Path, url: str | None, extra: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(stage, distill arguments) of one variant, in order."""
    here = out / variant
    teacher = ["--teacher", "openai", "--base-url", url, "--model", MODEL] if url else []
    gen = ["gen", str(out / "docs"), "--out", str(here / "data"), *teacher, *VARIANTS[variant], "--json", "-q"]
    train = ["train", str(here / "data"), "--out", str(here / "student"), "--json", "-q"]
    evals = [["eval", str(data), "--student", str(here / "student"), "--out", str(here / name), "--json", "-q"]
             for data, name in ((here / "data", "eval"), (out / "unseen", "eval-unseen"), (out / "untaught", "eval-untaught"))]  # fmt: skip
    return [("gen", gen + words(extra.gen)), ("train", train + words(extra.train)), ("eval", evals[0] + words(extra.eval)),
            ("eval_unseen", evals[1] + words(extra.eval)), ("eval_untaught", evals[2] + words(extra.eval))]  # fmt: skip


def words(args: list[str]) -> list[str]:
    """Repeated --*-arg values, each split like a shell would."""
    return [word for arg in args for word in shlex.split(arg)]


def recall(metrics: dict, student: str) -> dict:
    """{"base"|"student": {metric: {"mean", "lo", "hi", "n"}}} from a `models` section."""
    models = metrics.get("models", {})
    label = student if student in models else next((k for k, v in models.items() if v.get("role") == "student"), None)
    out = {}
    for who, key in (("base", "base"), ("student", label)):
        found = models.get(key, {}).get("metrics", {}) if key else {}
        out[who] = {m: found[m] for m in METRICS if m in found}
    return out


def coverage(here: Path, facts: list[dict]) -> dict | None:
    """Taught facts of the corpus whose evidence a training item quotes, and the manifest's coverage."""
    train = here / "data" / "train.jsonl"
    if not train.is_file():
        return None
    quoted = " \x1f ".join(" ".join(json.loads(line)["evidence"].split()) for line in train.read_text().splitlines())
    taught = [f for f in facts if f["taught"]]
    covered = sum(f["evidence"] in quoted for f in taught)
    manifest = json.loads((here / "data" / "manifest.json").read_text())
    keys = ("factual_sentences", "sentences_covered", "sentence_coverage", "facts_listed", "facts_taught")
    found = {k: manifest.get("coverage", {}).get(k) for k in keys}
    return {"facts": len(taught), "covered": covered, "share": round(covered / len(taught), 4) if taught else None, **found,
            "near_twins_dropped": manifest["counts"].get("near_twins_dropped"), "train": manifest["counts"]["train"], "test": manifest["counts"]["test"]}  # fmt: skip


def collect(here: Path, facts: list[dict] | None = None) -> dict:
    """Recall per section and training facts of one variant, from whatever files it wrote."""
    student = (here / "student").name
    result = {}
    covered = coverage(here, facts) if facts else None
    if covered:
        result["coverage"] = covered
    for section, folder, key in SECTIONS:
        path = here / folder / "metrics.json"
        if path.is_file():
            metrics = json.loads(path.read_text())
            metrics = metrics.get(key) if key else metrics
            if metrics:
                result[section] = recall(metrics, student)
    run = here / "student" / "run.json"
    if run.is_file():
        numbers = json.loads(run.read_text()).get("metrics", {})
        result["train"] = {"train_seconds": numbers.get("train_seconds"), "epochs": numbers.get("epochs")}
    return result


def run_variant(variant: str, out: Path, url: str | None, extra: argparse.Namespace) -> dict:
    row = {"variant": variant, "wall_seconds": {}}
    for stage, argv in stages(variant, out, url, extra):
        print(f"[{variant}] distill {stage}", flush=True)
        try:
            row["wall_seconds"][stage] = distill(stage, argv, out / variant / "logs")
        except StageFailed as exc:
            row["error"] = str(exc)
            print(f"[{variant}] {exc}", flush=True)
            break
    row.update(collect(out / variant, json.loads((out / "facts.json").read_text())["facts"]))
    return row


def cell(row: dict, section: str, metric: str) -> str:
    """'student (base)' means of one metric, or '-'."""
    means = [row.get(section, {}).get(who, {}).get(metric, {}).get("mean") for who in ("student", "base")]
    if means == [None, None]:
        return "-"
    student, base = ("-" if v is None else f"{v:.2f}" for v in means)
    return f"{student} ({base})"


def covered(row: dict) -> str:
    found = row.get("coverage")
    if not found:
        return "-"
    sentences = found.get("sentence_coverage")
    return f"{found['share']:.2f} ({found['covered']}/{found['facts']}; sentences {'-' if sentences is None else f'{sentences:.2f}'})"


def table(rows: list[dict]) -> str:
    head = ["variant", "coverage"] + [f"{s} {'EM' if m == 'exact_match' else m}" for s, *_ in SECTIONS for m in METRICS]
    head += ["gen s", "train s", "eval s", "fit s", "epochs", "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        seconds, train = row["wall_seconds"], row.get("train", {})
        cells = [row["variant"], covered(row)] + [cell(row, s, m) for s, *_ in SECTIONS for m in METRICS]
        cells += [str(seconds.get("gen", "-")), str(seconds.get("train", "-")), str(seconds.get("eval", "-")),
                  str(train.get("train_seconds", "-")), str(train.get("epochs", "-")), row.get("error", "")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    legend = ("Cells: student (base model). coverage: taught facts of the corpus that a training item quotes (sentences: the manifest's "
              "factual sentences covered, page intros included); held_out: test phrasings of taught facts; unseen: every taught fact "
              "in the question templates gen never used; taught: the training questions; untaught: facts in no page.\n")  # fmt: skip
    return "\n".join(lines) + "\n\n" + legend + "gen/train/eval s: wall seconds of the CLI stage; fit s: run.json train_seconds.\n"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/knowledge")
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--variants", default="defaults,rewrites", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--teacher", choices=["exact", "embedded"], default="exact")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus")
    parser.add_argument("--gen-arg", dest="gen", action="append", default=[])
    parser.add_argument("--train-arg", dest="train", action="append", default=[])
    parser.add_argument("--eval-arg", dest="eval", action="append", default=[])
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        sys.exit(f"error: unknown variant {', '.join(unknown) or '(none given)'}; use some of {', '.join(VARIANTS)}")
    out = Path(args.out).resolve()
    started = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit()}  # what ran, not what is checked out at the end
    write_corpus(out, pages=args.pages, facts_per_page=FACTS_PER_PAGE, seed=args.seed)
    write_unseen(out, PHRASINGS)
    server = ExactTeacher(out) if args.teacher == "exact" else contextlib.nullcontext()
    with server:
        url = server.url if args.teacher == "exact" else None
        rows = [run_variant(v, out, url, args) for v in variants]
    if args.teacher == "exact":
        print(f"exact teacher requests: {dict(server.counts)}")
    report = table(rows)
    machine = {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()}
    meta = {**started, "machine": machine, "teacher": args.teacher,
            "pages": args.pages, "facts_per_page": FACTS_PER_PAGE, "seed": args.seed, "extra_args": {"gen": args.gen, "train": args.train, "eval": args.eval}}  # fmt: skip
    (out / "results.json").write_text(json.dumps({**meta, "variants": rows}, indent=1) + "\n")
    header = f"# Knowledge benchmark\n\n{meta['date']}, commit {meta['commit']}, {machine['processor']} ({machine['cpus']} CPUs), teacher {args.teacher}\n\n"
    (out / "results.md").write_text(header + report)
    print(report)
    sys.exit(1 if any("error" in row for row in rows) else 0)


if __name__ == "__main__":
    main()
