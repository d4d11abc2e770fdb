"""The spread of the GRPO learning test (tests/test_grpo.py::test_format_reward_rises) over seeds and CPUs.

For each seed: the test's world (tiny model, short data, the SFT student fine-tuned in rounds until its sampled
format rate p0 lies in the band, tests/grpo_world.py), then the test's GRPO run (LEARNING) and the same run with
the update disabled (lr 1e-9); prints p0, the SFT rounds, the format reward by epoch and z per seed, one JSON line
each, then a summary: the share of learned runs with z > Z_LEARNED and of disabled runs with z > Z_LEARNED.

    .venv/bin/python bench/grpo_test_spread.py --seeds 10 --jobs 1                 # this CPU's own kernels
    .venv/bin/python bench/grpo_test_spread.py --seeds 10 --jobs 1 --isa avx2      # emulate a CPU without AVX-512
    .venv/bin/python bench/grpo_test_spread.py --seeds 16 --jobs 16 --out spread.jsonl   # a 16-core host

Every seed runs in its own process with one thread (OMP_NUM_THREADS=1, as the tests run); --jobs runs that many at
once. --isa avx2 sets ATEN_CPU_CAPABILITY, DNNL_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS before torch is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISA = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
DISABLED_LR = 1e-9


def one_seed(seed: int, args) -> dict:
    """The world of `seed` and its learning runs (in this process; torch already imported under the ISA)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    if args.worlds:
        return runs(seed, args, args.worlds)
    with tempfile.TemporaryDirectory(prefix=f"grpo-spread-{seed}-") as folder:
        return runs(seed, args, Path(folder))


def world(seed: int, root: Path) -> dict:
    """The test's world for `seed`, built under `root` (or read from there: --worlds keeps them)."""
    import grpo_world as gw
    from trainkit import tiny_model

    done = root / "world.json"
    if done.exists():
        return json.loads(done.read_text())
    started = time.time()
    model = tiny_model(root / "tiny", seed=seed)
    data = gw.short_data(root / "data", seed=seed)
    student, rounds = gw.student(root, model, data, seed=seed)
    found = {"data": str(data), "student": str(student), "p0_rounds": rounds, "p0": rounds[-1],
             "world_s": round(time.time() - started)}
    done.write_text(json.dumps(found))
    return found


def runs(seed: int, args, folder: Path) -> dict:
    import torch

    from train.grpo import run_grpo
    from train.grpo_config import GRPOConfig

    import grpo_world as gw
    from trainkit import metrics

    torch.set_num_threads(1)
    isa = torch.backends.cpu.get_cpu_capability()
    root = folder / f"{isa}-{seed}"
    root.mkdir(parents=True, exist_ok=True)
    result = {"seed": seed, "isa": isa}
    try:
        result.update(world(seed, root))
    except AssertionError as e:
        return {**result, "error": str(e)}
    learning = {**gw.LEARNING, **json.loads(args.set)}
    result["learning"] = learning
    for mode in args.modes.split(","):
        started, out = time.time(), root / f"{mode}-{time.time_ns()}"
        lr = learning["lr"] if mode == "learned" else DISABLED_LR
        cfg = GRPOConfig(data=result["data"], from_model=result["student"], out=str(out), backend="hf", seed=seed,
                         rewards={"format": 1.0}, **{**learning, "lr": lr})
        run_grpo(cfg, show_progress=False)
        rows = [r for r in metrics(out) if "reward" in r]
        first, last, z = gw.epoch_rise(rows, "rewards/format")
        result[mode] = {"by_epoch": [round(first, 3), round(last, 3)], "epoch_z": round(z, 2),
                        "steps": [round(r["rewards/format/mean"], 2) for r in rows], "s": round(time.time() - started)}
        before, after, z = gw.rise(Path(result["student"]), out, Path(result["data"]), seed)
        result[mode]["rise"] = [round(before, 3), round(after, 3), round(z, 2)]
    return result


def launch(seed: int, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **ISA.get(args.isa, {})}
    cmd = [sys.executable, __file__, "--one", str(seed), "--modes", args.modes, "--set", args.set]
    if args.worlds:
        cmd += ["--worlds", str(args.worlds)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"seed": seed, "error": done.stderr[-2000:]}
    return json.loads(lines[-1])


def summary(results: list[dict], z_learned: float) -> dict:
    out = {"seeds": len(results), "errors": sum("error" in r for r in results), "z_learned": z_learned}
    for mode in ("learned", "disabled"):
        zs = sorted(r[mode]["rise"][2] for r in results if mode in r)
        if zs:
            out[mode] = {"z": zs, "above": sum(z > z_learned for z in zs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (with --first)")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, one process (one thread) each")
    parser.add_argument("--isa", choices=["native", *ISA], default="native")
    parser.add_argument("--modes", default="learned,disabled", help="learned, disabled (lr 1e-9), or both")
    parser.add_argument("--out", type=Path, help="also append the JSON lines here")
    parser.add_argument("--worlds", type=Path, help="keep each seed's world (and runs) here, and reuse it")
    parser.add_argument("--set", default="{}", help="JSON overriding the learning run's settings (LEARNING)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_seed(args.one, args)), flush=True)
        return
    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(lambda s: launch(s, args), range(args.first, args.first + args.seeds)):
            results.append(result)
            line = json.dumps(result)
            print(line, flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(line + "\n")
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from grpo_world import Z_LEARNED

    print(json.dumps(summary(results, Z_LEARNED)), flush=True)


if __name__ == "__main__":
    main()
