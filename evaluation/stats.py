"""Means with 95% bootstrap confidence intervals, and "gap closed", over per-question scores.

The percentile bootstrap: resample the questions with replacement `samples` times, take the
statistic of every resample, report the 2.5th and 97.5th percentiles. "Gap closed" is a paired
bootstrap: the same resampled questions for student, base and teacher.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95


def interval(stats: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_mean(values: list[float | None], samples: int = 1000, seed: int = 0) -> dict:
    """{'mean', 'lo', 'hi', 'n'} of the values that are not None (n = 0: all NaN)."""
    data = np.array([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, data.size, size=(samples, data.size))
    lo, hi = interval(data[picks].mean(axis=1))
    return {"mean": float(data.mean()), "lo": lo, "hi": hi, "n": int(data.size)}


def gap_closed(
    student: list[float | None],
    base: list[float | None],
    teacher: list[float | None],
    samples: int = 1000,
    seed: int = 0,
) -> dict:
    """(student - base) / (teacher - base) on the questions all three were graded on, with a
    paired bootstrap interval; mean None when the teacher does no better than the base (no gap to close)."""
    rows = [(s, b, t) for s, b, t in zip(student, base, teacher) if None not in (s, b, t)]
    if not rows:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    data = np.array(rows, dtype=float)
    means = data.mean(axis=0)
    if means[2] <= means[1] or np.isclose(means[2], means[1]):  # no gap to close
        return {"mean": None, "lo": None, "hi": None, "n": len(rows)}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(rows), size=(samples, len(rows)))
    boot = data[picks].mean(axis=1)  # (samples, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (boot[:, 0] - boot[:, 1]) / (boot[:, 2] - boot[:, 1])
    lo, hi = interval(ratios)
    return {"mean": float((means[0] - means[1]) / (means[2] - means[1])), "lo": lo, "hi": hi, "n": len(rows)}
