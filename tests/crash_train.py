"""`distill train` in a crash loop: a tiny random model trained on CPU in a subprocess, SIGKILLed, rerun with
`--resume`, killed again, until a run completes; after every kill the newest checkpoint marked
COMPLETE must load, and the finished run must end where an uninterrupted run ends.

    loop = TrainLoop(data, model, tmp_path, seed)
    loop.straight()                          # the uninterrupted run (in-process)
    loop.round(kills=3)                      # kill, resume, ... until a run completes
    loop.tally()

Kill moments (seeded RNG): `write` runs the CLI under tests/crashpoints.py, which kills it in the
middle of the N-th write to the output directory (a file cut short, a folder half removed, a
marker or run.json not yet in place; N drawn over the writes left in the run, the final clean-up
included);
`training` kills from outside at a random moment after the launch's first new training step;
`starting` kills from outside at a random moment before it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from distill.cli import main

from crash_gen import ENV, next_mode

WRAPPER = Path(__file__).parent / "crashpoints.py"
# what tests/crashpoints.py counts in a LoRA run: at the start, per checkpoint (its steps' metrics rows,
# its files, marker and rotation included), and after the last one (model, loss.png, run.json, clean-up)
WRITES_AT_START, WRITES_PER_CHECKPOINT, WRITES_AT_END = 2, 15, 13
STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")


@dataclass
class TrainTally:
    launches: int = 0
    kills: int = 0
    by_mode: Counter = field(default_factory=Counter)
    rounds: int = 0
    survived: int = 0  # rounds whose finished run equals the uninterrupted one (steps, losses, adapter)
    unusable: list = field(default_factory=list)  # after a kill, the newest COMPLETE checkpoint did not load: why
    failed: list = field(default_factory=list)  # reruns that failed (their round ends there, not survived): why
    progress_lost: int = 0  # kills after which no checkpoint was left although one was there before
    steps_lost: int = 0  # logged steps of the uninterrupted run missing from (or doubled in) a finished run's metrics.jsonl
    loss_diff: float = 0.0  # largest |final loss - uninterrupted final loss|
    adapter_diff: float = 0.0  # largest |weight - uninterrupted weight| of the final adapters


class TrainLoop:
    def __init__(self, data: Path, model: Path, root: Path, seed: int, steps: int = 8, save_steps: int = 2, keeps: tuple[int, ...] = (2,), weights: dict | None = None):
        self.data, self.model, self.root = data, model, root
        self.steps, self.save_steps, self.keeps, self.keep = steps, save_steps, keeps, keeps[0]  # keep_checkpoints, round by round
        self.rng = random.Random(seed)
        self.weights = weights or {"write": 0.6, "training": 0.25, "starting": 0.15}
        self.tally_ = TrainTally()
        self.t_ready: float | None = None  # launch -> its first new training step (the shortest seen)
        self.rounds = 0

    def args(self, out: Path) -> list[str]:
        return [
            "train", str(self.data), "--out", str(out), "--model", str(self.model), "--backend", "hf", "--lr", "5e-3", "--batch-size", "4",
            "--max-steps", str(self.steps), "--resume", "-q", f"save_steps={self.save_steps}", f"keep_checkpoints={self.keep}", "seed=0", "threads=1",
        ]  # fmt: skip

    def straight(self) -> None:
        """The uninterrupted run, in-process (--resume on an empty directory starts afresh)."""
        self.ref = self.root / "straight"
        started = time.monotonic()
        try:
            main(self.args(self.ref))
        except SystemExit as done:
            assert done.code in (0, None)
        self.t_train = time.monotonic() - started
        self.ref_run = json.loads((self.ref / "run.json").read_text())

    def round(self, kills: int, modes: list[str] | None = None) -> int:
        """A fresh output directory, killed up to `kills` times (modes drawn, or `modes` in order; `write@N:REGEX`
        names the crash point), then resumed to completion; returns the kills that landed."""
        self.keep = self.keeps[self.rounds % len(self.keeps)]
        self.rounds += 1
        out = self.root / f"round{self.rounds}"
        landed = 0
        while True:
            mode = next_mode(self.rng, self.weights, landed, kills, modes)
            killed = self.launch(out, mode)
            if killed is None:
                return landed
            if not killed:
                self.finished(out)
                return landed
            landed += 1

    # ------------------------------------------------------------ one launch

    def launch(self, out: Path, mode: str | None) -> bool | None:
        """One run of the CLI, killed as `mode` says (None: never); True if a kill landed, None if the run failed."""
        before, _ = newest_checkpoint(out)
        env = dict(ENV)
        mode, _, point = (mode or "").partition("@")  # write@N:REGEX names the crash point
        if mode == "write":
            env["DISTILL_CRASH_AT"] = point or self.crash_point(before)
        self.tally_.launches += 1
        with tempfile.TemporaryFile() as err:
            started, wall = time.monotonic(), time.time()
            proc = subprocess.Popen([sys.executable, str(WRAPPER), *self.args(out)], env=env, stdout=subprocess.DEVNULL, stderr=err)
            at = self.kill_moment(mode, proc, out, started, wall) if mode in ("training", "starting") else None
            while at is not None and proc.poll() is None and time.monotonic() < at:
                time.sleep(0.005)
            if at is not None and proc.poll() is None:
                proc.kill()
            proc.wait(timeout=900)
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if proc.returncode == 0:
            return False
        if proc.returncode != -9:
            self.tally_.rounds += 1
            self.tally_.failed.append(f"after {self.tally_.by_mode} kills, exit {proc.returncode}: {stderr.strip().splitlines()[-1][:300]}")
            return None
        self.tally_.kills += 1
        self.tally_.by_mode[mode] += 1
        after, problem = newest_checkpoint(out)
        if problem:
            self.tally_.unusable.append(f"{mode} kill: {problem}")
        if before and after is None and not (out / "run.json").exists():
            self.tally_.progress_lost += 1
        return True

    def crash_point(self, newest: int | None) -> str:
        """A write to die in, drawn over the writes left in the run (the final clean-up is the last); no
        checkpoint is written after the last step."""
        left = max(0, (self.steps - 1 - (newest or 0)) // self.save_steps)
        return str(self.rng.randint(1, WRITES_AT_START + WRITES_PER_CHECKPOINT * left + WRITES_AT_END))

    def kill_moment(self, mode: str, proc, out: Path, started: float, wall: float) -> float | None:
        if mode == "starting":
            return started + self.rng.uniform(0, self.t_ready or 5.0)
        while not any(r.get("time", 0) >= wall for r in logged(out)):  # training: wait for this launch's first step
            if proc.poll() is not None:
                return None
            time.sleep(0.02)
        now = time.monotonic()
        self.t_ready = min(self.t_ready or 1e9, now - started)
        return now + self.rng.uniform(0, self.t_train / 2)

    # ------------------------------------------------------------ figures

    def finished(self, out: Path) -> None:
        from safetensors.torch import load_file

        tally = self.tally_
        tally.rounds += 1
        run = json.loads((out / "run.json").read_text())
        steps = Counter(r["step"] for r in logged(out) if "loss" in r)
        ref_losses = {r["step"]: r["loss"] for r in logged(self.ref) if "loss" in r}
        ref_steps = Counter(ref_losses.keys())
        tally.steps_lost += sum((ref_steps - steps).values()) + sum((steps - ref_steps).values())
        losses = {r["step"]: r["loss"] for r in logged(out) if "loss" in r}
        loss_diff = max(abs(losses.get(s, float("inf")) - loss) for s, loss in ref_losses.items())
        ref_w, got_w = load_file(self.ref / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
        adapter_diff = max((got_w[k] - ref_w[k]).abs().max().item() for k in ref_w) if ref_w.keys() == got_w.keys() else float("inf")
        tally.loss_diff, tally.adapter_diff = max(tally.loss_diff, loss_diff), max(tally.adapter_diff, adapter_diff)
        same = run["status"] == "done" and run["metrics"]["steps"] == self.steps and loss_diff <= 2e-3 and adapter_diff <= 1e-3
        tally.survived += same and not (out / "checkpoints").exists()

    def tally(self) -> TrainTally:
        return self.tally_


def logged(out: Path) -> list[dict]:
    """metrics.jsonl's rows; a row being appended right now is left out."""
    path = out / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def newest_checkpoint(out: Path) -> tuple[int | None, str | None]:
    """(step of the newest checkpoint marked COMPLETE, why it does not load or None): what --resume would pick."""
    import torch
    from safetensors.torch import load_file

    marked = [p for p in (out / "checkpoints").glob("checkpoint-*") if (p / "COMPLETE").exists()]
    if not marked:
        return None, None
    newest = max(marked, key=lambda p: int(p.name.split("-")[-1]))
    step = int(newest.name.split("-")[-1])
    try:
        load_file(newest / "adapter_model.safetensors")
        json.loads((newest / "adapter_config.json").read_text())
        for name in STATE_FILES:
            torch.load(newest / name, weights_only=False)
        state = json.loads((newest / "trainer_state.json").read_text())
        assert state["global_step"] == step, f"trainer_state.json says step {state['global_step']}"
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return step, f"{newest.name}: {type(exc).__name__}: {str(exc)[:200]}"
    return step, None
