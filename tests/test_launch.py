"""`distill train --gpus N`: the command relaunches itself under torchrun (here 2 CPU processes, gloo, on a tiny
random Llama model), one data-parallel run comes out; asking for more GPUs than are visible is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from distill import launch
from distill.cli import main
from train.config import TrainConfig

from trainkit import metrics


def test_gpus_2_runs_one_data_parallel_run_of_two_processes(tmp_path, tiny, data):
    """24 records, 4 a process and step on 2 processes: 3 steps of 8, one epoch, as one process with batches of 8."""
    from train.sft import run_sft

    base = dict(data=str(data), model=str(tiny), backend="hf", lr=1e-2, max_steps=3, seed=0)
    single = run_sft(TrainConfig(**base, out=str(tmp_path / "one"), batch_size=8), show_progress=False)
    out = tmp_path / "two"
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "train",
        str(data),
        "--out",
        str(out),
        "--model",
        str(tiny),
        "--backend",
        "hf",
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--lr",
        "1e-2",
        "--gpus",
        "2",
        "--json",
        "-q",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, launch.CPU_PROCESSES_ENV: "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"status"') == 1  # rank 0 alone reports
    run = json.loads((out / "run.json").read_text())
    m, one = run["metrics"], single["metrics"]
    assert run["processes"] == 2 and m["steps"] == 3 and m["epochs"] == 1.0
    assert m["tokens"] == one["tokens"]  # 2 processes x 4 records x 3 steps: the same epoch as 8 records x 3 steps
    assert m["first_loss"] == pytest.approx(one["first_loss"], abs=0.02)  # step 1 sees the same 8 records
    assert m["final_loss"] == pytest.approx(one["final_loss"], abs=2e-3)  # the same updates (gradients averaged right)
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2, 3]
    assert len(list(out.glob("adapter_model.safetensors"))) == 1 and not (out / "checkpoints").exists()


def test_the_relaunch_is_torchrun_with_the_same_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append(argv))
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(launch.CPU_PROCESSES_ENV, "1")
    monkeypatch.setattr(launch, "ARGV", ["train", "data", "--gpus", "3", "--resume"])
    launch.relaunch(3)
    assert calls == [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "3",
            "-m",
            "distill",
            "train",
            "data",
            "--gpus",
            "3",
            "--resume",
        ]
    ]
    monkeypatch.setenv("WORLD_SIZE", "1")  # set in some shells and containers without any launch: still relaunches
    launch.relaunch(3)
    assert len(calls) == 2
    monkeypatch.setenv("WORLD_SIZE", "3")  # a rank of that launch goes on training
    launch.relaunch(3)
    launch.relaunch(1)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "cuda, seen, words",
    [
        (False, 0, "needs 2 CUDA GPUs and none is visible"),
        (True, 1, "asks for 2 GPUs but 1 is visible; pass --gpus 1 or fewer"),
    ],
)
def test_more_gpus_than_visible_is_a_one_line_error(monkeypatch, tmp_path, capsys, data, cuda, seen, words):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: seen)
    for name in ("LOCAL_RANK", "WORLD_SIZE", launch.CPU_PROCESSES_ENV, "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("relaunched"))
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(data), "--out", str(tmp_path / "out"), "--gpus", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and words in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_grpo_gpus_2_runs_one_run_of_two_processes(tmp_path, tiny, data):
    """`distill grpo --gpus 2` on 2 CPU processes: one report, run.json with 2 processes, each warning said once."""
    out = tmp_path / "grpo"
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "grpo",
        str(data),
        "--from",
        str(tiny),
        "--out",
        str(out),
        "--backend",
        "hf",
        "--num-generations",
        "4",
        "--batch-size",
        "2",
        "--max-completion-length",
        "16",
        "--max-steps",
        "2",
        "--lr",
        "5e-3",
        "--reward",
        "format=1",
        "--gpus",
        "2",
        "--json",
    ]  # lr 5e-3: warned as an SFT learning rate
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**env, launch.CPU_PROCESSES_ENV: "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"status"') == 1 and done.stderr.count("is an SFT learning rate") == 1
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == 2 and run["metrics"]["steps"] == 2 and (out / "adapter_model.safetensors").exists()
