"""The training benchmark's driver (bench/train_throughput.py): the order of its rounds and what it counts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import grpo_throughput
import pytest
import train_throughput
from rounds import exit_if_failed, schedule, summarize
from train_throughput import keep_metrics


def test_each_run_takes_each_place_and_warm_up_rounds_are_not_counted():
    runs = [("trl", "lora"), ("distill", "lora"), ("distill", "lora", ("fixed_shapes=true",))]
    plan = schedule(runs, rounds=3, discard=1)
    assert [k for k, _ in plan] == [-1, 0, 1, 2]  # the warm-up round is numbered below 0
    counted = [order for k, order in plan if k >= 0]
    assert all(sorted(order) == sorted(runs) for order in counted)
    assert {order.index(run) for order in counted for run in runs[:1]} == {0, 1, 2}  # each place in turn
    assert all(len({order.index(run) for order in counted}) == 3 for run in runs)
    assert schedule(runs, rounds=1, discard=0) == [(0, runs)]  # one round: the order given


def test_both_benches_warm_the_machine_with_an_uncounted_round_unless_told_not_to():
    """A fresh GPU machine's first run of each kind read 10-41% slow (docs/benchmarks.md, 2026-12-06)."""
    for bench in (train_throughput, grpo_throughput):
        for mode in ("gpu", "cpu"):
            assert bench.arguments([mode]).discard == 1
        assert bench.arguments(["gpu", "--discard", "0"]).discard == 0
    assert [k for k, _ in schedule([("trl", "lora"), ("distill", "lora")], 1, 1)] == [-1, 0]  # then the counted round


def test_a_failed_run_lowers_its_median_and_keeps_its_row():
    def row(impl, k, rate=None, extra=()):
        r = {"impl": impl, "method": "lora", "extra": list(extra), "round": k}
        return {**r, "tokens_per_s": rate} if rate is not None else {**r, "error": "out of memory"}

    results = [row("trl", -1, 1.0), row("distill", -1, 9.0),  # warm-up: not counted
               row("trl", 0, 10.0), row("distill", 0, 30.0),
               row("distill", 1, 32.0), row("trl", 1, 8.0),
               row("trl", 2, 10.0), row("distill", 2)]  # distill failed in round 2
    summary = summarize(results)
    assert summary["distill lora"]["each"] == [30.0, 32.0, 0.0]  # the failure is a row, at 0
    assert summary["distill lora"]["tokens_per_s"] == 30.0  # median of 30, 32, 0: lowered from 31
    assert summary["distill lora"]["vs_trl"] == 3.0  # ratios 3.0, 4.0 and 0 in the same rounds: median 3.0
    assert summary["trl lora"]["tokens_per_s"] == 10.0 and summary["trl lora"]["vs_trl"] is None
    results[-2:] = [row("trl", 2), row("distill", 2, 40.0)]  # TRL failed in round 2: that round's ratio counts as 0
    assert summarize(results)["distill lora"]["vs_trl"] == 3.0  # median of 3.0, 4.0 and 0, not of 3.0 and 4.0


def test_the_grpo_bench_counts_steps_a_second_the_same_way():
    """bench/grpo_throughput.py's runs: no method, a rate in steps/s; TRL's run of the same round is the reference."""

    def run(impl, k, rate=None):
        return {"impl": impl, "extra": [], "round": k, **({"steps_per_s": rate} if rate else {"error": "nan"})}

    results = [run("trl", 0, 0.2), run("distill", 0, 0.6), run("distill", 1), run("trl", 1, 0.1),
               run("trl", 2, 0.25), run("distill", 2, 0.5)]
    summary = summarize(results, rate="steps_per_s")
    assert list(summary) == ["trl", "distill"]
    assert summary["distill"]["steps_per_s"] == 0.5 and summary["distill"]["each"] == [0.6, 0.0, 0.5]
    assert summary["distill"]["vs_trl"] == 2.0  # ratios 3.0, 0 (failed), 2.0


def test_a_bench_with_a_failed_run_exits_non_zero():
    ran = {"impl": "trl", "method": "lora", "extra": [], "round": 0, "tokens_per_s": 10.0}
    exit_if_failed([ran])  # every run ran: no exit
    with pytest.raises(SystemExit) as exited:
        failed = {"impl": "distill", "method": "lora", "extra": ["fixed_shapes=true"], "round": 0, "error": "oom"}
        exit_if_failed([ran, failed])
    assert exited.value.code == "1 of 2 runs failed: distill lora fixed_shapes=true"  # a message: exit status 1


