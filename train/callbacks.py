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
    """After every epoch, the student answers the probe greedily: phrasings held out of training
    (recall_val: is the fact known in other words?) and taught questions (recall_train). Exact
    match and contains-answer, by the graders eval uses, go to metrics.jsonl; with `patience`,
    training stops once recall_val has not improved for that many epochs."""

    def __init__(self, probe: dict, mode: str, tokenizer, metrics: Metrics, patience: int | None = None, generating=None, batch_size: int = 16):
        self.probe, self.mode, self.tokenizer, self.metrics = probe, mode, tokenizer, metrics
        self.patience, self.batch_size = patience, batch_size
        self.generating = generating or contextlib.nullcontext  # the backend's switch to inference and back
        turns = [r["messages"][-1]["content"] for group in probe.values() for r in group]
        self.max_new_tokens = max(len(ids) for ids in tokenizer(turns, add_special_tokens=False)["input_ids"]) + 8
        self.best, self.stale = -1.0, 0

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **self.recall(model)}
        if ranks.is_main():
            self.metrics.write(row)
        if row["recall_val"] > self.best:
            self.best, self.stale = row["recall_val"], 0
        else:
            self.stale += 1
        if self.patience and self.stale >= self.patience:
            control.should_training_stop = True

    def recall(self, model) -> dict:
        found, side = {}, self.tokenizer.padding_side
        was_training, self.tokenizer.padding_side = model.training, "left"
        model.eval()
        try:
            with self.generating(model):
                for name, records in (("val", self.probe["held_out"]), ("train", self.probe["taught"])):
                    outputs, _ = generate_counted(model, self.tokenizer, [prompt_messages(r, self.mode) for r in records], self.max_new_tokens, self.batch_size)
                    answers = [(final_answer(out), r["answer"]) for out, r in zip(outputs, records)]
                    found[f"recall_{name}"] = round(sum(exact_match(a, ref) for a, ref in answers) / len(answers), 4)
                    found[f"recall_{name}_contains"] = round(sum(contains_answer(a, ref) for a, ref in answers) / len(answers), 4)
        finally:
            model.train(was_training)
            self.tokenizer.padding_side = side
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
