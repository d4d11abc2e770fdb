"""GRPO on CPU with a tiny random Llama (hidden 32, 2 layers, the embedded tokenizer): the format
reward rises over a short run from a briefly fine-tuned student, an SFT adapter is trained further
(with a KL term), a killed run resumes to the same rewards, a user reward loads by import path, the
judge reward goes through the request cache, bad input is a one-line error."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.config import build
from common.errors import UserError
from common.teacher.backends import Response
from train.config import TrainConfig
from train.grpo_config import GRPOConfig

from grpo_world import LEARNING, Z_LEARNED, rise, short_data, student
from tiny_models import one_thread
from trainkit import metrics, tiny_model


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    previous = one_thread()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny model, short data, and two SFT students: the tiny model fully fine-tuned until its sampled format
    rate lies in grpo_world.BAND (whatever the CPU's arithmetic), and a LoRA adapter on that one (2 steps)."""
    from train.sft import run_sft

    root = tmp_path_factory.mktemp("grpo")
    model = tiny_model(root / "tiny")
    data = short_data(root / "data")
    full, p0 = student(root, model, data)
    common = dict(data=str(data), backend="hf", batch_size=8, seed=0, save_steps=1000)
    run_sft(TrainConfig(out=str(root / "lora"), model=str(full), lr=1e-3, max_steps=2, lora_r=8, target_modules=["q_proj", "v_proj"], **common), show_progress=False)
    return {"root": root, "model": model, "data": data, "full": full, "lora": root / "lora", "p0": p0}


def config(world: dict, out: Path, **extra) -> GRPOConfig:
    base = dict(data=str(world["data"]), from_model=str(world["full"]), out=str(out), backend="hf", num_generations=4, batch_size=2,
                max_completion_length=16, max_steps=2, lr=5e-3, seed=0, rewards={"format": 1.0})
    return GRPOConfig(**{**base, **extra})


