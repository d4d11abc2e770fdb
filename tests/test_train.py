"""`distill train` on CPU with tiny random Llama models (hidden 32, 2 layers) and the embedded
tokenizer: the loss falls and weights change, labels cover exactly the assistant turn for two
template families, a killed run resumes to the same loss, saved models load and generate,
bad input is a one-line error (exit 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from common.config import build, load_config
from common.errors import UserError
from train.config import TrainConfig

from trainkit import data_dir, killed_and_resumed, metrics, record

# A Llama-3-style template (header tokens, <|eot_id|> ends a turn), written out as the family does.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def config(data: Path, model: Path, out: Path, **extra) -> TrainConfig:
    base = dict(data=str(data), model=str(model), out=str(out), backend="hf", lr=1e-2, batch_size=4, max_steps=6, seed=0, save_steps=4)
    return TrainConfig(**{**base, **extra})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny, data) -> tuple[Path, dict]:
    from train.sft import run_sft

    out = tmp_path_factory.mktemp("run") / "student"
    return out, run_sft(config(data, tiny, out, val_fraction=0.2, eval_steps=4), show_progress=False)


def test_loss_falls_and_lora_weights_change(trained):
    from safetensors.torch import load_file

    out, run = trained
    m = run["metrics"]
    assert run["status"] == "done" and run["backend"] == "hf" and m["steps"] == 6 and run["optimizer"] == "adamw_torch"
    assert m["final_loss"] < m["first_loss"] - 0.05, m  # fell 0.09-0.18; lr 1e-9: -0.013..+0.029 (docs/testing.md)
    assert m["final_val_loss"] is not None and m["tokens"] > 0 and m["tokens_per_s"] > 0
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: any change is training
    assert {"run.json", "metrics.jsonl", "loss.png", "adapter_config.json", "tokenizer.json"} <= set(os.listdir(out))
    assert not (out / "checkpoints").exists()
    assert run["data"]["manifest_sha256"] and run["data"]["val_records"] >= 1 and run["versions"]["torch"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(Path(run["config"]["model"]).resolve())
    # the default max_seq_length (2048) is clamped to the tiny model's 1024-token context in the spec, not in the config
    assert run["config"]["max_seq_length"] == 2048 and run["max_seq_length"] == 1024 and run["backend_fallback"] is None
    assert run["recipe"] == {"kind": "knowledge", "why": "distill gen data split by item"}


def test_lora_dtype_bfloat16_trains_and_saves_a_bfloat16_adapter(tmp_path, tiny, data):
    """lora_dtype: bfloat16 holds the new adapter's weights, and so its gradients, in half the bytes
    (what makes 8B QLoRA fit 0.6x plain TRL's memory: docs/benchmarks.md); it still learns."""
    from safetensors.torch import load_file

    from train.sft import run_sft

    run = run_sft(config(data, tiny, tmp_path / "bf16", lora_dtype="bfloat16"), show_progress=False)
    m = run["metrics"]
    assert run["status"] == "done" and m["final_loss"] < m["first_loss"] - 0.05, m
    weights = load_file(tmp_path / "bf16" / "adapter_model.safetensors")
    assert weights and {str(t.dtype) for t in weights.values()} == {"torch.bfloat16"}
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)


def test_lora_dtype_bfloat16_on_a_float16_gpu_is_a_one_line_error(monkeypatch, tiny, data, tmp_path):
    import torch

    from train import loading, recipe

    monkeypatch.setattr(loading, "resolve_dtype", lambda dtype: (torch.float16, False))  # a T4, a V100
    with pytest.raises(UserError, match="lora_dtype: float32"):
        recipe.model_spec(config(data, tiny, tmp_path / "out", lora_dtype="bfloat16"), "tiny", str(tiny), 64)


