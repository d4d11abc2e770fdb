"""Does GRPO after SFT help the student: its training correctness reward, and its held-out recall.

  python bench/grpo_quality.py --data runs/demo/data --out runs/grpo-quality \
      --sft "sft" --grpo "grpo sft" --grpo "grpo-lr2e-5 sft lr=2e-5 max_steps=80" --parallel 3

Trains each `--sft "NAME [key=value ...]"` student with `distill train` (the knowledge defaults,
the embedded SmolLM2 student, unless overridden), then each `--grpo "NAME SFT [key=value ...]"`
with `distill grpo --from OUT/SFT`, then evaluates all of them in one `distill eval`
(held-out phrasings and training questions, with bootstrap CIs; the base and the teacher as in the
quickstart). Runs of one stage go `--parallel` at a time (each its own process; a GPU has room
for several 135M students). Every run is the CLI a user types, with --resume: rerunning the same
command skips what is done and continues a run that was killed. Its log is OUT/NAME.log.

Per GRPO run it reports the correctness reward (TRL's `rewards/correctness/mean` over the sampled
completions of each step) in the first and the last quarter of the steps, per epoch, and the change
from the first two epochs' steps to the last two's (95% bootstrap interval over steps), the share of groups
that scored alike, and the steps and seconds; per student, held-out and training-question exact
match and token F1. Written to OUT/results.json and printed as a markdown table.

A step's logged reward is a mean over its few prompts, so it moves with which prompts the step
drew more than with what the policy learned. `--samples K` therefore also measures each student's
**sampled training reward**: K completions for every training prompt, sampled as GRPO samples
them (temperature 1.0, the run's completion length), scored by the GRPO stage's own reward
functions; mean and 95% bootstrap CI over prompts, and for each GRPO run its change from the SFT
student it started from, paired by prompt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EVAL = ("teacher.backend=local", "max_new_tokens=128", "batch_size=16", "train_questions=40")  # the quickstart's eval section (its teacher: the embedded model, open-book)


def distill(out: Path, name: str, args: list[str]) -> dict:
    """One CLI run, logged to OUT/NAME.log; {name, rc, seconds}."""
    started = time.time()
    with open(out / f"{name}.log", "a") as log:
        rc = subprocess.run([sys.executable, "-m", "distill", *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    took = round(time.time() - started, 1)
    print(f"{name}: exit {rc} in {took} s", flush=True)
    return {"name": name, "rc": rc, "seconds": took}


def in_parallel(jobs: list[tuple], parallel: int) -> list[dict]:
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda job: distill(*job), jobs))


def grpo_summary(folder: Path) -> dict:
    """The run's reward at the start and the end, from run.json and the per-step series."""
    record = json.loads((folder / "run.json").read_text())
    m = record["metrics"]
    return {
        "steps": m["steps"], "train_seconds": m["train_seconds"], "lr": record["config"]["lr"],
        "correctness_first_quarter": m["rewards"].get("correctness", {}).get("first"),
        "correctness_last_quarter": m["rewards"].get("correctness", {}).get("last"),
        "correctness_by_epoch": m["by_epoch"].get("correctness"),
        "correctness_change": epoch_change(folder, "rewards/correctness/mean"),
        "reward_first_quarter": m["reward"]["first"], "reward_last_quarter": m["reward"]["last"],
        "zero_advantage_share": m["zero_advantage_share"], "zero_advantage_share_last": m["zero_advantage_share_last"],
        "seconds_per_step": m["seconds_per_step"], "completion_length": m["completion_length"],
    }


def epoch_change(folder: Path, key: str, samples: int = 10000, seed: int = 0) -> dict | None:
    """The last two epochs' worth of steps against the first two epochs' (epochs as run.json's by_epoch
    counts them): difference of the means of `key`, with a 95% bootstrap interval over steps (each
    side resampled on its own). None under 4 epochs."""
    import numpy as np

    from evaluation.stats import interval
    from train.grpo_summary import per_epoch

    epochs = per_epoch([json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()], key)
    if len(epochs) < 4:
        return None
    values, each = sum(epochs, []), 2 * len(epochs[0])  # the first epoch is whole; the last may not be
    first, last = np.array(values[:each]), np.array(values[-each:])
    rng = np.random.default_rng(seed)
    boot = last[rng.integers(0, last.size, (samples, last.size))].mean(1) - first[rng.integers(0, first.size, (samples, first.size))].mean(1)
    lo, hi = interval(boot)
    return {"mean": float(last.mean() - first.mean()), "lo": lo, "hi": hi, "steps_each": each}


