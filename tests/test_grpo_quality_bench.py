"""bench/grpo_quality.py's reading of a GRPO run: the change of a reward from the first two epochs to the last two."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from grpo_quality import epoch_change

KEY = "rewards/correctness/mean"


def run_folder(tmp_path: Path, values: list[float]) -> Path:
    """A metrics.jsonl as the GRPO stage writes it: one row a step (4 steps an epoch), then the trainer's closing row without rewards."""
    rows = [{"step": i + 1, "epoch": (i + 1) / 4, KEY: v, "reward": v} for i, v in enumerate(values)] + [{"step": len(values), "train_runtime": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_a_rising_reward_has_an_interval_above_zero(tmp_path):
    values = [0.30, 0.28, 0.33, 0.31] * 2 + [0.35] * 8 + [0.44, 0.40, 0.46, 0.42] * 2  # 6 epochs of 4 steps
    change = epoch_change(run_folder(tmp_path, values), KEY)
    assert change["steps_each"] == 8
    assert abs(change["mean"] - (0.43 - 0.305)) < 1e-9 and 0 < change["lo"] < change["mean"] < change["hi"]


def test_a_flat_reward_has_an_interval_across_zero(tmp_path):
    values = [0.80, 0.86, 0.78, 0.84] * 5
    change = epoch_change(run_folder(tmp_path, values), KEY)
    assert change["lo"] < 0 < change["hi"]


def test_under_four_epochs_there_is_no_change(tmp_path):
    assert epoch_change(run_folder(tmp_path, [0.5] * 12), KEY) is None