def test_backend_auto_says_once_why_unsloth_is_not_used(monkeypatch, caplog):
    """auto falling back to transformers prints the reason once (a pipeline asks twice) and returns it for run.json."""
    from train import recipe, unsloth_adapter

    why = "unsloth cannot run here (NotImplementedError: no GPU)"
    monkeypatch.setattr(unsloth_adapter, "available", lambda: (False, why))
    monkeypatch.setattr(recipe, "_SAID", set())
    with caplog.at_level("WARNING", logger="distill.train"):
        assert recipe.choose_backend(TrainConfig()) == ("hf", why)
        assert recipe.choose_backend(TrainConfig()) == ("hf", why)
        assert recipe.choose_backend(TrainConfig(backend="hf")) == ("hf", None)
    said = [r.getMessage() for r in caplog.records if r.name == "distill.train"]
    assert said == [f"Unsloth unavailable: {why}; training with transformers"]
    spec = recipe.model_spec(TrainConfig().resolved("skill"), "embedded", "/models/x", 512)
    assert recipe.run_record(TrainConfig(), False, spec, "hf", why, "adamw_torch")["backend_fallback"] == why


def test_max_seq_length_beyond_the_context(tiny):
    from train import loading

    assert loading.seq_len(4096, False, str(tiny)) == 1024 and loading.seq_len(512, True, str(tiny)) == 512
    with pytest.raises(UserError, match="--max-seq-length 1024 or less"):
        loading.seq_len(4096, True, str(tiny))


def test_finished_run_is_returned_and_other_runs_refused(trained, tiny, data):
    from train.sft import run_sft

    out, run = trained
    again = run_sft(config(data, tiny, out, val_fraction=0.2, eval_steps=4), show_progress=False)
    assert again["metrics"] == run["metrics"]  # same config: nothing retrained
    with pytest.raises(UserError, match="holds a different run"):
        run_sft(config(data, tiny, out, lr=5e-3), show_progress=False)


@pytest.mark.parametrize("template,end", [(None, "<|im_end|>\n"), (LLAMA3_TEMPLATE, "<|eot_id|>")], ids=["chatml-smollm2", "llama3"])
def test_labels_cover_exactly_the_assistant_turn(tiny, template, end):
    from transformers import AutoTokenizer

    from train.data import encode

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    if template:
        tokenizer.chat_template = template
    rec = record(0, __import__("random").Random(1))
    for mode, must_see in (("closed-book", rec["question"]), ("open-book", rec["context"])):
        row = encode(tokenizer, rec, mode)
        ids, mask = row["input_ids"], row["completion_mask"]
        trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
        prompt = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
        assert trained == rec["messages"][-1]["content"] + end
        assert must_see in prompt and rec["answer"] not in prompt
        assert mask == sorted(mask)  # one block: prompt first, then the assistant turn


def test_all_labels_masked_fails_clearly(tmp_path, tiny, data):
    from train.sft import run_sft

    user_only = "{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>user\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    with pytest.raises(UserError, match="carry a label"):
        run_sft(config(data, tiny, tmp_path / "out", chat_template=user_only), show_progress=False)


