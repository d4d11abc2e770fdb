"""Reading + chunking throughput: documents/s of `distill gen`'s ingest in one process, in plain
worker processes, and on a local Ray.

Run: PYTHONPATH=. .venv/bin/python bench/ingest_throughput.py [--files 2000] [--cpus 2] [--repeat 3]
         [--files-per-read 8 64] [--paired 6] [--out results.json]

The corpus: --files generated documents, a quarter each of PDF, HTML, DOCX and Markdown (the
writers of tests/conftest.py), each ~2-3 KB of made-up words in 6-10 paragraphs, in a temporary folder.
single:    generate.ingest.read_all + generate.chunk.chunk_documents in a fresh process, as `distill gen` runs
           them, pinned to one CPU: the rate of one core, which every ratio divides by
           (`single_unpinned`: free to move between cores); a first run warms the imports and the page
           cache, then --repeat timed runs.
processes: the ceiling any scheduler can reach on this machine: --cpus plain processes (multiprocessing,
           started and warmed outside the clock), each reading every cpus-th file of a shuffled list.
ray:       generate.ray_stage.read_files (what `distill gen --ray` runs) on a local Ray started with --cpus
           CPUs, a fresh one for each --files-per-read: `cold` includes starting the worker processes
           (imports, tokenizer load), then --repeat `warm` runs reuse them.
paired:    --paired rounds of single and Ray (the first --files-per-read) back to back, each as its part
           above runs it with one timed run, in alternating order (single first, then Ray first, ...): the
           ratio is taken within each round, so the machine's drift between minutes (10-30% here) falls
           on both sides of it; the median round's ratio is the result.
Ray's runs also record the CPU seconds their warm runs cost, by process (`ray::`: the read workers and
Ray Data's own actors; Ray's daemons; this driver; other), from /proc. Single and Ray runs count how
often their workers were preempted (`preempted_per_s`: involuntary context switches a second, all their
threads together, /proc): on a busy machine each is a core taken away mid-work.
Each part prints its figures the moment it ends (and rewrites --out), so a run stopped by a time limit
keeps what it measured.
Every run must produce the same number of chunks (checked). Ratio per core: rate / (cpus x single rate),
each from the runs' median. The single process runs again at the end (`single_after`), and every ratio is
also given against the median of its runs before and after (`ratio_bracketed`): the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from generate.chunk import chunk_documents
from generate.config import GenConfig, RayConfig
from generate.ingest import discover, read_all
from generate.stage import load_tokenizer

from conftest import write_docx, write_html, write_md, write_pdf

WRITERS = ("pdf", "html", "docx", "md")


def make_corpus(folder: Path, files: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
        for _ in range(3000)
    ]

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 14))).capitalize() + "."

    for i in range(files):
        kind, title = WRITERS[i % 4], f"Topic {i}"
        paragraphs = [" ".join(sentence() for _ in range(3)) for _ in range(rng.randint(6, 10))]
        if kind == "pdf":  # one page of short lines
            write_pdf(folder / f"d{i:05}.pdf", [s for p in paragraphs for s in p.split(". ")][:45])
        elif kind == "html":
            write_html(folder / f"d{i:05}.html", title, paragraphs)
        elif kind == "docx":
            write_docx(folder / f"d{i:05}.docx", title, paragraphs)
        else:
            write_md(folder / f"d{i:05}.md", title, paragraphs)


def timed(work) -> tuple[float, int, int]:
    started = time.perf_counter()
    docs, chunks = work()
    return time.perf_counter() - started, docs, chunks


def summary(runs: list[tuple[float, int, int]]) -> dict:
    seconds = statistics.median(r[0] for r in runs)
    return {
        "docs": runs[0][1],
        "chunks": runs[0][2],
        "seconds": [round(r[0], 2) for r in runs],
        "docs_per_s": round(runs[0][1] / seconds, 1),
    }


@cache
def tokenizer(name: str):
    return load_tokenizer(name)


def read_and_count(cfg: GenConfig, files: list[Path]) -> tuple[int, int]:
    docs, _ = read_all(files, cfg.max_file_mb)
    return len(docs), len(chunk_documents(docs, tokenizer(cfg.tokenizer), cfg.chunk_tokens, cfg.chunk_overlap))


def single(cfg: GenConfig, repeat: int, one_cpu: bool = True) -> dict:
    """One fresh process, as `distill gen` runs (measured in this process, after it had written the corpus,
    the first part ran ~20% slower than the same code at the end); `one_cpu`: pinned to one CPU before it
    loads anything, its tokenizer's threads included: the rate of one core."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_single, (cfg, repeat, one_cpu))


