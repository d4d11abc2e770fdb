"""Trainer callbacks of `distill train`: the progress bar (loss, tokens/s, ETA), metrics.jsonl,
and the marker that makes a checkpoint count only once every file of it is on disk.

transformers writes `checkpoint-N/` file by file; a kill in the middle leaves a partial
folder. `COMPLETE` is written atomically after the Trainer has finished the folder, and resume
only ever looks at folders that carry it (`latest_checkpoint`), removing the others. Older
checkpoints are removed only after the new one is marked, each unmarked before its files go
(`remove_checkpoint`): a kill in the middle of a removal never leaves a marked, partial folder.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from common.contract import final_answer, prompt_messages
from common.generation import generate_counted
from common.graders import contains_answer, exact_match
from common.io import write_atomic
from train import ranks

MARKER = "COMPLETE"


def complete_checkpoints(folder: Path) -> list[Path]:
    """The `checkpoint-N` folders in folder that carry the marker, oldest first."""
    return sorted((p for p in folder.glob("checkpoint-*") if (p / MARKER).exists()), key=lambda p: int(p.name.split("-")[-1]))


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete `checkpoint-N` in folder; incomplete ones (killed mid-write) are removed."""
    if not folder.is_dir():
        return None
    for path in folder.glob("checkpoint-*"):
        if not (path / MARKER).exists():
            shutil.rmtree(path, ignore_errors=True)
    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