def test_resume_after_kill_reaches_the_same_loss(tmp_path, tiny, data):
    from train.sft import run_sft

    steps = dict(max_steps=16, save_steps=4, lr=5e-3)
    straight = run_sft(config(data, tiny, tmp_path / "straight", **steps), show_progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "distill", "train", str(data), "--out", str(out), "--model", str(tiny), "--backend", "hf",
           "--lr", "5e-3", "--max-steps", "16", "--batch-size", "4", "-q", "save_steps=4", "seed=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob("checkpoints/checkpoint-*/COMPLETE")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "run.json").exists(), "the run finished before it could be killed"
    with pytest.raises(UserError, match="--resume"):
        run_sft(config(data, tiny, out, **steps), show_progress=False)
    resumed = run_sft(config(data, tiny, out, resume=True, **steps), show_progress=False)
    assert resumed["metrics"]["steps"] == 16
    assert resumed["metrics"]["final_loss"] == pytest.approx(straight["metrics"]["final_loss"], abs=2e-3)
    assert [r["step"] for r in metrics(out) if "loss" in r] == list(range(1, 17))
    assert resumed["metrics"]["tokens"] == straight["metrics"]["tokens"]  # counted over the whole run, not the resumed part


def test_adapter_and_merged_models_load_and_generate(trained, tmp_path, tiny, data):
    from common.generation import generate
    from evaluation.inference import load_model
    from train.sft import run_sft

    out, _ = trained
    merged = tmp_path / "merged"
    run_sft(config(data, tiny, merged, max_steps=2, save="merged"), show_progress=False)
    assert (merged / "config.json").exists() and not (merged / "adapter_config.json").exists()
    for folder in (out, merged):
        model, tokenizer = load_model(str(folder), device="cpu")
        answers = generate(model, tokenizer, [[{"role": "user", "content": "what runs every hour?"}]], max_new_tokens=4)
        assert len(answers) == 1 and isinstance(answers[0], str)
    from click.testing import CliRunner

    from distill.cli import cli as group

    asked = CliRunner().invoke(group, ["ask", str(out), "what runs every hour?", "--max-new-tokens", "4"])
    assert asked.exit_code == 0, asked.output
    chatted = CliRunner().invoke(group, ["chat", str(merged), "--max-new-tokens", "4"], input="hello\n/reset\nagain\n\n")
    assert chatted.exit_code == 0 and chatted.output.count("model>") == 2, chatted.output


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True)


@pytest.mark.skipif(not os.environ.get("LLAMA_CPP_DIR"), reason="set LLAMA_CPP_DIR to a llama.cpp source tree (docs/train.md)")
def test_gguf_holds_the_trained_model(tmp_path, tiny, data):
    """--save gguf: llama.cpp's converter writes q8_0; transformers reads it back to the merged model's logits."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "gguf"
    done = cli("train", str(data), "--out", str(out), "--model", str(tiny), "--backend", "hf", "--max-steps", "2", "--save", "gguf", "-q")
    assert done.returncode == 0, done.stderr[-2000:]
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    gguf = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-q8_0.gguf", dtype=torch.float32)
    ids = torch.tensor([[1, 520, 3000, 77, 9, 1200]])
    with torch.no_grad():
        a, b = merged(ids).logits, gguf(ids).logits
    assert (a - b).abs().max() < 0.05 * a.abs().max() and torch.equal(a.argmax(-1), b.argmax(-1))


# at 330 tokens the two ranks' first padded batches (4 rows of 84 and 82 tokens) need 2 parts and 1: unequal counts hung
# the run (TRL's loss gathers metrics from every rank on each call) before the ranks agreed on a part size
SPLIT_UNEVENLY = ("batching=padded", "group_by_length=false", "max_batch_tokens=330")


FIXED_SHAPES = (*SPLIT_UNEVENLY, "fixed_shapes=true")  # each rank's parts padded to the longest any rank needs


@pytest.mark.parametrize(
    "backend, extra",
    [("hf", ()), ("unsloth", ()), ("unsloth", SPLIT_UNEVENLY), ("unsloth", FIXED_SHAPES)],
    ids=["hf", "unsloth", "unsloth-split", "unsloth-fixed-shapes"],
)
def test_two_processes_train_one_run(tmp_path, tiny, data, backend, extra):
    """Data-parallel under torchrun (2 CPU processes, gloo): one report, one output directory, both ranks' tokens."""
    from train.sft import run_sft

    single = run_sft(config(data, tiny, tmp_path / "one", batch_size=8, max_steps=3), show_progress=False)  # 24 records: one epoch
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "distill", "train", str(data),
           "--out", str(out), "--model", str(tiny), "--backend", backend, "--batch-size", "4", "--max-steps", "3", "--lr", "1e-2", "--json", "-q", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"status"') == 1  # rank 0 alone reports
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == 2 and run["backend"] == backend and run["metrics"]["steps"] == 3 and run["metrics"]["epochs"] == 1.0
    assert run["batches"]["fixed_shapes"] is (extra == FIXED_SHAPES)
    assert run["metrics"]["tokens"] == single["metrics"]["tokens"]  # 2 ranks x 4 records x 3 steps = the same epoch
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2, 3]
    assert (out / "adapter_model.safetensors").exists() and not (out / "checkpoints").exists()


