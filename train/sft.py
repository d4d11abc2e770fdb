"""`distill train` as one program: setup -> run -> save.

setup: check the output directory and the request (quantisation needs a GPU, sequence length
       fits the model, GGUF needs llama.cpp), choose the recipe (knowledge or skill: its `auto`
       hyperparameters) and say why, pick the backend (Unsloth, else transformers + PEFT), resolve
       the model spec, load the student, tokenize train.jsonl with assistant-only labels and check them.
run:   TRL's SFTTrainer, padding-free or padded batches (or packing), a checkpoint every `save_steps`
       marked complete only once fully written; Ctrl-C saves a checkpoint and stops.
save:  the adapter (or merged model / GGUF), tokenizer, metrics.jsonl, loss.png and run.json
       (resolved config, data manifest hash, base model, versions) — run.json last; then the
       checkpoints are removed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from common.models import resolve_model
from train import loading, ranks, recipe, unsloth_adapter
from train.config import TrainConfig
from train.data import TrainData, check_batch, choose_recipe, prepare, read_data_dir
from train.saving import check_save, plot_loss, save_model
from train.spec import ModelSpec

LOG = logging.getLogger("distill.train")


@dataclass
class Plan:
    out: Path
    spec: ModelSpec
    backend: str
    fallback: str | None  # why `backend: auto` did not use Unsloth
    model: object
    tokenizer: object
    data: TrainData
    kind: str  # the recipe: knowledge | skill
    why: str  # why that recipe
    resume_from: Path | None
    batches: dict  # batch_layout: how micro-batches hold their records
    optim: str  # the optimizer `auto` resolved to


def run_sft(cfg: TrainConfig, show_progress: bool = True) -> dict:
    """Train; returns the run.json dict (also for a run that had already finished)."""
    started = time.time()
    ident = recipe.identity(cfg)  # before `auto` hyperparameters are resolved by the data's kind
    with ranks.main_first():  # under torchrun: rank 0 checks (and --overwrite clears) first
        finished = recipe.check_out(cfg, ident)
    if finished is not None:
        return finished
    plan, cfg = setup(cfg, ident, announce=show_progress)
    trainer, interrupted = run(cfg, plan, show_progress)
    return save(cfg, plan, trainer, interrupted, started)


# ---------------------------------------------------------------- setup


def setup(cfg: TrainConfig, ident: dict, announce: bool = True) -> tuple[Plan, TrainConfig]:
    """(the plan, the config with its `auto` hyperparameters resolved for the data's kind). Cheap checks
    first (none imports transformers): data, recipe, method, output format; then the backend, which must be
    imported before transformers, peft and trl; then the model and the data. `announce`: say the recipe
    chosen and why in one line (not under -q; run.json keeps it either way)."""
    source = read_data_dir(cfg.data, cfg.split)
    kind, why = choose_recipe(source, cfg.recipe)
    cfg = cfg.resolved(kind)
    if ranks.is_main() and announce:
        LOG.warning("recipe: %s (%s): %s epochs, lr %s, LoRA rank %s", kind, why, cfg.epochs, cfg.lr, cfg.lora_r)
    loading.check_method(cfg.method)
    check_save(cfg.save)
    backend, fallback = recipe.choose_backend(cfg)
    path = resolve_model(cfg.model)  # converting the embedded model imports transformers
    explicit = "max_seq_length" in cfg.model_fields_set
    spec = recipe.model_spec(cfg, cfg.model, path, loading.seq_len(cfg.max_seq_length, explicit, path))
    resume_from = recipe.start(cfg)
    model, tokenizer = unsloth_adapter.load(spec) if backend == "unsloth" else loading.load_hf(spec)
    data = prepare(cfg, tokenizer, source, spec.max_seq_length, kind)
    recipe.claim(Path(cfg.out), ident)
    batches = batch_layout(cfg, backend, model.config)
    optim = loading.resolve_optim(cfg.optim)
    plan = Plan(Path(cfg.out), spec, backend, fallback, model, tokenizer, data, kind, why, resume_from, batches, optim)
    return plan, cfg


# ---------------------------------------------------------------- run


def sft_args(cfg: TrainConfig, plan: Plan):
    from trl import SFTConfig

    has_val = bool(plan.data.val)
    return SFTConfig(
        **recipe.common_args(cfg, plan.spec, plan.backend, plan.model, plan.out, plan.optim),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=plan.spec.max_seq_length if cfg.packing else None,  # unpacked records are length-checked in prepare
        packing=cfg.packing,
        packing_strategy="bfd",
        padding_free=plan.batches["padding_free"],
        pad_to_multiple_of=None if plan.batches["padding_free"] else cfg.pad_to_multiple_of,
        train_sampling_strategy="group_by_length" if plan.batches["group_by_length"] else "random",
        eval_strategy="steps" if has_val else "no",
        eval_steps=cfg.eval_steps if has_val else None,
    )


# What sets a padded micro-batch's peak (docs/benchmarks.md, the allocator's history at the peak): Unsloth's LoRA-MLP
# and SwiGLU backward hold six buffers of tokens x intermediate_size in bf16. `auto` keeps them near half a GiB:
# 8,192 tokens on the 1.17B Llama (intermediate 5,632), 3,072 on the Llama-3-8B shape (14,336; QLoRA r 32, batch 8,
# a whole epoch on an H100: 0.590x plain TRL's peak at 2.00-2.08x its tokens/s, where 10,240 tokens held 0.752x).
MLP_BUFFERS_BYTES = 2**29
AUTO_BATCH_TOKENS = 8192  # a model whose config names no intermediate_size


def auto_batch_tokens(model_config) -> int:
    """The `max_batch_tokens: auto` budget for this model: six MLP-wide bf16 buffers within MLP_BUFFERS_BYTES,
    to the nearest 1,024 tokens (at least 1,024)."""
    text = getattr(model_config, "text_config", None) or model_config  # multimodal configs nest the language model's
    width = getattr(text, "intermediate_size", None)
    if not isinstance(width, int) or width <= 0:
        return AUTO_BATCH_TOKENS
    return max(1024, round(MLP_BUFFERS_BYTES / (6 * 2 * width) / 1024) * 1024)


def batch_layout(cfg: TrainConfig, backend: str, model_config=None) -> dict:
    """{padding_free, group_by_length, max_batch_tokens, fixed_shapes} for this run. Packed rows are
    always padding-free. auto: padded batches of similar lengths for LoRA/QLoRA with Unsloth on a GPU,
    where it compiles each decoder block for them (padding-free batches run eagerly there and
    leave the GPU waiting on Python), split over a token budget that keeps the peak memory down;
    padding-free elsewhere. Fixed-shape parts only where asked for (fixed_shapes).
    """
    compiled = backend == "unsloth" and loading.device() == "cuda" and cfg.method in ("lora", "qlora")  # measured there
    padded = not cfg.packing and (cfg.batching == "padded" or (cfg.batching == "auto" and compiled))
    grouped = padded if cfg.group_by_length == "auto" else cfg.group_by_length
    budget = cfg.max_batch_tokens
    if budget == "auto":
        budget = auto_batch_tokens(model_config) if padded and compiled else None
    return {
        "padding_free": not padded,
        "group_by_length": bool(grouped),
        "max_batch_tokens": budget if padded else None,
        "fixed_shapes": padded and cfg.fixed_shapes,
    }


def datasets_of(data: TrainData):
    from datasets import Dataset

    def rows(items):
        return [
            {
                "input_ids": r["input_ids"],
                "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])],
                "length": len(r["input_ids"]),
            }
            for r in items
        ]

    return Dataset.from_list(rows(data.train)), (Dataset.from_list(rows(data.val)) if data.val else None)


def run(cfg: TrainConfig, plan: Plan, show_progress: bool):
    """Train to the end, or to the first Ctrl-C (which still saves a checkpoint)."""
    from transformers.trainer_callback import PrinterCallback

    from train.callbacks import CheckpointMarker, Metrics, ProgressBar, RecallProbe, StopOnSignal, train_until_stopped
    from train.trainer import trainer_class

    train_ds, val_ds = datasets_of(plan.data)
    metrics = Metrics(plan.out / "metrics.jsonl", recipe.resume_step(plan.resume_from), write=ranks.is_main())
    stop = StopOnSignal()
    trainer = trainer_class(plan.backend, loading.device() == "cuda")(
        model=plan.model,
        args=sft_args(cfg, plan),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=plan.tokenizer,
        callbacks=[
            CheckpointMarker(cfg.keep_checkpoints),
            metrics,
            ProgressBar(metrics, show_progress and ranks.is_main()),
            stop,
        ],
    )
    if plan.data.probe:
        generating = unsloth_adapter.generating if plan.backend == "unsloth" else None
        probe = RecallProbe(
            plan.data.probe,
            plan.data.mode,
            plan.tokenizer,
            metrics,
            cfg.early_stop,
            generating,
            budget=cfg.probe_budget,
        )
        trainer.add_callback(probe)
    trainer.distill_batch_tokens = plan.batches["max_batch_tokens"]
    trainer.distill_fixed_shapes = plan.batches["fixed_shapes"]
    trainer.distill_tokens = (
        metrics.tokens if ranks.is_main() else 0
    )  # a resumed run counts on (the logged total of all ranks)
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace its printed dicts
    sample = [trainer.train_dataset[i] for i in range(min(cfg.batch_size, len(trainer.train_dataset)))]
    check_batch(trainer.data_collator(sample))
    train_until_stopped(trainer, stop, plan.resume_from)
    return trainer, stop.stopped


# ---------------------------------------------------------------- save


def summary(trainer, metrics_rows: list[dict], seconds: float) -> dict:
    losses = [r["loss"] for r in metrics_rows if "loss" in r]
    evals = [r["eval_loss"] for r in metrics_rows if "eval_loss" in r]
    rates = [r["tokens_per_s"] for r in metrics_rows if "tokens_per_s" in r]
    recall = [r for r in metrics_rows if "recall_val" in r]
    steady = rates[len(rates) // 4 :] or rates  # the first quarter holds warm-up (compilation, allocator)
    return {
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 4),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "final_val_loss": evals[-1] if evals else None,
        "recall_val": recall[-1]["recall_val"] if recall else None,
        "recall_train": recall[-1]["recall_train"] if recall else None,
        "tokens": ranks.total(trainer.distill_tokens),
        "tokens_per_s": round(sum(steady) / len(steady), 2) if steady else None,
        "train_seconds": round(seconds, 2),
        **recipe.peak_memory(),
    }


def save(cfg: TrainConfig, plan: Plan, trainer, interrupted: bool, started: float) -> dict:
    rows = recipe.read_metrics(plan.out)
    data = plan.data
    record = recipe.run_record(cfg, interrupted, plan.spec, plan.backend, plan.fallback, plan.optim)
    record |= {
        "recipe": {"kind": plan.kind, "why": plan.why},
        "batches": plan.batches,
        "data_format": data.format,
        "data": {
            "dir": str(Path(cfg.data).resolve()),
            **data.source,
            "split_by": data.split_by,
            "kind": plan.kind,
            "prompt_mode": data.mode,
            "dropped_too_long": data.dropped_too_long,
            **data.stats,
        },
        "metrics": summary(trainer, rows, time.time() - started),
    }
    return recipe.finish(
        record,
        plan.out,
        interrupted,
        plot=lambda: plot_loss(rows, plan.out / "loss.png"),
        save=lambda: save_model(plan.spec, cfg.save, cfg.gguf_quant, trainer.model, plan.tokenizer, plan.out),
    )
