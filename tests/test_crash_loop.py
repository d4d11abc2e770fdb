"""Crash loops (issue 14): `distill gen` and `distill train` SIGKILLed at random moments and rerun until
they finish; the outputs equal an uninterrupted run's, no stored answer is asked for again, and
after every kill of `train` the newest checkpoint on disk loads. The short versions (a few
kills at chosen moments) run by default; the long ones (50 kills and more) are `slow`. Every kill schedule comes from a seeded RNG:
the seed is printed (`-s`) and can be set with DISTILL_CRASH_SEED to replay a schedule.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from common.errors import UserError

from crash_gen import GenLoop
from crash_train import TrainLoop
from openai_server import FakeOpenAI, make_docs
from reliability import record
from trainkit import data_dir, tiny_model

pytestmark = pytest.mark.faults


def crash_seed() -> int:
    seed = int(os.environ.get("DISTILL_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"crash loop seed: {seed} (DISTILL_CRASH_SEED={seed} replays the kill schedule)")
    return seed


def gen_crash_loop(tmp_path, seed: int, docs: int, paragraphs: int, kills: int, max_delay: float, modes: list[str] | None = None):
    make_docs(tmp_path / "docs", docs=docs, paragraphs=paragraphs, seed=seed)
    loop = GenLoop(tmp_path / "docs", tmp_path, seed, concurrency=8, max_delay=max_delay)
    started = time.monotonic()
    with FakeOpenAI(loop.script) as server:
        loop.reference(server)
        landed = 0
        while landed < kills:
            landed += loop.round(server, kills - landed, modes[landed:] if modes else None)
        tally = loop.tally(server)
    return loop, tally, time.monotonic() - started


def check_and_record(loop: GenLoop, tally, seconds: float, seed: int, fault: str) -> None:
    where = f"seed {seed}: {tally}"
    note = (
        f"seed {seed}; {tally.launches} launches in {seconds:.0f} s, kills by phase {dict(tally.by_mode)}; "
        f"answers lost in flight and asked again: {tally.lost_in_flight} (sent by the server, the process killed before storing them; "
        f"at most {tally.lost_at_one_kill} at one kill, at --concurrency 8): unavoidable without server-side idempotency, so not counted as "
        f"sent twice, which counts answers asked again after they were stored"
    )
    print(f"gen crash loop: {tally} in {seconds:.0f} s")
    record("gen", fault, runs=tally.rounds, survived=tally.identical, items_lost=tally.items_lost, sent_twice=tally.sent_twice, kills=tally.kills, note=note)
    assert tally.sent_twice == 0, where
    assert tally.items_lost == 0 and tally.items_extra == 0, where
    assert tally.identical == tally.rounds, where


def test_gen_killed_while_sending_and_saving_then_rerun(tmp_path):
    """Killed while answers arrive, then while the outputs are written, then rerun: the outputs equal
    the uninterrupted run's byte for byte and no stored answer is asked for again."""
    seed = crash_seed()
    loop, tally, seconds = gen_crash_loop(tmp_path, seed, docs=3, paragraphs=6, kills=2, max_delay=0.15, modes=["sending", "saving"])
    check_and_record(loop, tally, seconds, seed, "SIGKILL while sending and while saving, then rerun")
    assert tally.kills == 2 and tally.rounds >= 1  # a kill that comes after the process exited starts a new round


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gen_crash_loop(tmp_path):
    """At least 50 kills at random moments; each run is rerun until it completes, then a fresh one starts."""
    seed = crash_seed()
    kills = int(os.environ.get("DISTILL_CRASH_KILLS", "50"))
    loop, tally, seconds = gen_crash_loop(tmp_path, seed, docs=5, paragraphs=16, kills=kills, max_delay=0.25)
    check_and_record(loop, tally, seconds, seed, f"SIGKILL at random moments ({kills}+), rerun until complete")
    assert tally.kills >= kills