def test_two_processes_resume_after_a_kill(tmp_path, tiny, data):
    """A data-parallel run (2 CPU processes, launched by `distill train --gpus 2`) killed after a checkpoint and
    resumed (`--gpus 2 --resume`) ends where the uninterrupted run ends."""
    straight, resumed = killed_and_resumed(data, tiny, tmp_path, "hf", gpus_flag=True)
    assert straight["processes"] == 2 and straight["config"]["gpus"] == 2
    assert resumed["metrics"]["steps"] == 12
    assert resumed["metrics"]["final_loss"] == pytest.approx(straight["metrics"]["final_loss"], abs=2e-3)


def test_bad_input_is_a_one_line_error(tmp_path, tiny, data):
    from click.testing import CliRunner

    from distill.cli import cli as group

    bad = data_dir(tmp_path / "bad", n=4)
    lines = (bad / "train.jsonl").read_text().splitlines()
    (bad / "train.jsonl").write_text("\n".join(lines[:2] + ['{"question": "no answer"}'] + lines[3:]) + "\n")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something.txt").write_text("x")
    cases = [
        ([str(tmp_path / "nowhere")], "does not exist"),
        ([str(bad)], "train.jsonl:3 is not a valid record"),
        ([str(data), "--model", str(tmp_path / "missing-model")], "neither an existing directory"),
        ([str(data), "--method", "qlora"], "needs a CUDA GPU"),
        ([str(data), "--max-seq-length", "5000"], "longer than the model supports (1024"),
        ([str(data), "--out", str(taken)], "holds a different run"),
        ([str(data), "--save", "gguf"], "needs llama.cpp"),
    ]
    for args, message in cases:
        base = ["train", *args, "--backend", "hf"]
        if "--model" not in args:
            base += ["--model", str(tiny)]
        if "--out" not in args:
            base += ["--out", str(tmp_path / "o")]
        result = CliRunner().invoke(group, base, standalone_mode=False)
        assert isinstance(result.exception, UserError), (args, result.output, result.exception)
        assert message in str(result.exception) and "\n" not in str(result.exception)
    done = cli("train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr


def test_example_config_and_flags_load():
    for path in Path(__file__).resolve().parents[1].glob("examples/train*.yaml"):
        cfg = load_config(TrainConfig, path, {"epochs": 1}, ["lora_r=8"])
        assert cfg.epochs == 1 and cfg.lora_r == 8
        assert set(yaml.safe_load(path.read_text())) <= set(TrainConfig.model_fields)
    with pytest.raises(UserError, match="unknown key 'lora_rank'"):
        build(TrainConfig, {"lora_rank": 4})
    assert all(field.description for field in TrainConfig.model_fields.values())


def test_unsloth_cpu_fallback_smoke(tmp_path, tiny, data):
    """Unsloth in its own process (its patches must not leak): the CLI imports no ML library before
    the stage, the adapter imports Unsloth before transformers, peft and trl, and run.json says so."""
    done = cli("train", str(data), "--out", str(tmp_path / "u"), "--model", str(tiny), "--backend", "unsloth", "--max-steps", "2", "--json", "-q")
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads(done.stdout[done.stdout.index("{"):])
    assert run["backend"] == "unsloth" and run["metrics"]["steps"] == 2
    assert run["imported_before_unsloth"] == []
    assert run["unsloth_switches"]["UNSLOTH_GRPO_SEQ_PACKING"] == "0"
    assert "restructure your imports" not in done.stderr


UNSLOTH_SWITCHES = ("import transformers\nfrom train import unsloth_adapter\nunsloth_adapter.import_unsloth()\n"
                    "from unsloth.models import rl_replacements\nprint(unsloth_adapter.imported_before(), rl_replacements.UNSLOTH_GRPO_SEQ_PACKING_ON)")


@pytest.mark.parametrize("packing, on", [(None, False), ("1", True)])
def test_unsloth_adapter_reports_libraries_imported_before_it_and_sets_grpo_packing(packing, on):
    """The record the smoke test relies on is real: import transformers first and it is named. Unsloth's
    packed GRPO forward is off unless the user's environment turns it on (train/unsloth_adapter.py)."""
    env = {k: v for k, v in os.environ.items() if k != "UNSLOTH_GRPO_SEQ_PACKING"} | {"OMP_NUM_THREADS": "1"}
    if packing:
        env["UNSLOTH_GRPO_SEQ_PACKING"] = packing
    done = subprocess.run([sys.executable, "-c", UNSLOTH_SWITCHES], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"['transformers'] {on}"


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path, tiny, data):
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "distill", "train", str(data), "--out", str(out), "--model", str(tiny), "--backend", "hf",
           "--max-steps", "500", "-q", "save_steps=1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ((out / "metrics.jsonl").exists() and metrics(out)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert list(out.glob("checkpoints/checkpoint-*/COMPLETE")) and not (out / "run.json").exists()
    assert "--resume" in err


def test_batch_layout_defaults(monkeypatch, tiny, data, tmp_path):
    from train import loading
    from train.sft import batch_layout

    def layout(backend, model_config=None, **extra):
        return batch_layout(config(data, tiny, tmp_path, **extra), backend, model_config)

    free = {"padding_free": True, "group_by_length": False, "fixed_shapes": False}
    padded = {"padding_free": False, "group_by_length": True, "fixed_shapes": False}
    assert layout("unsloth") == {**free, "max_batch_tokens": None}  # no GPU here: padding-free
    assert layout("hf", batching="padded") == {**padded, "max_batch_tokens": None}  # auto budget only where Unsloth compiles
    assert layout("hf", batching="padded", max_batch_tokens=512) == {**padded, "max_batch_tokens": 512}
    assert layout("hf", batching="padded", group_by_length=False)["group_by_length"] is False
    assert layout("hf", batching="padded", fixed_shapes=True)["fixed_shapes"] is True  # asked for: wherever batches are padded
    assert layout("hf", fixed_shapes=True)["fixed_shapes"] is False  # padding-free rows have no shape to fix
    monkeypatch.setattr(loading, "device", lambda: "cuda")
    assert layout("unsloth") == {**padded, "max_batch_tokens": 8192}  # GPU + Unsloth: padded, compiled blocks, split over a budget
    llama_8b = SimpleNamespace(intermediate_size=14336)
    assert layout("unsloth", llama_8b) == {**padded, "max_batch_tokens": 3072}  # the budget follows the model's MLP width
    assert layout("unsloth", llama_8b, method="qlora") == {**padded, "max_batch_tokens": 3072}  # the same rule for a 4-bit base
    assert layout("unsloth", llama_8b, max_batch_tokens=10240)["max_batch_tokens"] == 10240  # asked for
    assert layout("unsloth", fixed_shapes=True) == {**padded, "max_batch_tokens": 8192, "fixed_shapes": True}  # asked for
    assert layout("unsloth", max_batch_tokens=None) == {**padded, "max_batch_tokens": None}
    assert layout("hf") == {**free, "max_batch_tokens": None}
    assert layout("unsloth", packing=True) == {**free, "max_batch_tokens": None}
    assert layout("unsloth", method="full") == {**free, "max_batch_tokens": None}  # measured for LoRA and QLoRA only


def test_the_auto_token_budget_keeps_the_mlp_backward_buffers_near_half_a_gib():
    """Six bf16 buffers of tokens x intermediate_size set a padded micro-batch's peak (docs/benchmarks.md): the budget
    is the nearest 1,024 tokens that keeps them near 2**29 bytes."""
    from train.sft import auto_batch_tokens

    def budget(width):
        return auto_batch_tokens(SimpleNamespace(intermediate_size=width))

    assert budget(5632) == 8192  # the 1.17B Llama of bench/train_throughput.py: the budget measured since 2026-11-28
    assert budget(14336) == 3072  # Llama-3-8B
    assert budget(18944) == 2048  # Qwen2.5-7B
    assert budget(8960) == 5120  # Qwen2.5-1.5B
    assert budget(64) == 699392  # the tests' tiny model: never split
    assert budget(200_000) == 1024  # never below one part of 1,024 tokens
    assert auto_batch_tokens(SimpleNamespace(text_config=SimpleNamespace(intermediate_size=14336))) == 3072  # multimodal
    assert auto_batch_tokens(SimpleNamespace(hidden_size=4096)) == 8192  # no MLP width named: 8,192
    assert auto_batch_tokens(None) == 8192


def test_optimizer_auto_keeps_adam_state_in_8_bits_on_a_gpu(monkeypatch, tiny, data, tmp_path):
    import importlib.util

    from train import loading

    def optim(**extra):
        return loading.resolve_optim(config(data, tiny, tmp_path, **extra).optim)

    assert optim() == "adamw_torch"  # no GPU here
    assert optim(optim="sgd") == "sgd"
    monkeypatch.setattr(loading, "device", lambda: "cuda")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "bitsandbytes" else None)
    assert optim() == "adamw_8bit"
    assert optim(optim="adamw_torch") == "adamw_torch"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert optim() == "adamw_torch"  # no bitsandbytes: full-precision Adam


