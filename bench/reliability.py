"""The reliability report: run every fault test (`pytest -m faults`, the slow ones too) and write docs/reliability.md.

Run: .venv/bin/python bench/reliability.py [--quick] [--out docs/reliability.md] [-- extra pytest args]

Each fault test counts what happened (runs that faced the fault, runs that survived it, items
lost, requests answered twice, kills) and hands the figures to tests/reliability.py:record(),
which appends them to the file named by DISTILL_RELIABILITY_LOG. This script sets that variable
to a temporary file, runs pytest with the project's default addopts replaced (so that `slow`
fault tests run too; `--quick` keeps them out), and renders one table per area with totals, the
date, the machine and the pytest command with its wall time. Whatever areas and rows the tests
recorded are reported; a failing test is named in the report and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("runs", "survived", "items_lost", "sent_twice", "kills")
HEADERS = ("runs", "survived", "items lost", "sent twice", "kills")


def run_pytest(log: Path, quick: bool, extra: list[str]) -> tuple[list[str], float, int, str]:
    marker = "faults and not gpu" + (" and not slow" if quick else "")
    cmd = [sys.executable, "-m", "pytest", "tests", "-m", marker, "-o", "addopts=", "--timeout=3600", "-p", "no:cacheprovider", "-q", "-rfE", *extra]
    env = {**os.environ, "DISTILL_RELIABILITY_LOG": str(log), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - started
    sys.stdout.write(done.stdout)
    return cmd, seconds, done.returncode, done.stdout


def read_rows(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    load = ", load average at start {:.1f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}{load}"


def outcome(output: str) -> tuple[str, list[str]]:
    """pytest's closing summary line and the tests it lists as failed or in error."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\b(passed|failed|error|no tests ran)\b", line)), "no summary")
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return summary, failed


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> list[str]:
    out = ["| fault | " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * len(HEADERS)]
    notes = []
    for row in rows:
        mark = ""
        if row.get("note"):
            notes.append(cell(row["note"]))
            mark = f" [{len(notes)}]"
        out.append(f"| {cell(row['fault'])}{mark} | " + " | ".join(str(row.get(k, 0)) for k in FIGURES) + " |")
    totals = {k: sum(row.get(k, 0) for row in rows) for k in FIGURES}
    out.append("| **total** | " + " | ".join(f"**{totals[k]}**" for k in FIGURES) + " |")
    out += [""] + [f"{i}. {note}" for i, note in enumerate(notes, 1)] if notes else []
    return out


def render(rows: list[dict], cmd: list[str], seconds: float, summary: str, failed: list[str], started: datetime) -> str:
    by_area: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_area[row["area"]].append(row)
    totals = {k: sum(row.get(k, 0) for row in rows) for k in FIGURES}
    shown = " ".join(shlex.quote(Path(c).name if i == 0 else c) for i, c in enumerate(cmd))
    lines = [
        "# Reliability",
        "",
        "Faults the tests inject, and what the runs that faced them came through with. Every figure is counted by",
        "the test that produced it (server request logs, output files, checkpoints on disk), never assumed, and",
        "recorded before the test asserts (a failing case lowers its row's figures; the row stays);",
        "`bench/reliability.py` runs the tests and writes the figures above the hand-written sections (edit only those).",
        "",
        "- **runs**: runs that faced the fault; **survived**: of those, the runs that finished (or stopped with one",
        "  clear line) and whose rerun completed with the expected outputs",
        "- **items lost**: items an undisturbed run has and the faced run lacks (records; for training, logged steps)",
        "- **sent twice**: requests the teacher answered although their answer was already stored",
        "- **kills**: SIGKILLs the runs came through",
        "",
        f"Generated {started:%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Command: `DISTILL_RELIABILITY_LOG=<tmp> {shown}` ({seconds / 60:.1f} min wall): {summary}.",
        "",
        "## Totals",
        "",
        "| areas | rows | " + " | ".join(HEADERS) + " |",
        "|---:|---:|" + "---:|" * len(HEADERS),
        f"| {len(by_area)} | {len(rows)} | " + " | ".join(str(totals[k]) for k in FIGURES) + " |",
        "",
    ]
    if failed:
        lines += ["**Failing tests** (their rows, where they recorded any, are in the tables):", ""] + [f"- `{f}`" for f in failed] + [""]
    if not rows:
        lines += ["No fault test recorded a row.", ""]
    for area in sorted(by_area):
        lines += [f"## {area}", ""] + table(by_area[area]) + [""]
    return "\n".join(lines)


# what follows this line in the report is written by hand (what each fault means, what a user sees) and kept on rewrites
HAND_WRITTEN = "<!-- written by hand below: bench/reliability.py keeps it -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the slow fault tests")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md", help="where to write the report")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "reliability.jsonl"
        cmd, seconds, code, output = run_pytest(log, args.quick, args.pytest_args)
        rows = read_rows(log)
    summary, failed = outcome(output)
    kept = args.out.read_text().split(HAND_WRITTEN, 1)[1] if args.out.exists() and HAND_WRITTEN in args.out.read_text() else ""
    args.out.write_text(render(rows, cmd, seconds, summary, failed, started) + ("\n" + HAND_WRITTEN + kept if kept else ""))
    print(f"wrote {args.out}: {len(rows)} rows, pytest: {summary} ({seconds / 60:.1f} min)")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
