"""Where the quickstart's time goes: `make demo`'s stages timed, and inside train the step time, the
recall probe's time and tokens/s.

    .venv/bin/python bench/quickstart.py [--config examples/quickstart.yaml] [--out runs/bench-quickstart]
        [--no-avx512] [--report FILE] [stage.key=value ...]

Writes the demo corpus (examples/make_corpus.py) into OUT/docs and runs `distill run CONFIG` in a
subprocess with every stage's output under OUT (removed first: a fresh run, no gen cache), then reads
what the run wrote: each stage's wall time (stage.json), train's steps, seconds per step, tokens/s
(run.json), the recall probe's count and seconds (metrics.jsonl: probe_s), its setup and save
seconds (the rest), and eval's held-out and training-question exact match of base and student with
their 95% intervals. Prints a Markdown table (also to --report) headed by the CPU model, its flags
(AVX2, AVX-512, AVX512-BF16, AMX), torch's CPU capability and the load average before and after.

--no-avx512 emulates a CPU without AVX-512 on one that has it: ATEN_CPU_CAPABILITY=avx2 for torch's
kernels (and oneDNN's, MKL's) and train.dtype=float32 (the quickstart pins float32 anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu() -> dict:
    """The CPU model, which of FLAGS it has, and its core count (from /proc/cpuinfo where there is one)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or "unknown", "flags": [], "cores": os.cpu_count()}
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown"
    )
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"model": model, "flags": [f for f in FLAGS if f in flags], "cores": os.cpu_count()}


def capability(env: dict) -> str:
    """torch.backends.cpu.get_cpu_capability() under env (a subprocess: the variable is read at import)."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    return done.stdout.strip() or "unknown"


def run_demo(a, env: dict) -> float:
    """The corpus, then `distill run` with every output under a.out; returns the wall seconds of both."""
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_corpus.py"), str(out / "docs")], check=True, env=env)
    paths = [
        f"gen.inputs=[{out / 'docs'}]",
        f"gen.out={out / 'data'}",
        f"train.out={out / 'student'}",
        f"eval.out={out / 'eval'}",
    ]
    extra = ["train.dtype=float32"] if a.no_avx512 else []
    cmd = [sys.executable, "-m", "distill", "run", a.config, *paths, *extra, *a.overrides]
    with (out / "run.log").open("w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def train_numbers(folder: Path) -> dict:
    """Steps, seconds per step, tokens/s, the probe's count and seconds, setup + save seconds."""
    run = read_json(folder / "run.json").get("metrics", {})
    path = folder / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    probes = [r for r in rows if "probe_s" in r]
    steps = [r for r in rows if "loss" in r]
    probe_s = sum(r["probe_s"] for r in probes)
    stepping = 0.0
    if len(steps) > 1:  # from the first logged step to the last, less the probes between them
        inside = sum(r["probe_s"] for r in probes if steps[0]["step"] <= r["step"] < steps[-1]["step"])
        stepping = steps[-1]["time"] - steps[0]["time"] - inside
    return {
        "steps": run.get("steps"),
        "epochs": run.get("epochs"),
        "step_s": round(stepping / (steps[-1]["step"] - steps[0]["step"]), 2) if len(steps) > 1 else None,
        "tokens": run.get("tokens"),
        "tokens_per_s": run.get("tokens_per_s"),
        "train_seconds": run.get("train_seconds"),
        "probes": len(probes),
        "probe_s": round(probe_s, 1),
        "probe_share": round(probe_s / run["train_seconds"], 3) if run.get("train_seconds") else None,
        "recall": [(r["epoch"], r["recall_val"], r["recall_train"]) for r in probes],
    }


def scores(metrics: dict, metric: str = "exact_match") -> dict:
    """{section: {model: "0.235 [0.059, 0.412]"}}: `metric` on held-out and training questions."""
    found = {}
    for section, part in (
        ("held-out phrasings", metrics),
        ("training questions", metrics.get("train_questions") or {}),
    ):
        for name, model in part.get("models", {}).items():
            em = model.get("metrics", {}).get(metric)
            if em and em.get("lo") is not None:
                found.setdefault(section, {})[name] = f"{em['mean']:.3f} [{em['lo']:.3f}, {em['hi']:.3f}] (n={em['n']})"
    return found


def report(a, machine: dict, cap: str, loads: tuple, total: float, cpu_s: float) -> str:
    out = Path(a.out)
    folders = (("gen", "data"), ("train", "student"), ("eval", "eval"))
    stages = {s: read_json(out / d / "stage.json").get("wall_time_s") for s, d in folders}
    train = train_numbers(out / "student")
    counts = read_json(out / "data" / "manifest.json").get("counts", {})
    lines = [
        f"CPU: {machine['model']}, {machine['cores']} cores, flags {' '.join(machine['flags']) or 'none of those'}; "
        f"torch CPU capability {cap}{' (--no-avx512: avx2, float32)' if a.no_avx512 else ''}; "
        f"load average before {loads[0]:.1f}, after {loads[1]:.1f}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| stage | wall s |",
        "|---|---:|",
        *(f"| {s} | {v:.0f} |" for s, v in stages.items() if v is not None),
        f"| total (corpus + `distill run`) | {total:.0f} |",
        f"| CPU seconds of the run (user + system, all processes) | {cpu_s:.0f} |",
        "",
        f"data: {json.dumps(counts)}",
        f"train: {train['steps']} steps, {train['epochs']} epochs, {train['step_s']} s/step, "
        f"{train['tokens']} tokens at "
        f"{train['tokens_per_s']} tokens/s; recall probe {train['probes']}x, {train['probe_s']} s "
        f"({(train['probe_share'] or 0):.1%} of {train['train_seconds']} s in train); "
        f"probe (epoch, held-out, taught): {train['recall']}",
    ]
    metrics = read_json(out / "eval" / "metrics.json")
    for metric in ("exact_match", "token_f1"):
        for section, models in scores(metrics, metric).items():
            lines.append(f"{section} {metric}: " + "; ".join(f"{m} {v}" for m, v in models.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "examples" / "quickstart.yaml"))
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-quickstart"))
    p.add_argument(
        "--no-avx512",
        action="store_true",
        help="emulate a CPU without AVX-512: torch kernels at avx2, training in float32",
    )
    p.add_argument("--report", help="also write the table to this file")
    p.add_argument("overrides", nargs="*", help="stage.key=value, as on `distill run`")
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if a.no_avx512:  # torch's own kernels, oneDNN's and MKL's (read when torch is imported)
        env.update(ATEN_CPU_CAPABILITY="avx2", DNNL_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    machine, cap = cpu(), capability(env)
    before = os.getloadavg()[0]
    total = run_demo(a, env)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = report(a, machine, cap, (before, os.getloadavg()[0]), total, children.ru_utime + children.ru_stime)
    print(text)
    if a.report:
        Path(a.report).write_text(text)


if __name__ == "__main__":
    main()