def test_padded_and_padding_free_batches_give_the_same_loss(tmp_path, tiny, data):
    """Same records in the same order: pad tokens must change neither the loss nor its normalisation."""
    from train.sft import run_sft

    runs = {mode: run_sft(config(data, tiny, tmp_path / mode, batching=mode, group_by_length=False, max_steps=2), show_progress=False)
            for mode in ("padded", "padding-free")}
    assert runs["padded"]["batches"]["padding_free"] is False and runs["padding-free"]["batches"]["padding_free"] is True
    first = {mode: run["metrics"]["first_loss"] for mode, run in runs.items()}
    assert first["padded"] == pytest.approx(first["padding-free"], rel=1e-4)
    assert runs["padded"]["metrics"]["tokens"] == runs["padding-free"]["metrics"]["tokens"]  # real tokens only, both ways


def test_grouped_batches_hold_records_of_similar_length(monkeypatch, tmp_path, tiny):
    """group_by_length draws each padded batch from records of similar length: far less padding than random batches."""
    import train.trainer
    from train.sft import run_sft

    make_class, seen = train.trainer.trainer_class, []

    def recording_class(backend, gpu):
        cls = make_class(backend, gpu)

        def training_step(self, model, inputs, *args, **kwargs):
            seen.append(inputs["attention_mask"].sum(dim=1).tolist())  # real tokens of each record in the batch
            return cls.training_step(self, model, inputs, *args, **kwargs)

        return type("Recording", (cls,), {"training_step": training_step})

    monkeypatch.setattr(train.trainer, "trainer_class", recording_class)
    many = data_dir(tmp_path / "data", n=64)
    spread = {}
    for grouped in (True, False):
        seen.clear()
        run = run_sft(config(many, tiny, tmp_path / str(grouped), batching="padded", group_by_length=grouped, max_steps=8, lr=1e-4), show_progress=False)
        expected = {"padding_free": False, "group_by_length": grouped, "max_batch_tokens": None, "fixed_shapes": False}
        assert run["batches"] == expected and len(seen) == 8
        spread[grouped] = sum(max(batch) - min(batch) for batch in seen) / len(seen)
    assert spread[True] < spread[False] / 2