def test_each_runs_per_step_log_is_kept_under_its_round_and_place(tmp_path):
    """TRL's log too (to compare steps), and never an older run's log under a failed run's name."""
    for impl in ("trl", "distill"):
        (tmp_path / f"{impl}-lora").mkdir()
        (tmp_path / f"{impl}-lora" / "metrics.jsonl").write_text(f'{{"step": 1, "impl": "{impl}"}}\n')
    keep_metrics(str(tmp_path), {"impl": "trl", "method": "lora", "tokens_per_s": 1.0}, -1, 1)
    keep_metrics(str(tmp_path), {"impl": "distill", "method": "lora", "tokens_per_s": 3.0}, 0, 2)
    keep_metrics(str(tmp_path), {"impl": "distill", "method": "lora", "error": "oom"}, 1, 1)
    assert '"trl"' in (tmp_path / "metrics-warmup1-place1.jsonl").read_text()
    assert '"distill"' in (tmp_path / "metrics-round0-place2.jsonl").read_text()
    assert not (tmp_path / "metrics-round1-place1.jsonl").exists()


def test_the_profiler_reports_plain_trls_steps_as_the_bench_runs_them(tmp_path):
    """bench/train_profile.py --stage trl: the baseline's step profiled (a tiny model on the CPU, one step)."""
    import subprocess

    from trainkit import data_dir, tiny_model

    root = Path(__file__).resolve().parents[1]
    model, data, report = tiny_model(tmp_path / "tiny"), data_dir(tmp_path / "data", n=16), tmp_path / "trl.txt"
    cmd = [sys.executable, str(root / "bench" / "train_profile.py"), "--stage", "trl", "--data", str(data),
           "--model", str(model), "--report", str(report), "--out", str(tmp_path / "out"),
           "--start", "1", "--steps", "1", "batch_size=4", "lora_r=4"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = report.read_text()
    assert text.startswith("profiled steps: 1 (from step 1); config overrides: batch_size=4 lora_r=4")
    assert "aten::mm" in text or "aten::addmm" in text  # the step's matmuls were recorded
    # a distill-only key would be ignored by TRL's run without a word: refused in one line
    refused = subprocess.run(cmd + ["max_batch_tokens=4096"], capture_output=True, text=True, cwd=root, env=env)
    assert refused.returncode != 0
    message = "--stage trl takes only method, lora_r, batch_size, grad_accum; not max_batch_tokens"
    assert refused.stderr.strip().splitlines()[-1] == message


def test_a_trl_run_takes_an_attention_and_is_measured_against_plain_trls():
    """Plain TRL's SDPA builds a cuDNN plan for every new length on Hopper (docs/benchmarks.md): the bench can run TRL
    with an attention that plans nothing, as a row of its own; distill's ratios stay against the plain run."""
    from train_throughput import trl_attention

    assert trl_attention(()) == "sdpa"
    assert trl_attention(["attention=sdpa-no-cudnn"]) == "sdpa-no-cudnn"
    assert trl_attention(["attention=eager"]) == "eager"
    for bad in (["attention=flash"], ["lora_r=4"], ["attention=eager", "lora_r=4"], ["foo"]):
        with pytest.raises(SystemExit) as refused:
            trl_attention(bad)
        assert str(refused.value) == f"a trl run takes only attention=sdpa|sdpa-no-cudnn|eager; not {' '.join(bad)}"

    def row(impl, k, rate, extra=()):
        return {"impl": impl, "method": "qlora", "extra": list(extra), "round": k, "tokens_per_s": rate}

    quick = ("attention=sdpa-no-cudnn",)
    results = [row("trl", 0, 13.0, quick), row("trl", 0, 10.0), row("distill", 0, 20.0),
               row("distill", 1, 24.0), row("trl", 1, 12.0), row("trl", 1, 18.0, quick)]
    summary = summarize(results)
    assert summary["distill qlora"]["vs_trl"] == 2.0  # against plain TRL's 10 and 12, not the other run's 13 and 18
    assert summary["trl qlora attention=sdpa-no-cudnn"]["vs_trl"] == 1.4  # 1.3x and 1.5x plain TRL's: median 1.4
    assert summary["trl qlora"]["vs_trl"] is None


def test_a_trl_run_without_cudnn_attention_trains_with_that_backend_off(tmp_path):
    """The setting reaches the run: cuDNN's SDPA backend is off for each step (a tiny model on the CPU, two steps)."""
    import argparse

    import torch
    from transformers import TrainerCallback

    from trainkit import data_dir, tiny_model

    seen = []

    class Backend(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            seen.append(torch.backends.cuda.cudnn_sdp_enabled())

    bench = argparse.Namespace(model=str(tiny_model(tmp_path / "tiny")), data=str(data_dir(tmp_path / "data", n=16)),
                               workdir=str(tmp_path / "out"), steps=2, warmup=0, threads=2, method="lora", r=4, batch=4,
                               grad_accum=1, extra=["attention=sdpa-no-cudnn"])
    try:
        result = train_throughput.run_trl(bench, callbacks=(Backend(),))
        assert seen == [False, False] and result["tokens_per_s"] > 0
        bench.extra = []
        train_throughput.run_trl(bench, callbacks=(Backend(),))
        assert seen[2:] == [True, True]  # the plain run: torch's default
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)
