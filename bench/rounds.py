"""Runs in alternated order, shared by bench/train_throughput.py and bench/grpo_throughput.py: the schedule of
rounds (each run takes each place; warm-up rounds numbered below 0 and not counted), TRL's run that each ratio is
made against, the medians over the counted rounds (a failed run counts as 0) and the exit once any run failed."""

from __future__ import annotations


def label(result: dict) -> str:
    """A run's name in the summary and the failure message: impl, method and extra settings."""
    return " ".join(x for x in (result["impl"], result.get("method"), *(result.get("extra") or ())) if x)


def schedule(runs: list, rounds: int, discard: int) -> list[tuple[int, list]]:
    """(round, its runs in order): the set rotated by the round's index, so each run takes each place in
    turn; the first `discard` rounds are numbered below 0 (warm-up, not counted)."""
    n = len(runs)
    return [(k - discard, runs[k % n :] + runs[: k % n]) for k in range(discard + rounds)]


def trl_of(results: list[dict], run: dict) -> dict | None:
    """TRL's run of this run's method in this run's round: the reference its ratio is made against (the plain one,
    with no `attention=` of its own, where the set holds several)."""
    same = [b for b in results
            if b.get("impl") == "trl" and b.get("method") == run.get("method") and b["round"] == run["round"]]
    return next((b for b in same if not b.get("extra")), same[0] if same else None)


def exit_if_failed(results: list[dict]) -> None:
    """After the report and results file are written: a non-zero exit when any run failed (its row says why)."""
    failed = [label(r) for r in results if "error" in r]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(results)} runs failed: {'; '.join(failed)}")


def summarize(results: list[dict], rate: str = "tokens_per_s") -> dict:
    """Per run: its median `rate` over the counted rounds (a failed run as 0) and its median ratio to TRL's run
    of the same method in the same round (a round where either failed counts as 0)."""
    from statistics import median

    counted = [r for r in results if r["round"] >= 0]
    runs: dict[str, list[dict]] = {}
    for r in counted:
        runs.setdefault(label(r), []).append(r)
    summary = {}
    for name, mine in runs.items():
        each = [r.get(rate) or 0.0 for r in mine]
        ratios = []
        for r in mine:
            ref = trl_of(counted, r)
            if ref is not None and ref is not r:  # a TRL run with another attention is measured against the plain one
                ratios.append((r.get(rate) or 0.0) / ref[rate] if ref.get(rate) else 0.0)
        summary[name] = {rate: median(each), "each": [round(x, 3) for x in each],
                         "vs_trl": median(ratios) if ratios else None}
    return summary