def test_format_reward_rises(world, tmp_path):
    """16 steps from the fully fine-tuned student: the trained policy writes the format more often than the student,
    by more than chance allows a policy that does not move (a z-test on 512 sampled completions of each; the spread
    over seeds and CPUs and the run with the update disabled are in docs/testing.md)."""
    from train.grpo import run_grpo

    out = tmp_path / "grpo"
    run = run_grpo(config(world, out, **LEARNING), show_progress=False)
    rows = [r for r in metrics(out) if "reward" in r]
    assert [r["step"] for r in rows] == list(range(1, 17))
    rewards = [r["rewards/format/mean"] for r in rows]
    before, after, z = rise(world["full"], out, world["data"])
    assert z > Z_LEARNED, (before, after, z, rewards, world["p0"])
    m = run["metrics"]
    assert run["status"] == "done" and run["stage"] == "grpo" and run["backend"] == "hf" and run["generation"] == "transformers"
    assert m["steps"] == 16
    epochs = m["by_epoch"]["format"]  # 32 prompts, 4 a step: epochs of 8 steps
    assert epochs == pytest.approx([sum(rewards[:8]) / 8, sum(rewards[8:]) / 8], abs=1e-4)
    assert len(m["by_epoch"]["reward"]) == 2
    assert m["tokens"] > 0 and m["tokens_per_s"] > 0 and m["generated_tokens_per_s"] > 0
    assert m["seconds_per_step"] == pytest.approx(m["generate_seconds_per_step"] + m["update_seconds_per_step"], rel=0.05)
    row = rows[-1]
    for key in ("rewards/format/mean", "rewards/format/std", "reward", "alike_share", "frac_reward_zero_std", "zero_advantage_groups", "completions/mean_length",
                "tokens_per_s", "generated_tokens_per_s", "generate_s", "update_s", "step_time", "entropy"):
        assert key in row, key
    assert row["zero_advantage_groups"] == pytest.approx(row["alike_share"] * 4)  # 4 prompts a step
    assert all(r["alike_share"] == pytest.approx(r["frac_reward_zero_std"]) for r in rows)  # group scaling: TRL's count agrees
    assert "kl" not in row  # beta 0: no reference model, no KL
    assert run["from"]["kind"] == "model" and run["data"]["prompts"] == 32 and run["data"]["prompt_mode"] == "closed-book"
    assert run["lengths"]["max_completion_length"] == 24 and run["rewards"] == {"format": 1.0}
    assert {"run.json", "metrics.jsonl", "rewards.png", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists()
    assert any("SFT learning rate" in w for w in run["warnings"]) and not any("stopped learning" in w for w in run["warnings"])


def test_a_run_that_cannot_learn_says_so(world, tmp_path):
    """The untrained model never writes the format: every group scores alike, which the run reports."""
    from train.grpo import run_grpo

    run = run_grpo(config(world, tmp_path / "grpo", from_model=str(world["model"]), max_steps=3, lr=5e-6), show_progress=False)
    assert run["metrics"]["zero_advantage_share"] == 1.0
    assert [w for w in run["warnings"] if "scored alike" in w] and not [w for w in run["warnings"] if "learning rate" in w]
    assert [r["zero_advantage_groups"] for r in metrics(tmp_path / "grpo") if "reward" in r] == [2, 2, 2]


def test_scale_rewards_divides_the_advantages(world, tmp_path):
    """The same first step (same seed, same completions, same rewards) under each scale_rewards: the
    advantages differ, so the gradient (the advantage-weighted sum of the completions' log-prob gradients) does."""
    from train.grpo import run_grpo

    first = {}
    for scale in ("group", "batch", "none"):
        run = run_grpo(config(world, tmp_path / scale, batch_size=4, max_completion_length=24, max_steps=1, scale_rewards=scale), show_progress=False)
        assert run["config"]["scale_rewards"] == scale
        first[scale] = next(r for r in metrics(tmp_path / scale) if "reward" in r)
    assert len({(r["reward"], r["reward_std"]) for r in first.values()}) == 1  # one set of completions and rewards
    assert 0 < first["none"]["reward_std"] and first["none"]["zero_advantage_groups"] < 4  # some group has an advantage to scale
    assert len({r["zero_advantage_groups"] for r in first.values()}) == 1 and first["batch"]["frac_reward_zero_std"] == 0  # TRL's misses them under batch
    assert len({round(r["grad_norm"], 6) for r in first.values()}) == 3, first


def test_an_sft_adapter_is_trained_further(world, tmp_path):
    """--from an SFT LoRA directory: the same adapter (rank, layers, base) continues; beta > 0 logs KL."""
    from safetensors.torch import load_file

    from train.grpo import run_grpo

    out = tmp_path / "grpo"
    run = run_grpo(config(world, out, from_model=str(world["lora"]), beta=0.04, rewards={"format": 1.0, "length": 0.5}), show_progress=False)
    assert run["from"] == {"name": str(world["lora"]), "adapter": str(world["lora"]), "kind": "adapter"}
    sft_config, grpo_config = (json.loads((d / "adapter_config.json").read_text()) for d in (world["lora"], out))
    for key in ("r", "target_modules", "base_model_name_or_path"):
        assert grpo_config[key] == sft_config[key], key
    before, after = load_file(world["lora"] / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert not (out / "ref").exists()  # TRL's frozen reference copy of the adapter is not saved
    rows = [r for r in metrics(out) if "reward" in r]
    assert all("kl" in r for r in rows) and all("rewards/length/mean" in r for r in rows)
    assert run["lengths"]["length_budget"] < run["lengths"]["max_completion_length"] == 16


GRPO_IN_A_PROCESS = "import json, sys; from train.grpo import run_grpo; from train.grpo_config import GRPOConfig; run_grpo(GRPOConfig(**json.loads(sys.argv[1])), show_progress=False)"


def test_resume_after_kill_reaches_the_same_rewards(world, tmp_path):
    from train.grpo import run_grpo

    steps = dict(max_steps=8, save_steps=2)
    straight = run_grpo(config(world, tmp_path / "straight", **steps), show_progress=False)
    out = tmp_path / "killed"
    cfg = config(world, out, threads=1, **steps)
    proc = subprocess.Popen([sys.executable, "-c", GRPO_IN_A_PROCESS, cfg.model_dump_json()], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not list(out.glob("checkpoints/checkpoint-*/COMPLETE")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert not (out / "run.json").exists(), f"the run finished before it could be killed: {err[-2000:]}"
    with pytest.raises(UserError, match="--resume"):
        run_grpo(cfg, show_progress=False)
    resumed = run_grpo(cfg.model_copy(update={"resume": True}), show_progress=False)
    assert resumed["metrics"]["steps"] == 8
    rows = [r for r in metrics(out) if "reward" in r]
    assert [r["step"] for r in rows] == list(range(1, 9))
    expected = [r["reward"] for r in metrics(tmp_path / "straight") if "reward" in r]
    assert [r["reward"] for r in rows] == pytest.approx(expected)  # the same completions, sampled again from restored RNG state
    assert resumed["metrics"]["tokens"] == straight["metrics"]["tokens"]


def test_user_reward_by_import_path_and_the_judge(world, tmp_path, monkeypatch, teacher_factory):
    from train.grpo import run_grpo

    (tmp_path / "team_rewards.py").write_text(
        "def cites_evidence(prompts, completions, evidence, **kwargs):\n"
        "    return [float(e.split()[0] in c[0]['content']) for c, e in zip(completions, evidence)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    teacher = teacher_factory(lambda request: Response(key=request.key, text='{"score": 4}'))
    out = tmp_path / "grpo"
    rewards = {"format": 1.0, "team_rewards:cites_evidence": 0.5, "judge": 0.3}
    run = run_grpo(config(world, out, rewards=rewards, judge={"model": "scripted-judge"}), show_progress=False)
    rows = [r for r in metrics(out) if "reward" in r]
    assert all("rewards/team_rewards:cites_evidence/mean" in r for r in rows)
    assert [r["rewards/judge/mean"] for r in rows] == [0.75, 0.75]  # (4 - 1) / 4
    assert run["judge_requests"]["sent"] == len(teacher.sent) > 0 and (out / "judge_cache.sqlite").exists()
    assert run["rewards"] == rewards


def test_failed_judge_requests_end_the_run_incomplete_and_a_rerun_asks_only_them(world, tmp_path, teacher_factory):
    """A judge reply that failed gave its completion no judge reward: counted in run.json, status incomplete; the
    same run again regenerates the same completions, finds the other grades cached and asks only the failed ones."""
    from train.grpo import run_grpo

    calls = []

    def flaky(request):
        calls.append(request.key)
        if len(calls) <= 3:
            return Response(key=request.key, error="HTTP 503")
        return Response(key=request.key, text='{"score": 4}')

    teacher_factory(flaky)
    out = tmp_path / "grpo"
    cfg = config(world, out, rewards={"format": 1.0, "judge": 0.3}, judge={"model": "scripted-judge"})
    run = run_grpo(cfg, show_progress=False)
    assert run["status"] == "incomplete" and run["judge_failures"] == {"requests": 3, "last_error": "HTTP 503"}
    assert json.loads((out / "run.json").read_text())["status"] == "incomplete"
    teacher = teacher_factory(lambda request: Response(key=request.key, text='{"score": 4}'))
    again = run_grpo(cfg, show_progress=False)
    assert again["status"] == "done" and again["judge_failures"]["requests"] == 0
    assert again["judge_requests"]["sent"] == len(teacher.sent) == 3 and again["judge_requests"]["cache_hits"] > 0


def test_bad_input_is_a_one_line_error(world, tmp_path):
    from train.grpo import run_grpo

    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "train_config.json").write_text("{}")
    cases = [
        ({"from_model": str(not_a_model)}, "is not a model directory"),
        ({"from_model": str(tmp_path / "nowhere")}, "neither an existing directory nor a hub id"),
        ({"from_model": str(unfinished)}, "holds an unfinished training run"),
        ({"rewards": {"nowhere_module_xyz:f": 1.0}}, "cannot import nowhere_module_xyz"),
        ({"data": str(tmp_path / "no-data")}, "does not exist"),
    ]
    for extra, message in cases:
        with pytest.raises(UserError, match=message) as caught:
            run_grpo(config(world, tmp_path / "out", **extra), show_progress=False)
        assert "\n" not in str(caught.value)
    for extra, message in [({"num_generations": 1}, "zero advantage"), ({"rewards": {"speed": 1}}, "unknown reward 'speed'")]:
        with pytest.raises(UserError, match=message):
            build(GRPOConfig, {"data": str(world["data"]), **extra})


@pytest.mark.skipif(__import__("importlib").util.find_spec("unsloth") is None, reason="unsloth not installed")
def test_unsloth_continues_an_sft_adapter(world, tmp_path):
    """The unsloth backend in its own process (its patches must not leak): an SFT adapter trained further."""
    out = tmp_path / "unsloth"
    cfg = config(world, out, backend="unsloth", from_model=str(world["lora"]), threads=1)
    done = subprocess.run([sys.executable, "-c", GRPO_IN_A_PROCESS, cfg.model_dump_json()], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "unsloth" and run["metrics"]["steps"] == 2 and run["from"]["kind"] == "adapter"
    assert run["imported_before_unsloth"] == []  # unsloth came before transformers, trl and peft
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    assert "restructure your imports" not in done.stderr  # unsloth came before transformers, trl and peft


def test_unsloth_reads_an_adapter_naming_its_base_as_distill_does(tmp_path):
    """SFT writes 'embedded' (or a hub id) as an adapter's base; Unsloth loads the base an adapter names: it is
    given a copy naming the resolved base, the weights linked, not copied."""
    from train.unsloth_adapter import adapter_on

    adapter = tmp_path / "student"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "embedded", "r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    with adapter_on(str(adapter), "/models/smollm2") as seen:
        assert json.loads((Path(seen) / "adapter_config.json").read_text()) == {"base_model_name_or_path": "/models/smollm2", "r": 8}
        assert (Path(seen) / "adapter_model.safetensors").resolve() == (adapter / "adapter_model.safetensors").resolve()
    assert not Path(seen).exists()
    with adapter_on(str(adapter), "embedded") as seen:
        assert seen == str(adapter)  # already names it
    with adapter_on(str(tmp_path), "embedded") as seen:
        assert seen == str(tmp_path)  # a model, not an adapter


@pytest.mark.skipif(__import__("importlib").util.find_spec("unsloth") is None, reason="unsloth not installed")
def test_format_reward_rises_on_unsloth(world, tmp_path):
    """The default backend's update moves the policy the right way too: the same learnable run as
    test_format_reward_rises, through Unsloth's GRPO trainer (its own log-probabilities and loss)."""
    out = tmp_path / "unsloth"
    cfg = config(world, out, backend="unsloth", threads=1, **LEARNING)
    done = subprocess.run([sys.executable, "-c", GRPO_IN_A_PROCESS, cfg.model_dump_json()], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    before, after, z = rise(world["full"], out, world["data"])
    assert run["backend"] == "unsloth" and z > Z_LEARNED, (before, after, z, run["metrics"]["by_epoch"]["format"], world["p0"])


def test_left_padding_leaves_the_completions_log_probabilities_unchanged(tmp_path):
    """Why distill turns off Unsloth's packed GRPO forward (train/unsloth_adapter.py SWITCHES): its padded
    forward numbers a left-padded row's positions from its first pad (0, 1, ... over the whole width), which
    rotary embeddings do not see. The completions' log-probabilities of such a batch equal those of each row alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model(tmp_path / "m"), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 1000, (n,), generator=g) for n in (3, 11)]
    completion = 6
    rows = [torch.cat([p, torch.randint(5, 1000, (completion,), generator=g)]) for p in prompts]
    width = max(len(r) for r in rows)
    pad = [width - len(r) for r in rows]
    ids = torch.stack([torch.cat([torch.zeros(n, dtype=torch.long), r]) for n, r in zip(pad, rows)])
    mask = torch.stack([torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(len(r), dtype=torch.long)]) for n, r in zip(pad, rows)])

    def completion_logps(logits, targets):
        return torch.log_softmax(logits[:, -completion - 1:-1], -1).gather(-1, targets[:, -completion:, None])[..., 0]

    with torch.no_grad():
        positions = torch.arange(width).expand(len(rows), width)  # the padded forward's, shifted by the padding
        padded = completion_logps(model(input_ids=ids, attention_mask=mask, position_ids=positions).logits, ids)
        alone = torch.cat([completion_logps(model(input_ids=r[None]).logits, r[None]) for r in rows])
    assert pad[0] == 8 and padded.shape == alone.shape == (2, completion)
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