def remove_checkpoint(path: Path) -> None:
    """Unmark, then remove: a removal cut short leaves a folder resume does not take."""
    (path / MARKER).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def remove_checkpoints(folder: Path) -> None:
    """Remove every checkpoint in folder (a finished run's), each unmarked first, then the folder."""
    for path in folder.glob("checkpoint-*"):
        remove_checkpoint(path)
    shutil.rmtree(folder, ignore_errors=True)


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint complete once every rank has written its part, then keeps the newest `keep`
    complete ones. The rotation is done here, not by the Trainer (save_total_limit), whose rotation
    removes the previous checkpoint before this one is marked: with keep=1 a kill then left none.
    No checkpoint is written after the last step (see on_step_end)."""

    def __init__(self, keep: int):
        self.keep = keep

    def on_step_end(self, args, state, control, **kwargs):
        # transformers also saves after the last step, and a run resumed from that checkpoint trains one
        # step past the end (the end is checked only after a step). The final model is saved anyway: a kill
        # before run.json is written resumes from the checkpoint before and trains the last steps again.
        if state.global_step >= state.max_steps:
            control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        # under torchrun every rank writes its part (rank 0 the weights and optimizer, each rank its RNG
        # state): the marker waits for all of them
        ranks.wait_for_all()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ranks.is_main() and folder.is_dir():
            write_atomic(folder / MARKER, json.dumps({"step": state.global_step, "time": time.time()}) + "\n")
            for old in complete_checkpoints(folder.parent)[: -self.keep]:
                remove_checkpoint(old)


class Metrics(TrainerCallback):
    """Appends every log (loss, lr, grad norm, tokens, tokens/s, eval loss) to metrics.jsonl."""

    def __init__(self, path: Path, resume_step: int = 0, write: bool = True):
        self.path = path
        self.last: tuple[float, float] | None = None  # (time, tokens) of the previous log
        self.rows: list[dict] = []
        if path.exists():  # a resumed run keeps the history up to its checkpoint
            old = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.rows = [r for r in old if r.get("step", 0) <= resume_step]
        # real tokens trained up to the checkpoint (as of its last log), so totals span the whole run
        self.tokens = max((r["num_tokens"] for r in self.rows if "num_tokens" in r), default=0)
        if write:  # rank 0 only, under torchrun; on_log writes on rank 0 only as well
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": round(time.time(), 3)}
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        tokens = logs.get("num_tokens")
        if tokens is not None and "loss" in logs:
            now = time.monotonic()
            if self.last is not None and now > self.last[0]:
                row["tokens_per_s"] = round((tokens - self.last[1]) / (now - self.last[0]), 2)
            self.last = (now, tokens)
        self.write(row)

    def write(self, row: dict) -> None:
        """Append one row to metrics.jsonl (and to `rows`)."""
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


class ProgressBar(TrainerCallback):
    """A rich progress bar on stderr: step, the latest values of `shown` (label -> (metrics.jsonl
    key, format); SFT's loss and tokens/s by default), elapsed and ETA."""

    def __init__(self, metrics: Metrics, enabled: bool = True, shown: dict[str, tuple[str, str]] | None = None, title: str = "train"):
        self.metrics = metrics
        self.shown = shown or {"loss": ("loss", "{:.4f}"), "tok/s": ("tokens_per_s", "{:.0f}")}
        self.bar = Progress(
            TextColumn(f"[bold]{title}"),
            BarColumn(),
            MofNCompleteColumn(),
            *(TextColumn(f"{label} {{task.fields[f{i}]}}") for i, label in enumerate(self.shown)),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar.start()
        blank = {f"f{i}": "-" for i in range(len(self.shown))}
        self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, **blank)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.task is None or not self.metrics.rows:
            return
        row = self.metrics.rows[-1]
        fields = {f"f{i}": form.format(row[key]) for i, (key, form) in enumerate(self.shown.values()) if row.get(key) is not None}
        self.bar.update(self.task, **fields)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.stop()


class RecallProbe(TrainerCallback):
    """At the end of an epoch, the student answers the probe greedily, in one batch where it fits:
    phrasings held out of training (recall_val: is the fact known in other words?) and taught
    questions (recall_train). Exact match and contains-answer, by the graders eval uses, go to
    metrics.jsonl with the probe's seconds (probe_s) and the training seconds before it (train_s).

    `budget` (a share, e.g. 0.1) bounds the probe's time against the training time: the first epoch
    is always probed (that measures a probe's cost), a later one only where the probes so far plus one
    more stay within budget x the training time up to it; every k-th epoch, k set by the measured
    costs, and never the last epoch unless it fits too. None: every epoch. With `patience`, training
    stops once recall_val has not improved for that many probes. best/stale/spent are rebuilt from the
    probe rows metrics.jsonl keeps up to the checkpoint a run resumes from, so a resumed run keeps them.
    """

    def __init__(self, probe: dict, mode: str, tokenizer, metrics: Metrics, patience: int | None = None,
                 generating=None, batch_size: int = 32, budget: float | None = 0.1):  # fmt: skip
        self.probe, self.mode, self.tokenizer, self.metrics = probe, mode, tokenizer, metrics
        self.patience, self.batch_size, self.budget = patience, batch_size, budget
        self.generating = generating or contextlib.nullcontext  # the backend's switch to inference and back
        turns = [r["messages"][-1]["content"] for group in probe.values() for r in group]
        self.max_new_tokens = max(len(ids) for ids in tokenizer(turns, add_special_tokens=False)["input_ids"]) + 8
        self.best, self.stale, self.spent, self.trained, self.last_cost = -1.0, 0, 0.0, 0.0, None
        for row in metrics.rows:  # a resumed run: the probes up to its checkpoint
            if "recall_val" in row:
                self.judge(row["recall_val"])
                self.spent += row.get("probe_s", 0.0)
                self.trained = row.get("train_s", self.trained)
                self.last_cost = row.get("probe_s", self.last_cost)
        self.mark = None  # time.monotonic() where the training time now counted began

    def on_train_begin(self, args, state, control, **kwargs):
        self.mark = time.monotonic()

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.mark is not None:
            self.trained += time.monotonic() - self.mark
        if self.due():
            started = time.monotonic()
            found = self.recall(model)
            cost = time.monotonic() - started
            self.spent, self.last_cost = self.spent + cost, cost
            row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **found,
                   "probe_s": round(cost, 2), "train_s": round(self.trained, 2)}
            if ranks.is_main():
                self.metrics.write(row)
            if self.judge(row["recall_val"]) and self.patience and self.stale >= self.patience:
                control.should_training_stop = True
        self.mark = time.monotonic()

    def due(self) -> bool:
        """Whether this epoch's end gets a probe: always without a budget or before the first probe,
        else when one more probe (costing what the last did) keeps the total within the budget."""
        if self.budget is None or self.last_cost is None:
            return True
        # under torchrun every rank decides alike (each measures its own time): one probing rank makes all probe
        return ranks.anywhere(self.spent + self.last_cost <= self.budget * self.trained)

    def judge(self, recall_val: float) -> bool:
        """Count one probe's held-out recall for early stopping; True when it did not improve."""
        if recall_val > self.best:
            self.best, self.stale = recall_val, 0
            return False
        self.stale += 1
        return True

    def recall(self, model) -> dict:
        found, side = {}, self.tokenizer.padding_side
        was_training, self.tokenizer.padding_side = model.training, "left"
        names = [name for name in ("held_out", "taught") for _ in self.probe[name]]
        records = [r for name in ("held_out", "taught") for r in self.probe[name]]
        conversations = [prompt_messages(r, self.mode) for r in records]
        model.eval()
        try:
            with self.generating(model):  # both sides in one call: one batch where the probe fits in batch_size
                outputs, _ = generate_counted(model, self.tokenizer, conversations, self.max_new_tokens, self.batch_size)
        finally:
            model.train(was_training)
            self.tokenizer.padding_side = side
        for name, key in (("held_out", "val"), ("taught", "train")):
            answers = [(final_answer(out), r["answer"]) for out, r, n in zip(outputs, records, names) if n == name]
            found[f"recall_{key}"] = round(sum(exact_match(a, ref) for a, ref in answers) / len(answers), 4)
            found[f"recall_{key}_contains"] = round(sum(contains_answer(a, r) for a, r in answers) / len(answers), 4)
        return found


class StopOnSignal(TrainerCallback):
    """Ctrl-C (SIGINT): finish the current step, save a checkpoint, stop (`stopped`); a second Ctrl-C
    aborts. A Ctrl-C during the last step lets the run finish: there is nothing left to resume."""

    def __init__(self):
        self.requested = False
        self.stopped = False

    def request(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if ranks.anywhere(self.requested) and state.global_step < state.max_steps:  # every rank stops after the same step
            control.should_save = True
            control.should_training_stop = True
            self.stopped = True


def train_until_stopped(trainer, stop: StopOnSignal, resume_from: Path | None) -> None:
    """trainer.train() (from `resume_from` when given) with Ctrl-C routed to `stop`, which ends the
    run after the current step with a checkpoint; signal handlers live in the main thread only."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, stop.request) if main else None
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
