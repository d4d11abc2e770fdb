"""A GRPO run in numbers, for run.json and the CLI's summary line: each reward at the start and the end
and per epoch, groups that scored alike, lengths, rates, and where a step's time went."""

from __future__ import annotations

import math

from train import recipe


def mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def per_epoch(logged: list[dict], key: str) -> list[list[float]]:
    """`key`'s values of the logged steps, epoch by epoch (the last epoch may be partial)."""
    epochs: dict[int, list[float]] = {}
    for row in logged:
        if row.get(key) is not None:
            epochs.setdefault(math.ceil(row["epoch"] - 1e-9), []).append(row[key])
    return [values for _, values in sorted(epochs.items())]


def by_epoch(logged: list[dict], key: str) -> list[float]:
    """`key`'s mean over each epoch's logged steps. Every epoch samples the same prompts, so epochs
    compare, where a step's few prompts mostly show which prompts it drew."""
    return [mean(values) for values in per_epoch(logged, key)]


def summary(trainer, rows: list[dict], seconds: float) -> dict:
    """The run in numbers: each reward component at the start and the end (mean of the first and last
    quarter of the logged steps) and per epoch, zero-advantage groups, lengths, rates and where a step's time went."""
    logged = [r for r in rows if "reward" in r]
    quarter = max(len(logged) // 4, 1)
    first, last, steady = logged[:quarter], logged[-quarter:], logged[quarter:] or logged
    names = sorted({k.split("/")[1] for r in logged for k in r if k.startswith("rewards/") and k.endswith("/mean")})

    def over(part, key):
        return mean([r[key] for r in part if r.get(key) is not None])

    return {
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 4),
        "reward": {"first": over(first, "reward"), "last": over(last, "reward")},
        "rewards": {
            name: {"first": over(first, f"rewards/{name}/mean"), "last": over(last, f"rewards/{name}/mean")}
            for name in names
        },
        "by_epoch": {"reward": by_epoch(logged, "reward")}
        | {name: by_epoch(logged, f"rewards/{name}/mean") for name in names},
        "zero_advantage_share": over(logged, "alike_share"),
        "zero_advantage_share_last": over(last, "alike_share"),
        "completion_length": over(logged, "completions/mean_length"),
        "clipped_share": over(logged, "completions/clipped_ratio"),
        "kl": over(last, "kl"),
        "tokens": int(max((r.get("num_tokens", 0) for r in rows), default=0)),
        "tokens_per_s": over(steady, "tokens_per_s"),  # prompt + completion tokens trained per second
        "generated_tokens_per_s": over(steady, "generated_tokens_per_s"),
        "seconds_per_step": over(steady, "step_time"),
        "generate_seconds_per_step": over(steady, "generate_s"),
        "update_seconds_per_step": over(steady, "update_s"),
        "train_seconds": round(seconds, 2),
        **recipe.peak_memory(),
    }