def test_split_rows_keeps_every_row_once_under_the_budget():
    import torch

    from train.trainer import split_rows

    lengths = [9, 3, 7, 2, 8, 1, 4, 5]
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    ids = torch.arange(1, 73).reshape(8, 9) * mask
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100), "note": "kept"}
    assert split_rows(batch, None) == [batch] and split_rows(batch, 72) == [batch]
    parts = split_rows(batch, 40)
    assert [tuple(p["input_ids"].shape) for p in parts] == [(4, 9), (4, 4)]  # equal row counts, longest rows first, pad columns cut
    rows = sorted(tuple(r[r != 0].tolist()) for p in parts for r in p["input_ids"] * p["attention_mask"])
    assert rows == sorted(tuple(r[r != 0].tolist()) for r in ids)  # every row once, no real token lost
    assert all(p["attention_mask"].any(dim=0).all() and p["note"] == "kept" for p in parts)  # no all-pad column left
    assert [p["input_ids"].shape[0] for p in split_rows(batch, 16)] == [1] * 8  # two rows of 9 exceed 16: one row a part


def test_split_rows_trains_as_many_parts_on_every_rank(monkeypatch):
    import torch

    from train import ranks
    from train.trainer import split_rows

    other = {"size": 2, "rows": 4}  # what the other rank computed: its batch of 4 rows needs parts of 2

    def least(*values):
        return [min(values[0], other["size"]), min(values[1], other["rows"]), min(values[2], -other["rows"])]

    monkeypatch.setattr(ranks, "world_size", lambda: 2)
    monkeypatch.setattr(ranks, "least", least)
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in (5, 2, 4, 3)])
    batch = {"input_ids": torch.arange(1, 21).reshape(4, 5) * mask, "attention_mask": mask}
    assert [tuple(p["input_ids"].shape) for p in split_rows(batch, 64)] == [(2, 5), (2, 3)]  # fits here, split as the other rank's
    other["rows"] = 3  # ranks holding unequal rows cannot agree on a count: every rank keeps its batch whole
    assert split_rows(batch, 64) == [batch]
    other.update(size=4, rows=4)
    assert split_rows(batch, 64) == [batch]


