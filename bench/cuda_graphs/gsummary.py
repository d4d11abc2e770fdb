# ruff: noqa: E501  (an experiment kit's table printing)
"""Issue 26 CUDA-graph call summary: each run's tokens/s, peak GiB, MFU (6N and 4N, 989 TFLOP/s), speed and
memory against the plain TRL run of the same call, the tokens/s of the last 8 steps (after any late graph
recording), per-step loss against distill's default run, the hook's graph/shape counters, and the issue's targets.
Usage: python gsummary.py HOOK_DIR (results-<tag>.json, bench-<tag>.log, metrics-<tag>.jsonl, stats-<tag>.json)."""

import glob
import json
import os
import sys

H = sys.argv[1]
PEAK = 989e12
ORDER = ["trl", "base", "graphs-fixed", "fixed", "graphs-var", "nockpt-1024", "hf-ro-fixed"]
tags = [t for t in ORDER if os.path.exists(f"{H}/bench-{t}.log")]
tags += sorted({os.path.basename(f)[6:-4] for f in glob.glob(f"{H}/bench-*.log")} - set(tags))
runs, params, card = {}, None, None
for t in tags:
    res = None
    if os.path.exists(f"{H}/results-{t}.json"):
        doc = json.load(open(f"{H}/results-{t}.json"))
        params, card = doc["params"], doc["card"]
        res = doc["results"][-1] if doc["results"] else None
        if res and "tokens_per_s" not in res:
            res = None
    if res is None:  # cut off, or failed: the JSON line, or the failure text
        for line in open(f"{H}/bench-{t}.log", errors="replace"):
            if line.startswith('{"tokens_per_s'):
                res = json.loads(line)
    if res is None:
        text = open(f"{H}/bench-{t}.log", errors="replace").read()
        err = [x for x in text.splitlines() if "error" in x.lower()]
        res = {"error": (err[-1] if err else text[-300:]).strip()[:300]}
    runs[t] = res
params = params or 1_172_000_000
print(f"card {card}; params {params / 1e9:.3f}B; MFU 6N/4N against 989 TFLOP/s")


def steps(t):
    f = f"{H}/metrics-{t}.jsonl"
    if not os.path.exists(f):
        return []
    rows = [json.loads(x) for x in open(f) if x.strip()]
    return sorted((r for r in rows if "loss" in r and "num_tokens" in r), key=lambda r: r["step"])


def tail_rate(rows, k=8):
    rows = rows[-(k + 1) :]
    if len(rows) < 2:
        return None
    return (rows[-1]["num_tokens"] - rows[0]["num_tokens"]) / (rows[-1]["time"] - rows[0]["time"])


trl = runs.get("trl", {})
base_rows = steps("base")
base_loss = {r["step"]: r["loss"] for r in base_rows}
print(
    f"{'run':13} {'tok/s':>8} {'last8':>8} {'peakGiB':>8} {'MFU6N':>6} {'MFU4N':>6} {'xTRL':>6} {'memTRL':>7} {'loss@end':>9} {'max|dloss|':>10} {'wall':>5}"
)
for t, r in runs.items():
    if "tokens_per_s" not in r:
        print(f"{t:13} FAILED: {r.get('error') or r.get('error', '')}")
        continue
    tps, peak = r["tokens_per_s"], r["peak_memory_gib"]
    mfu = tps * 6 * params / PEAK
    sp = tps / trl["tokens_per_s"] if trl.get("tokens_per_s") else float("nan")
    mem = peak / trl["peak_memory_gib"] if trl.get("peak_memory_gib") else float("nan")
    rows = steps(t)
    last = tail_rate(rows)
    loss = {x["step"]: x["loss"] for x in rows}
    common = sorted(set(loss) & set(base_loss))
    dl = max((abs(loss[s] - base_loss[s]) for s in common), default=float("nan"))
    end = rows[-1]["loss"] if rows else r.get("final_loss")
    meets = sp >= 3.0 and mem <= 0.5 and mfu >= 0.35
    print(
        f"{t:13} {tps:8.0f} {(f'{last:.0f}' if last else '-'):>8} {peak:8.3f} {mfu:6.1%} {mfu * 4 / 6:6.1%} {sp:6.2f} {mem:7.3f} "
        f"{(f'{end:.4f}' if end is not None else '-'):>9} {dl:10.4f} {r.get('wall_s', 0):5.0f}{'  TARGET MET' if meets else ''}"
    )
print("target: >= 3.0x TRL tokens/s, <= 0.5x TRL peak, >= 35% MFU (6N)")
print("\nper-step loss (distill runs):")
names = [t for t in runs if t != "trl" and steps(t)]
curves = {t: {x["step"]: x["loss"] for x in steps(t)} for t in names}
if names:
    print("step " + " ".join(f"{t:>13}" for t in names))
    for s in sorted(set().union(*[set(c) for c in curves.values()])):
        if s in (1, 2, 5, 10, 15, 20) or s == max(curves[names[0]], default=0):
            print(f"{s:4d} " + " ".join(f"{curves[t].get(s, float('nan')):13.4f}" for t in names))
print("\nhook counters (CUDA graph captures/replays, inductor cudagraph counters, dynamo, fixed shapes):")
for t in names or runs:
    f = f"{H}/stats-{t}.json"
    if os.path.exists(f):
        d = json.load(open(f))
        fs = d.get("fixed_shapes") or {}
        print(
            f"{t:13} graphs {d.get('graphs')} inductor {d.get('inductor')} dynamo {d.get('dynamo_stats')} "
            f"reserved {d.get('max_memory_reserved_gib')} GiB"
            + (
                f" | parts {fs.get('parts')} shapes {fs.get('shapes')} padded/real {fs.get('padded_over_real')} fillers {fs.get('filler_rows')} fallback {fs.get('fallback')}"
                if fs
                else ""
            )
        )
for f in sorted(glob.glob(f"{H}/skipped.txt")):
    print(open(f).read().strip())
