"""`distill train` as one program: setup -> run -> save.

setup: check the output directory and the request (quantisation needs a GPU, sequence length
       fits the model, GGUF needs llama.cpp), pick the backend (Unsloth, else transformers +
       PEFT), load the student, tokenize train.jsonl with assistant-only labels and check them.
run:   TRL's SFTTrainer, padding-free or padded batches (or packing), a checkpoint every `save_steps`
       marked complete only once fully written; Ctrl-C saves a checkpoint and stops.
save:  the adapter (or merged model / GGUF), tokenizer, metrics.jsonl, loss.png and run.json
       (resolved config, data manifest hash, base model, versions) — run.json last; then the
       checkpoints are removed.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import UserError
from common.io import is_temp, write_json
from common.models import resolve_model
from common.versions import versions
from train import loading, ranks, unsloth_adapter
from train.config import TrainConfig
from train.data import TrainData, check_batch, kind_of, prepare, read_data_dir, split_of
from train.saving import check_save, plot_loss, save_model

RUN_CONFIG = "train_config.json"  # written at start: identifies the run an output directory holds
NOT_IDENTITY = {"out", "resume", "overwrite", "threads"}  # fields that do not change what is trained


@dataclass
class Plan:
    out: Path
    base: str
    backend: str
    model: object
    tokenizer: object
    data: TrainData
    autocast_bf16: bool
    resume_from: Path | None
    batches: dict  # batch_layout: how micro-batches hold their records
    optim: str  # the optimizer `auto` resolved to


def run_sft(cfg: TrainConfig, show_progress: bool = True) -> dict:
    """Train; returns the run.json dict (also for a run that had already finished)."""
    started = time.time()
    ident = identity(cfg)  # before setup fills in defaults that depend on the model (max_seq_length)
    with ranks.main_first():  # under torchrun: rank 0 checks (and --overwrite clears) first
        finished = check_out(cfg, ident)
    if finished is not None:
        return finished
    source = read_data_dir(cfg.data, cfg.split)  # cheap checks first (none imports transformers): data, method, output format
    cfg = cfg.resolved(kind_of(split_of(source, cfg.prompt_mode)))  # `auto` hyperparameters, by the data's kind
    plan = setup(cfg, ident, source)
    trainer, interrupted = run(cfg, plan, show_progress)
    return save(cfg, plan, trainer, interrupted, started)


# ---------------------------------------------------------------- setup


def identity(cfg: TrainConfig) -> dict:
    return cfg.model_dump(exclude=NOT_IDENTITY)


def check_out(cfg: TrainConfig, ident: dict) -> dict | None:
    """Refuse an output directory holding another run; return run.json if this run is done already."""
    out = Path(cfg.out)
    if cfg.overwrite and out.exists():
        shutil.rmtree(out)
    if not out.exists() or all(is_temp(p) for p in out.iterdir()):  # temp files: a run killed while writing its first file
        return None
    stored = out / RUN_CONFIG
    if not stored.is_file() or json.loads(stored.read_text()) != ident:
        raise UserError(f"output directory {out} holds a different run; pass --overwrite to replace it or choose another --out")
    if (out / "run.json").is_file():
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # left by a kill while a finished run removed them
        return json.loads((out / "run.json").read_text())
    if not cfg.resume:
        raise UserError(f"output directory {out} holds an unfinished run of this config; pass --resume to continue it or --overwrite to start over")
    return None


def choose_backend(cfg: TrainConfig) -> str:
    if cfg.backend == "hf":
        return "hf"
    ok, why = unsloth_adapter.available()
    if ok:
        return "unsloth"
    if cfg.backend == "unsloth":
        raise UserError(f"--backend unsloth: {why}; use --backend hf or auto")
    return "hf"


def setup(cfg: TrainConfig, ident: dict, source) -> Plan:
    loading.check_method(cfg)
    check_save(cfg)
    backend = choose_backend(cfg)  # Unsloth must be imported before transformers, peft and trl
    base = resolve_model(cfg.model)  # converting the embedded model imports transformers
    from transformers import set_seed

    from train.callbacks import latest_checkpoint

    loading.check_seq_len(cfg, base)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    resume_from = latest_checkpoint(out / "checkpoints") if cfg.resume else None
    set_seed(cfg.seed)
    dtype, autocast = loading.resolve_dtype(cfg)
    if backend == "unsloth":
        model, tokenizer = unsloth_adapter.load(cfg, base, dtype)
    else:
        model, tokenizer = loading.load_hf(cfg, base)
    data = prepare(cfg, tokenizer, source)
    out.mkdir(parents=True, exist_ok=True)
    if ranks.is_main():
        write_json(out / RUN_CONFIG, ident)
    return Plan(out, base, backend, model, tokenizer, data, autocast, resume_from, batch_layout(cfg, backend), loading.resolve_optim(cfg))


# ---------------------------------------------------------------- run


def common_args(cfg, plan) -> dict:
    """The Trainer arguments every stage sets alike, from its config and plan (SFT's and GRPO's)."""
    gpu = loading.device() == "cuda"
    dtype = next(plan.model.parameters()).dtype
    checkpointing = loading.use_checkpointing(cfg) and plan.backend == "hf"  # Unsloth set its own up at load
    return dict(
        output_dir=str(plan.out / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=cfg.weight_decay,
        optim=plan.optim,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=(gpu and dtype == torch.bfloat16) or plan.autocast_bf16,
        fp16=gpu and dtype == torch.float16,
        use_cpu=not gpu,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        ddp_find_unused_parameters=False,  # every trainable weight is used in every step
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # CheckpointMarker(cfg.keep_checkpoints) rotates, once the new checkpoint is marked
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def sft_args(cfg: TrainConfig, plan: Plan):
    from trl import SFTConfig

    has_val = bool(plan.data.val)
    return SFTConfig(
        **common_args(cfg, plan),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_seq_length if cfg.packing else None,  # without packing, records are length-checked in prepare
        packing=cfg.packing,
        packing_strategy="bfd",
        padding_free=plan.batches["padding_free"],
        pad_to_multiple_of=None if plan.batches["padding_free"] else cfg.pad_to_multiple_of,
        train_sampling_strategy="group_by_length" if plan.batches["group_by_length"] else "random",
        eval_strategy="steps" if has_val else "no",
        eval_steps=cfg.eval_steps if has_val else None,
    )


# docs/benchmarks.md: under half (LoRA) and a third (QLoRA) of plain TRL's peak memory at about 2x its speed (H200, 1B model)
AUTO_BATCH_TOKENS = {"lora": 8192, "qlora": 10240}


def batch_layout(cfg: TrainConfig, backend: str) -> dict:
    """{padding_free, group_by_length, max_batch_tokens} for this run. Packed rows are always
    padding-free. auto: padded batches of similar lengths for LoRA/QLoRA with Unsloth on a GPU,
    where it compiles each decoder block for them (padding-free batches run eagerly there and
    leave the GPU waiting on Python), split over a token budget that keeps the peak memory down;
    padding-free elsewhere.
    """
    compiled = backend == "unsloth" and loading.device() == "cuda" and cfg.method in ("lora", "qlora")  # measured there
    padded = not cfg.packing and (cfg.batching == "padded" or (cfg.batching == "auto" and compiled))
    grouped = padded if cfg.group_by_length == "auto" else cfg.group_by_length
    budget = cfg.max_batch_tokens
    if budget == "auto":
        budget = AUTO_BATCH_TOKENS[cfg.method] if padded and compiled else None
    return {"padding_free": not padded, "group_by_length": bool(grouped), "max_batch_tokens": budget if padded else None}


def datasets_of(data: TrainData):
    from datasets import Dataset

    def rows(items):
        return [
            {"input_ids": r["input_ids"], "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])], "length": len(r["input_ids"])}
            for r in items
        ]

    return Dataset.from_list(rows(data.train)), (Dataset.from_list(rows(data.val)) if data.val else None)


def run(cfg: TrainConfig, plan: Plan, show_progress: bool):
    """Train to the end, or to the first Ctrl-C (which still saves a checkpoint)."""
    from transformers.trainer_callback import PrinterCallback

    from train.callbacks import CheckpointMarker, Metrics, ProgressBar, RecallProbe, StopOnSignal, train_until_stopped
    from train.trainer import trainer_class

    train_ds, val_ds = datasets_of(plan.data)
    resume_step = int(plan.resume_from.name.split("-")[-1]) if plan.resume_from else 0
    metrics = Metrics(plan.out / "metrics.jsonl", resume_step, write=ranks.is_main())
    stop = StopOnSignal()
    trainer = trainer_class(plan.backend, loading.device() == "cuda")(
        model=plan.model,
        args=sft_args(cfg, plan),
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=plan.tokenizer,
        callbacks=[CheckpointMarker(cfg.keep_checkpoints), metrics, ProgressBar(metrics, show_progress and ranks.is_main()), stop],
    )
    if plan.data.probe:
        generating = unsloth_adapter.generating if plan.backend == "unsloth" else None
        probe = RecallProbe(plan.data.probe, plan.data.mode, plan.tokenizer, metrics, cfg.early_stop, generating, budget=cfg.probe_budget)
        trainer.add_callback(probe)
    trainer.distill_batch_tokens = plan.batches["max_batch_tokens"]
    trainer.distill_tokens = metrics.tokens if ranks.is_main() else 0  # a resumed run counts on (the logged total of all ranks)
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace its printed dicts
    sample = [trainer.train_dataset[i] for i in range(min(cfg.batch_size, len(trainer.train_dataset)))]
    check_batch(trainer.data_collator(sample))
    train_until_stopped(trainer, stop, plan.resume_from)
    return trainer, stop.stopped


# ---------------------------------------------------------------- save


def peak_memory_gib() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # CPU: peak RSS of the process


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
        "peak_memory_gib": peak_memory_gib(),
        "peak_memory_of": "cuda allocated" if torch.cuda.is_available() else "process RSS",
    }


def save(cfg: TrainConfig, plan: Plan, trainer, interrupted: bool, started: float) -> dict:
    rows = [json.loads(line) for line in (plan.out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    record = {
        "status": "interrupted" if interrupted else "done",
        "config": cfg.model_dump(),
        "base_model": {"name": cfg.model, "path": plan.base},
        "backend": plan.backend,
        "imported_before_unsloth": unsloth_adapter.imported_before() if plan.backend == "unsloth" else None,
        "processes": ranks.world_size(),
        "batches": plan.batches,
        "optimizer": plan.optim,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "data_format": plan.data.format,
        "data": {"dir": str(Path(cfg.data).resolve()), **plan.data.source, "split_by": plan.data.split_by, "kind": kind_of(plan.data.split_by),
                 "prompt_mode": plan.data.mode, "dropped_too_long": plan.data.dropped_too_long, **plan.data.stats},
        "metrics": summary(trainer, rows, time.time() - started),
        "versions": versions(),
    }
    if not ranks.is_main():
        return record  # rank 0 writes the output directory
    plot_loss(rows, plan.out / "loss.png")
    if interrupted:
        return record  # the checkpoint is saved; `--resume` continues (no model, no run.json yet)
    record["files"] = save_model(cfg, trainer.model, plan.tokenizer, plan.base, plan.out)
    write_json(plan.out / "run.json", record)  # the run is done: a kill from here on leaves it done
    from train.callbacks import remove_checkpoints

    remove_checkpoints(plan.out / "checkpoints")
    return record