def test_fixed_parts_hold_every_row_once_in_one_shape(monkeypatch):
    import torch

    from train import ranks
    from train.shapes import fixed_parts, shaped_length

    assert [shaped_length(n) for n in (1, 256, 257, 1300, 2048, 2049, 5000)] == [256, 256, 512, 1536, 2048, 2560, 5120]
    lengths = [9, 3, 7, 2, 8]
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    ids = torch.arange(1, 46).reshape(5, 9) * mask
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100), "note": "kept"}
    parts = fixed_parts(batch, 512)  # 2 rows of 256 fit the budget: three parts of 2 x 256, the last with a filler row
    assert [tuple(p[k].shape) for p in parts for k in ("input_ids", "attention_mask", "labels")] == [(2, 256)] * 9
    rows = [tuple(r[m.bool()].tolist()) for p in parts for r, m in zip(p["input_ids"], p["attention_mask"])]
    assert sorted(rows[:5]) == sorted(tuple(r[r != 0].tolist()) for r in ids) and rows[5] == (1,)  # each row once, longest first
    assert [len(r) for r in rows[:5]] == sorted(lengths, reverse=True)
    labels = [r[r != -100].tolist() for p in parts for r in p["labels"]]
    assert sorted(map(tuple, labels[:5])) == sorted(rows[:5]) and labels[5] == []  # the filler row teaches nothing
    assert all(p["note"] == "kept" for p in parts)
    assert [tuple(p["input_ids"].shape) for p in fixed_parts(batch, None)] == [(8, 256)]  # no budget: one part, 3 filler rows
    padded = fixed_parts(batch, None, pad_id=7)[0]  # new positions hold the tokenizer's pad token, as the collator pads
    assert set(padded["input_ids"][:, 9:].flatten().tolist()) == {7} and set(padded["input_ids"][5:, 1:].flatten().tolist()) == {7}
    left = {**batch, "attention_mask": mask.flip(1)}
    assert fixed_parts(left, 512) is None  # left padding: trained as distill otherwise would
    monkeypatch.setattr(ranks, "least", lambda *values: [values[0], min(values[1], -1024), *values[2:]])  # a rank needs 1024
    assert [tuple(p["input_ids"].shape) for p in fixed_parts(batch, 4096)] == [(4, 1024), (4, 1024)]
    monkeypatch.setattr(ranks, "least", lambda *values: [values[0], values[1], values[2] - 1, values[3]])  # a rank holds fewer rows
    assert fixed_parts(batch, 4096) is None
    monkeypatch.setattr(ranks, "least", lambda *values: [0, *values[1:]])  # a rank's batch cannot be shaped: none is
    assert fixed_parts(batch, 4096) is None
    calls = []
    monkeypatch.setattr(ranks, "least", lambda *values: calls.append(values) or list(values))
    assert fixed_parts(left, 4096) is None and len(calls) == 1  # this rank still makes the exchange the others make