def _single(cfg: GenConfig, repeat: int, one_cpu: bool) -> dict:
    if one_cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    files = discover(cfg.inputs)
    read_and_count(cfg, files)  # imports, tokenizer, page cache
    before = preemptions([os.getpid()])
    runs = [timed(lambda: read_and_count(cfg, files)) for _ in range(repeat)]
    return {**summary(runs), "preempted_per_s": round((preemptions([os.getpid()]) - before) / sum(r[0] for r in runs))}


def _part(args: tuple) -> tuple[int, int]:
    cfg, files = args
    return read_and_count(cfg, files)


def processes(cfg: GenConfig, cpus: int, repeat: int) -> dict:
    files = discover(cfg.inputs)
    random.Random(0).shuffle(files)
    parts = [(cfg, files[i::cpus]) for i in range(cpus)]
    with multiprocessing.get_context("spawn").Pool(cpus) as pool:
        pool.map(_part, [(cfg, p[1][:40]) for p in parts])  # start and warm the workers

        def work() -> tuple[int, int]:
            counts = pool.map(_part, parts)
            return sum(c[0] for c in counts), sum(c[1] for c in counts)

        return summary([timed(work) for _ in range(repeat)])


def on_ray(cfg: GenConfig, cpus: int, repeat: int, files_per_read: int) -> dict:
    """One setting on a fresh local Ray: `cold` includes starting the worker processes."""
    import ray

    from generate.ray_stage import read_files, set_data_context

    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}},
    )
    set_data_context(ray, show_progress=False)
    paths = discover(cfg.inputs)
    run_cfg = cfg.model_copy(update={"ray": RayConfig(files_per_read=files_per_read)})

    def work() -> tuple[int, int]:
        rows = read_files(ray, run_cfg, paths).take_all()
        return sum(1 for r in rows if not r["skipped"]), sum(len(json.loads(r["chunks"])) for r in rows)

    try:
        cold = timed(work)
        before, switches = cpu_seconds(), preemptions(ray_workers())
        runs = [timed(work) for _ in range(repeat)]
        preempted = round((preemptions(ray_workers()) - switches) / sum(r[0] for r in runs))
        return {
            "cold_seconds": round(cold[0], 2),
            **summary(runs),
            "cpu_seconds_warm": cpu_spent(before, cpu_seconds()),
            "preempted_per_s": preempted,  # the read workers' threads, all together
        }
    finally:
        ray.shutdown()


def paired(cfg: GenConfig, cpus: int, rounds: int, files_per_read: int) -> dict:
    """The pinned single process and Ray back to back, `rounds` times, alternating which goes first; each
    side as its own part runs it (a fresh process; a fresh local Ray, warmed by a first run, so no idle Ray
    weighs on the single process), one timed run each. The ratio per core of each round, and their median."""
    results = []
    for i in range(rounds):
        order = ("single", "ray") if i % 2 == 0 else ("ray", "single")
        got = {"first": order[0]}
        for side in order:
            run = single(cfg, 1) if side == "single" else on_ray(cfg, cpus, 1, files_per_read)
            got[side] = {k: run[k] for k in ("docs_per_s", "chunks", "preempted_per_s")}
        assert got["single"]["chunks"] == got["ray"]["chunks"], got
        got["ratio_per_core"] = round(got["ray"]["docs_per_s"] / (cpus * got["single"]["docs_per_s"]), 2)
        print(f"paired round {i + 1}: {json.dumps(got)}", flush=True)
        results.append(got)
    ratios = sorted(r["ratio_per_core"] for r in results)
    return {
        "files_per_read": files_per_read,
        "rounds": results,
        "ratio_median": statistics.median(ratios),
        "ratio_range": [ratios[0], ratios[-1]],
    }


def proc_table() -> Iterator[tuple[Path, str]]:
    """Every process of this machine (Linux /proc): its folder and its command line, arguments space-separated."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            yield proc, (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue


def ray_workers() -> list[int]:
    """This machine's Ray worker processes (`ray::IDLE`, `ray::MapBatches(...)`), not Ray Data's own actors."""
    return [int(proc.name) for proc, cmd in proc_table() if cmd.startswith("ray::") and not cmd.startswith("ray::_")]


def preemptions(pids: list[int]) -> int:
    """Involuntary context switches so far of every thread of these processes."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            total += int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
    return total