# ---------------------------------------------------------------- distill train


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A tiny random model and a small data directory (tests/trainkit.py)."""
    root = tmp_path_factory.mktemp("crash_train")
    return tiny_model(root / "tiny"), data_dir(root / "data", n=24)


def train_crash_loop(tmp_path, student, seed: int, kills: int, keeps: tuple[int, ...], modes: list[str] | None = None):
    model, data = student
    loop = TrainLoop(data, model, tmp_path, seed, steps=8, save_steps=2, keeps=keeps)
    started = time.monotonic()
    loop.straight()
    landed = 0
    while landed < kills:
        landed += loop.round(kills - landed, modes[landed:] if modes else None)
    return loop.tally(), time.monotonic() - started


def check_and_record_train(tally, seconds: float, seed: int, fault: str) -> None:
    print(f"train crash loop: {tally} in {seconds:.0f} s")
    note = (
        f"seed {seed}; {tally.launches} launches in {seconds:.0f} s, kills by moment {dict(tally.by_mode)}; items are the logged training steps; "
        f"largest final loss difference {tally.loss_diff:.1e}, adapter weight difference {tally.adapter_diff:.1e}; "
        f"{len(tally.unusable)} kills left an unusable newest checkpoint, {tally.progress_lost} left none where one had been, {len(tally.failed)} reruns failed"
    )
    record("train", fault, runs=tally.rounds, survived=tally.survived, items_lost=tally.steps_lost, kills=tally.kills, note=note)
    where = f"seed {seed}: {tally}"
    assert not tally.unusable and not tally.failed and tally.progress_lost == 0, where
    assert tally.steps_lost == 0 and tally.survived == tally.rounds, where


# checkpoints at steps 2, 4 and 6 (none after the last step); keep_checkpoints=1 removes checkpoint-2 once 4 is marked
KILLS_INSIDE_WRITES = [
    r"write@2:optimizer\.pt",  # the optimizer state of checkpoint-4 half written
    r"write@1:rmtree .*checkpoint-2$",  # checkpoint-2 half removed (rotation)
    r"write@1:replace .*run\.json$",  # training done, model saved, run.json not yet in place
    r"write@1:rmtree .*checkpoints$",  # the finished run's checkpoints half removed
]


def test_train_killed_inside_checkpoint_writes_then_resumed(tmp_path, student):
    """Killed with a checkpoint half written, with the previous one half removed (keep_checkpoints=1),
    just before run.json and during the final clean-up: after each kill the newest COMPLETE checkpoint
    loads, and the resumed run ends where the uninterrupted one ends, step for step."""
    seed = crash_seed()
    tally, seconds = train_crash_loop(tmp_path, student, seed, kills=4, keeps=(1,), modes=KILLS_INSIDE_WRITES)
    check_and_record_train(tally, seconds, seed, "SIGKILL inside writes (torn checkpoint, rotation, before run.json, clean-up), then --resume")
    assert tally.kills == 4 and tally.rounds == 1


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_train_crash_loop(tmp_path, student):
    """At least 50 kills: inside checkpoint writes, while training, while starting; each run resumed until it completes."""
    seed = crash_seed()
    kills = int(os.environ.get("DISTILL_CRASH_KILLS", "50"))
    tally, seconds = train_crash_loop(tmp_path, student, seed, kills=kills, keeps=(1, 2))  # keep_checkpoints by round
    check_and_record_train(tally, seconds, seed, f"SIGKILL at random moments and inside checkpoint writes ({kills}+), --resume until complete")
    assert tally.kills >= kills


def test_a_run_killed_writing_its_first_file_is_not_another_run(tmp_path):
    """A kill inside the first atomic write (train_config.json) leaves only its temporary file: the rerun
    starts the run, where it used to refuse the directory as holding a different run."""
    from train.config import TrainConfig
    from train.recipe import check_out, identity

    out = tmp_path / "out"
    out.mkdir()
    (out / ".train_config.json.k2x9w1ab.tmp").write_text('{"data": "da')
    cfg = TrainConfig(data=str(tmp_path / "data"), model="embedded", out=str(out))
    assert check_out(cfg, identity(cfg)) is None
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds a different run"):
        check_out(cfg, identity(cfg))
