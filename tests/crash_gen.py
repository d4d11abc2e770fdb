"""`distill gen` in a crash loop: the CLI in a subprocess against the loopback teacher (tests/openai_server.py),
SIGKILLed at a random moment, rerun, killed again, until a run completes; then the outputs are
compared with an uninterrupted run's and every 200 reply of the server is accounted for.

    loop = GenLoop(docs, tmp_path, seed)
    with FakeOpenAI(loop.script) as server:
        loop.reference(server)              # the uninterrupted run (in-process): outputs and phase timings
        loop.round(server, kills=3)          # kill, rerun, ... until a run completes (or the kills are spent)
    loop.tally()                              # sent twice, answers lost in flight, items lost

The kill moment of a launch is drawn (seeded RNG) in one of three ways, so that kills land in
every phase of a run: `starting` (interpreter start, imports, reading and chunking), `sending`
(after this launch's first request, while answers arrive and are stored) and `saving` (after the
last answer: curation and the writing of train/test/rejects.jsonl and manifest.json).
A kill that comes after the process has exited is no kill: that launch completed the run.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from distill.cli import main

from openai_server import FakeOpenAI, Reply, good_json

ROOT = Path(__file__).parents[1]
OUTPUTS = ("train.jsonl", "test.jsonl", "rejects.jsonl")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def gen_args(docs: Path, out: Path, url: str, concurrency: int) -> list[str]:
    return [
        "gen", str(docs), "--out", str(out), "--teacher", "openai", "--base-url", url, "--model", "teacher", "-q", "--concurrency", str(concurrency),
        "chunk_tokens=128", "chunk_overlap=0", "teacher.backoff_s=0.001", "teacher.backoff_max_s=0.01",
    ]  # fmt: skip


@dataclass
class Launch:
    round: int
    mode: str  # how the kill moment was drawn
    stored_before: frozenset  # prompts whose answer was in the cache when the process started
    first: int  # index of its first reply in server.replies
    last: int = 0  # one past its last
    killed: bool = False
    seconds: float = 0.0


@dataclass
class Tally:
    launches: int = 0
    kills: int = 0
    by_mode: Counter = field(default_factory=Counter)
    rounds: int = 0  # runs brought to completion by a rerun
    identical: int = 0  # of which the outputs equal the uninterrupted run's byte for byte
    items_lost: int = 0  # reference records missing from a completed run
    items_extra: int = 0  # records a completed run holds that the reference does not (duplicates included)
    sent_twice: int = 0  # a prompt answered (200) although its answer was already stored: a bug
    lost_in_flight: int = 0  # answered (200), the process killed before storing it, asked again: unavoidable
    lost_at_one_kill: int = 0  # the most of those lost at one kill (above --concurrency: answers queued in the client, unstored)
    stray_temp_files: int = 0  # .tmp files of killed atomic writes left in the output directory


class GenLoop:
    def __init__(self, docs: Path, root: Path, seed: int, concurrency: int = 8, max_delay: float = 0.1, weights: dict | None = None):
        self.docs, self.root, self.concurrency, self.max_delay = docs, root, concurrency, max_delay
        self.rng, self.delays = random.Random(seed), random.Random(seed + 1)
        self.weights = weights or {"starting": 0.2, "sending": 0.55, "saving": 0.25}
        self.answers: dict[str, str] = {}  # prompt -> the answer the server gives it, every time
        self.launches: list[Launch] = []
        self.completed: list[Path] = []
        self.t_first: float | None = None  # launch -> first request (the shortest seen)
        self.rounds = 0

    def script(self, call) -> Reply:
        answer = self.answers.setdefault(call.prompt, good_json(call))
        return Reply(answer, delay=self.delays.uniform(0, self.max_delay))

    # ------------------------------------------------------------ runs

    def reference(self, server: FakeOpenAI) -> None:
        """The uninterrupted run, in-process: its outputs, and how long it sends and saves."""
        self.ref = self.root / "reference"
        mark = len(server.replies)
        try:
            main(gen_args(self.docs, self.ref, server.url, self.concurrency))
        except SystemExit as done:
            assert done.code == 0
        ended = time.monotonic()
        times = [t for t, _, _ in server.replies[mark:]]
        self.prompts = frozenset(self.answers)
        self.t_send, self.t_after = times[-1] - times[0], ended - times[-1]
        assert len(set(self.answers.values())) == len(self.answers), "two prompts share an answer: the cache cannot tell them apart"
        self.ref_outputs = {name: (self.ref / name).read_bytes() for name in OUTPUTS}

    def round(self, server: FakeOpenAI, kills: int, modes: list[str] | None = None) -> int:
        """A fresh output directory, killed up to `kills` times (modes drawn, or `modes` in order), then
        run to completion; returns the kills that landed."""
        self.rounds += 1
        out = self.root / f"round{self.rounds}"
        landed = 0
        while True:
            mode = next_mode(self.rng, self.weights, landed, kills, modes)
            if not self.launch(server, out, mode):
                self.completed.append(out)
                return landed
            landed += 1

    def launch(self, server: FakeOpenAI, out: Path, mode: str | None) -> bool:
        """One run of the CLI, killed as `mode` says (None: never); True if the kill landed."""
        launch = Launch(self.rounds, mode or "none", stored(out, self.answers), len(server.replies))
        requests = len(server.bodies)
        with tempfile.TemporaryFile() as err:
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "distill", *gen_args(self.docs, out, server.url, self.concurrency)], env=ENV, stdout=subprocess.DEVNULL, stderr=err)
            at = self.kill_moment(mode, proc, server, started, requests, launch.stored_before) if mode else None
            while at is not None and proc.poll() is None and time.monotonic() < at:
                time.sleep(0.002)
            if at is not None and proc.poll() is None:
                proc.kill()
                launch.killed = True
            proc.wait(timeout=600)
            launch.seconds = time.monotonic() - started
            if len(server.bodies) > requests:
                self.t_first = min(self.t_first or 1e9, server.times[requests] - started)
            settle(server)
            launch.last = len(server.replies)
            self.launches.append(launch)
            if not launch.killed:
                err.seek(0)
                assert proc.returncode == 0, err.read().decode()[-3000:]
        return launch.killed

    def kill_moment(self, mode, proc, server, started, requests, stored_before) -> float | None:
        """When to kill (time.monotonic); None: the process exited while we waited for its phase."""
        if mode == "starting" or (mode == "sending" and self.t_first is None and stored_before == self.prompts):
            return started + self.rng.uniform(0, self.t_first or 2.0)
        if mode == "sending":
            while len(server.bodies) <= requests:
                if proc.poll() is not None:
                    return None
                time.sleep(0.002)
            return server.times[requests] + self.rng.uniform(0, self.t_send)
        if stored_before == self.prompts:  # saving, nothing left to send: setup, then straight to saving
            return started + (self.t_first or 2.0) + self.rng.uniform(0, self.t_after)
        first = len(server.replies)
        while not self.prompts <= stored_before | {p for _, p, status in server.replies[first:] if status == 200} or server.inflight:
            if proc.poll() is not None:
                return None
            time.sleep(0.002)
        return time.monotonic() + self.rng.uniform(0, self.t_after)

    # ------------------------------------------------------------ figures

    def tally(self, server: FakeOpenAI) -> Tally:
        tally = Tally(launches=len(self.launches), rounds=len(self.completed))
        answered_in: dict[tuple, int] = {}  # (round, prompt) -> the launch that last got a 200 for it
        lost_at: Counter = Counter()  # launch -> its answers asked again later (lost at its kill)
        for index, launch in enumerate(self.launches):
            if launch.killed:
                tally.kills += 1
                tally.by_mode[launch.mode] += 1
            this: Counter = Counter()
            for _, prompt, status in server.replies[launch.first : launch.last]:
                if status != 200:
                    continue
                if prompt in launch.stored_before or this[prompt]:
                    tally.sent_twice += 1
                elif (launch.round, prompt) in answered_in:
                    tally.lost_in_flight += 1
                    lost_at[answered_in[launch.round, prompt]] += 1
                this[prompt] += 1
                answered_in[launch.round, prompt] = index
        tally.lost_at_one_kill = max(lost_at.values(), default=0)
        for out in self.completed:
            assert stored(out, self.answers) == self.prompts, f"{out}: the cache lacks answers"
            ref, got = Counter(), Counter()
            for name in OUTPUTS[:2]:
                ref.update((self.ref / name).read_bytes().splitlines())
                got.update((out / name).read_bytes().splitlines())
            tally.items_lost += sum((ref - got).values())
            tally.items_extra += sum((got - ref).values())
            tally.identical += all((out / name).read_bytes() == self.ref_outputs[name] for name in OUTPUTS)
            tally.stray_temp_files += len(list(out.glob(".*.tmp")))
        return tally


def next_mode(rng: random.Random, weights: dict[str, float], landed: int, kills: int, modes: list[str] | None) -> str | None:
    """How the next launch of a round is killed: None once `kills` kills have landed; else `modes` in
    order where given, or one drawn by `weights` (both crash loops)."""
    if landed >= kills:
        return None
    return modes[landed] if modes else rng.choices(list(weights), list(weights.values()))[0]


def stored(out: Path, answers: dict[str, str]) -> frozenset:
    """Prompts whose answer the cache of `out` holds (the server gives each prompt one distinct answer)."""
    path = out / "cache.sqlite"
    if not path.exists():
        return frozenset()
    db = sqlite3.connect(path, timeout=30)
    try:
        texts = {row[0] for row in db.execute("SELECT text FROM responses")}
    except sqlite3.OperationalError:  # killed before the table was created
        texts = set()
    finally:
        db.close()
    return frozenset(p for p, answer in answers.items() if answer in texts)


def settle(server: FakeOpenAI, timeout: float = 5.0) -> None:
    """Wait until the server has finished with the requests of a dead client (cancelled, or replied)."""
    deadline = time.monotonic() + timeout
    while server.inflight and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.02)