KINDS = ("raylet", "gcs_server", "ray::", "log_monitor", "dashboard", "runtime_env", "ingest_throughput")


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (kind, user + system CPU seconds) of every process (Linux /proc): where the warm runs' CPU went,
    Ray's worker processes (`ray::`), its own daemons, and this driver (`ingest_throughput`)."""
    tick, found = os.sysconf("SC_CLK_TCK"), {}
    for proc, cmd in proc_table():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = next((k for k in KINDS if k in cmd), "other")
        found[int(proc.name)] = (kind, (int(fields[11]) + int(fields[12])) / tick)
    return found


def cpu_spent(before: dict, after: dict) -> dict[str, float]:
    spent: dict[str, float] = {}
    for pid, (kind, seconds) in after.items():
        spent[kind] = spent.get(kind, 0.0) + seconds - before.get(pid, (kind, 0.0))[1]
    return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.01}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files-per-read", type=int, nargs="+", default=[8, RayConfig().files_per_read])
    parser.add_argument("--paired", type=int, default=6, help="rounds of single and Ray back to back (0: none)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        make_corpus(Path(tmp), args.files)
        os.sync()  # the corpus's pages on disk before any timing: writeback would slow the first part only
        print(f"corpus: {args.files} files written in {time.perf_counter() - started:.1f} s", flush=True)
        cfg = GenConfig(inputs=[tmp])
        result = {"files": args.files, "cpus": args.cpus, "cpu": cpu_model(), "load_before": os.getloadavg()}
        report(result, "single", single(cfg, args.repeat), args)  # one CPU: the per-core baseline
        report(result, "single_unpinned", single(cfg, args.repeat, one_cpu=False), args)  # as distill gen runs
        report(result, "processes", processes(cfg, args.cpus, args.repeat), args)
        for n in args.files_per_read:  # each setting on its own local Ray, reported as it ends
            report(result, f"files_per_read={n}", on_ray(cfg, args.cpus, args.repeat, n), args, under="ray")
        bracket(result, single(cfg, args.repeat), args)
        if args.paired:
            result["paired"] = paired(cfg, args.cpus, args.paired, args.files_per_read[0])
            print(f"paired: {json.dumps(result['paired'])}", flush=True)
            if args.out:
                args.out.write_text(json.dumps(result, indent=2))
        result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def report(result: dict, name: str, run: dict, args, under: str | None = None) -> None:
    """Store one part's figures in result (under result[under] if given), print them and rewrite --out
    the moment the part ends: a run stopped by a time limit still leaves what it measured."""
    if "single" in result:
        assert run["chunks"] == result["single"]["chunks"], (name, run, result["single"])
        one_core = result["single"]["docs_per_s"]
        if name == "single_unpinned":
            run["vs_one_cpu"] = round(run["docs_per_s"] / one_core, 2)
        else:
            run["ratio_per_core"] = round(run["docs_per_s"] / (args.cpus * one_core), 2)
            unpinned = result.get("single_unpinned", {}).get("docs_per_s")
            if unpinned:  # against the unpinned process's rate, as earlier versions of this bench divided
                run["ratio_vs_unpinned"] = round(run["docs_per_s"] / (args.cpus * unpinned), 2)
    (result.setdefault(under, {}) if under else result)[name] = run
    print(f"{under + ' ' if under else ''}{name}: {json.dumps(run)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def bracket(result: dict, after: dict, args) -> None:
    """The one-core rate measured again after the other parts: this machine's speed drifts between
    minutes (one-core rates of 205-245 documents/s in four invocations within ten minutes), so each
    ratio is also given against the median of the runs before and after it (`ratio_bracketed`)."""
    seconds = statistics.median(result["single"]["seconds"] + after["seconds"])
    one_core = round(after["docs"] / seconds, 1)
    result["single_after"], result["one_core_bracketed"] = after, one_core
    parts = {"processes": result["processes"], **result.get("ray", {})}
    for run in parts.values():
        run["ratio_bracketed"] = round(run["docs_per_s"] / (args.cpus * one_core), 2)
    ratios = ", ".join(f"{name} {run['ratio_bracketed']}" for name, run in parts.items())
    print(f"single_after: {json.dumps(after)}", flush=True)
    print(f"one core, before and after: {one_core} documents/s; ratios per core: {ratios}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