def scores(metrics: dict, label: str) -> dict:
    held = metrics["models"].get(label, {}).get("metrics", {})
    taught = metrics.get("train_questions", {}).get("models", {}).get(label, {}).get("metrics", {})

    def ci(stats: dict, name: str):
        s = stats.get(name)
        return [round(s["mean"], 3), round(s["lo"], 3), round(s["hi"], 3)] if s else None

    return {"held_out_exact": ci(held, "exact_match"), "held_out_f1": ci(held, "token_f1"), "train_exact": ci(taught, "exact_match"), "train_f1": ci(taught, "token_f1")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a `distill gen` output directory (the quickstart's: runs/demo/data)")
    p.add_argument("--out", default="runs/grpo-quality")
    p.add_argument("--sft", action="append", help='"NAME [key=value ...]": an SFT student (repeatable; default: "sft", the defaults)')
    p.add_argument("--grpo", action="append", help='"NAME SFT [key=value ...]": a GRPO run from that SFT student (repeatable; default: "grpo sft")')
    p.add_argument("--parallel", type=int, default=1, help="runs of a stage at a time")
    p.add_argument("--eval", nargs="*", default=list(EVAL), help="distill eval key=value overrides")
    p.add_argument("--samples", type=int, default=0, help="completions a training prompt for the sampled training reward (0: not measured)")
    a = p.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sft = [s.split() for s in a.sft or ["sft"]]
    grpo = [g.split() for g in a.grpo or ["grpo sft"]]
    unknown = {g[1] for g in grpo} - {s[0] for s in sft}
    if unknown:
        p.error(f"--grpo starts from unknown SFT runs {sorted(unknown)}; name them with --sft")
    data = str(Path(a.data).resolve())
    from common.models import resolve_model

    resolve_model("embedded")  # converted once here, not by several runs at a time
    runs = in_parallel([(out, s[0], ["train", data, "--resume", "--out", str(out / s[0]), *s[1:]]) for s in sft], a.parallel)
    grpo_runs = [(out, g[0], ["grpo", data, "--resume", "--from", str(out / g[1]), "--out", str(out / g[0]), *g[2:]])
                 for g in grpo]
    runs += in_parallel(grpo_runs, a.parallel)
    students = [str(out / r["name"]) for r in runs if r["rc"] == 0]
    runs.append(distill(out, "eval", ["eval", data, *sum((["-s", s] for s in students), []), "--out", str(out / "eval"), *a.eval]))
    metrics = json.loads((out / "eval" / "metrics.json").read_text()) if (out / "eval" / "metrics.json").is_file() else {"models": {}}
    results = {
        "runs": runs,
        "sft": {s[0]: {"args": s[1:], **scores(metrics, s[0])} for s in sft},
        "grpo": {g[0]: {"from": g[1], "args": g[2:], **scores(metrics, g[0]), **(grpo_summary(out / g[0]) if (out / g[0] / "run.json").is_file() else {})} for g in grpo},
        "base": scores(metrics, "base"),
        "teacher": scores(metrics, "teacher"),
    }
    if a.samples:
        from evaluation.stats import bootstrap_mean

        per_prompt = {r["name"]: sampled_reward(out / r["name"], data, a.samples) for r in runs if r["name"] != "eval" and r["rc"] == 0}
        for name, scores_ in per_prompt.items():
            group = "sft" if name in results["sft"] else "grpo"
            results[group][name]["sampled"] = {k: bootstrap_mean(v) for k, v in scores_.items()}
        for g in grpo:
            if g[0] in per_prompt and g[1] in per_prompt:
                after, before = per_prompt[g[0]], per_prompt[g[1]]
                results["grpo"][g[0]]["sampled_change"] = {k: bootstrap_mean([x - y for x, y in zip(after[k], before[k])]) for k in after}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


def sampled_reward(model_dir: Path, data: str, samples: int, seed: int = 0) -> dict[str, list[float]]:
    """{reward name: per training prompt, the mean of `samples` completions sampled as GRPO samples them}."""
    import torch

    from common.generation import generate
    from evaluation.inference import load_model
    from train.data import read_data_dir, split_and_mode
    from train.grpo import prompt_rows, size_lengths
    from train.grpo_config import GRPOConfig
    from train.rewards import build_rewards

    torch.manual_seed(seed)
    cfg = GRPOConfig(data=data, from_model=str(model_dir))
    model, tokenizer = load_model(str(model_dir))
    source = read_data_dir(data, cfg.split)
    lengths = size_lengths(cfg, tokenizer, source.records, None)
    rows, _ = prompt_rows(source.records, tokenizer, split_and_mode(source, cfg.prompt_mode)[1], lengths["max_prompt_length"])
    asked = [row for row in rows for _ in range(samples)]
    outputs = generate(model, tokenizer, [row["prompt"] for row in asked], lengths["max_completion_length"], batch_size=64, temperature=cfg.temperature)
    rewards, _, _ = build_rewards(cfg, model_dir, lengths["length_budget"], lengths["max_completion_length"])
    columns = {key: [row[key] for row in asked] for key in asked[0] if key != "prompt"}
    completions = [[{"role": "assistant", "content": text}] for text in outputs]
    result = {}
    for reward in rewards:
        scores = reward(prompts=[row["prompt"] for row in asked], completions=completions, **columns)
        result[reward.__name__] = [sum(scores[i : i + samples]) / samples for i in range(0, len(scores), samples)]
    print(f"{model_dir.name}: sampled training reward " + ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in result.items()), flush=True)
    return result


def table(results: dict) -> str:
    def cell(v):
        return "-" if not v else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    def mean_ci(v):
        return "" if not v else f"{v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" if v["lo"] < 0 else f"{v['mean']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]"

    lines = ["| student | held-out exact | held-out F1 | training exact | correctness reward first -> last quarter | epochs 1-2 -> last 2 | sampled training correctness | change from SFT | alike groups | steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in [("base", results["base"]), ("teacher", results["teacher"]), *results["sft"].items(), *results["grpo"].items()]:
        rise = f"{r['correctness_first_quarter']} -> {r['correctness_last_quarter']}" if r.get("correctness_first_quarter") is not None else ""
        alike = f"{r['zero_advantage_share']:.0%}" if r.get("zero_advantage_share") is not None else ""
        sampled, change = r.get("sampled", {}).get("correctness"), r.get("sampled_change", {}).get("correctness")
        lines.append(f"| {name} {' '.join(r.get('args', []))} | {cell(r['held_out_exact'])} | {cell(r['held_out_f1'])} | {cell(r['train_exact'])} | {rise} "
                     f"| {mean_ci(r.get('correctness_change'))} | {mean_ci(sampled)} | {mean_ci(change)} | {alike} | {r.get('steps', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