def test_fixed_shapes_give_the_same_update(tmp_path, tiny, data):
    """fixed_shapes trains each batch in parts of one padded shape, with filler rows; the update is the whole batch's."""
    from safetensors.torch import load_file

    from train.sft import run_sft

    exact = dict(dtype="float32", optim="sgd", lr=0.5, warmup_ratio=0.0, batching="padded", group_by_length=False, max_steps=3)
    runs = {}
    for name, extra in (("whole", {}), ("one part", {"fixed_shapes": True}), ("parts", {"fixed_shapes": True, "max_batch_tokens": 512})):
        out = tmp_path / name
        run = run_sft(config(data, tiny, out, **exact, **extra), show_progress=False)
        runs[name] = (run, load_file(out / "adapter_model.safetensors"))
    whole, weights = runs.pop("whole")
    assert whole["batches"]["fixed_shapes"] is False
    for run, other in runs.values():
        assert run["batches"]["fixed_shapes"] is True
        assert [run["metrics"][k] for k in ("first_loss", "final_loss", "tokens")] == pytest.approx(
            [whole["metrics"][k] for k in ("first_loss", "final_loss", "tokens")], rel=1e-5)
        assert all(torch_close(weights[k], other[k]) for k in weights)


def test_split_batches_give_the_same_update(monkeypatch, tmp_path, tiny, data):
    """max_batch_tokens trains a batch in parts whose gradients add up to the whole batch's."""
    from safetensors.torch import load_file

    import train.trainer
    from train.sft import run_sft

    real_split, parts = train.trainer.split_rows, []

    def counted_split(inputs, budget):
        out = real_split(inputs, budget)
        parts.append(len(out))
        return out

    monkeypatch.setattr(train.trainer, "split_rows", counted_split)
    runs = {}
    for name, budget in (("whole", None), ("split", 120)):
        out = tmp_path / name
        # float32 and plain SGD: the weights move by the gradient itself, free of bfloat16 rounding (which depends on
        # the batch shape) and of Adam's normalisation (which amplifies rounding in tiny gradients)
        exact = dict(dtype="float32", optim="sgd", lr=0.5, warmup_ratio=0.0)
        run = run_sft(config(data, tiny, out, batching="padded", group_by_length=False, max_steps=3, max_batch_tokens=budget, **exact), show_progress=False)
        runs[name] = (run, load_file(out / "adapter_model.safetensors"))
    (whole, a), (split, b) = runs["whole"], runs["split"]
    assert [whole["metrics"][k] for k in ("first_loss", "final_loss")] == pytest.approx([split["metrics"][k] for k in ("first_loss", "final_loss")], rel=1e-5)
    assert whole["metrics"]["tokens"] == split["metrics"]["tokens"]
    assert parts[:3] == [1, 1, 1] and min(parts[3:]) >= 3  # the budgeted run really trained each batch in parts
    assert all(torch_close(a[k], b[k]) for k in a)


def torch_close(x, y) -> bool:
    import torch

    return torch.allclose(x, y, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_only_where_torch_runs_avx512_kernels(monkeypatch, tmp_path):
    """A CPU with AVX512-BF16 whose torch kernels are AVX2 (ATEN_CPU_CAPABILITY=avx2, how a CPU without
    AVX-512 is emulated) emulates bfloat16: it trains in float32, as that CPU would."""
    import train.loading as loading

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    monkeypatch.setattr(loading, "Path", lambda path: cpuinfo)
    monkeypatch.setattr(loading.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert loading.cpu_has_bf16()
    monkeypatch.setattr(loading.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not loading.cpu_has_bf16()
