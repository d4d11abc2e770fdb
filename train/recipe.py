"""What the two recipes (train/sft.py, train/grpo.py) share, as plain functions they call in order:

setup: the output directory's identity and resume (`check_out`: a directory holds one run), the backend
       (`choose_backend`: Unsloth, else transformers + PEFT, the reason said once), the model spec
       (`model_spec`: dtype, sequence length and LoRA settings resolved once), seeds and threads.
run:   the Trainer arguments both set alike (`common_args`).
save:  run.json's common part (`run_record`) and the tail (`finish`): plot, model, run.json last, then the
       checkpoints removed; peak memory for the summary.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
from pathlib import Path
from typing import Callable

import torch
from pydantic import BaseModel

from common.errors import UserError
from common.io import is_temp, write_json
from common.versions import versions
from train import loading, ranks, unsloth_adapter
from train.spec import LoraSettings, ModelSpec

LOG = logging.getLogger("distill.train")
RUN_CONFIG = "train_config.json"  # written at start: identifies the run an output directory holds
# fields that do not change what is trained (gpus: how the run is launched; run.json keeps its processes)
NOT_IDENTITY = {"out", "resume", "overwrite", "threads", "gpus"}
KEPT_ON_RETRY = {RUN_CONFIG, "judge_cache.sqlite"}  # what a rerun of an incomplete run starts from
_SAID: set[str] = set()  # backend fallback reasons already printed (a pipeline asks twice)


# ---------------------------------------------------------------- setup


def identity(cfg: BaseModel) -> dict:
    return cfg.model_dump(exclude=NOT_IDENTITY)


def check_out(cfg: BaseModel, ident: dict) -> dict | None:
    """Refuse an output directory holding another run; return run.json if this run is done already. A run
    that ended incomplete (failed judge requests) starts again, keeping its request cache."""
    out = Path(cfg.out)
    if cfg.overwrite and out.exists():
        shutil.rmtree(out)
    if not out.exists() or all(is_temp(p) for p in out.iterdir()):  # temp files: killed while writing its first file
        return None
    stored = out / RUN_CONFIG
    if not stored.is_file() or json.loads(stored.read_text()) != ident:
        raise UserError(
            f"output directory {out} holds a different run; pass --overwrite to replace it or choose another --out"
        )
    if (out / "run.json").is_file():
        record = json.loads((out / "run.json").read_text())
        if record.get("status") != "incomplete":
            shutil.rmtree(out / "checkpoints", ignore_errors=True)  # left by a kill while a finished run removed them
            return record
        (out / "run.json").unlink()  # first: a kill from here on leaves an unfinished run (--resume or --overwrite)
        for item in out.iterdir():
            if item.name not in KEPT_ON_RETRY:
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        return None
    if not cfg.resume:
        raise UserError(
            f"output directory {out} holds an unfinished run of this config; pass --resume to continue it "
            "or --overwrite to start over"
        )
    return None


def choose_backend(cfg: BaseModel) -> tuple[str, str | None]:
    """(unsloth | hf, why Unsloth is not used where `auto` fell back from it); the reason is said once."""
    if cfg.backend == "hf":
        return "hf", None
    ok, why = unsloth_adapter.available()
    if ok:
        return "unsloth", None
    if cfg.backend == "unsloth":
        raise UserError(f"--backend unsloth: {why}; use --backend hf or auto")
    if why not in _SAID:
        _SAID.add(why)
        LOG.warning("Unsloth unavailable: %s; training with transformers", why)
    return "hf", why


def model_spec(cfg: BaseModel, name: str, path: str, max_seq_length: int, adapter: str | None = None) -> ModelSpec:
    """What this run trains, from the config's model keys (dtype and LoRA settings) on this machine."""
    dtype, autocast = loading.resolve_dtype(cfg.dtype)
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, tuple(cfg.target_modules), cfg.lora_dtype)
    if cfg.lora_dtype == "bfloat16" and dtype == torch.float16:
        raise UserError(
            "lora_dtype: bfloat16 needs a GPU that computes in bfloat16 (this one trains in float16); "
            "use lora_dtype: float32"
        )
    checkpointing = cfg.gradient_checkpointing
    return ModelSpec(name, path, cfg.method, dtype, autocast, max_seq_length, lora, checkpointing, cfg.seed, adapter)


def start(cfg: BaseModel) -> Path | None:
    """Threads and seed set; the checkpoint a --resume continues from (None: from the start)."""
    from transformers import set_seed

    from train.callbacks import latest_checkpoint

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    return latest_checkpoint(Path(cfg.out) / "checkpoints") if cfg.resume else None


def claim(out: Path, ident: dict) -> None:
    """The output directory, marked as this run's (rank 0 writes it)."""
    out.mkdir(parents=True, exist_ok=True)
    if ranks.is_main():
        write_json(out / RUN_CONFIG, ident)


# ---------------------------------------------------------------- run


def common_args(cfg: BaseModel, spec: ModelSpec, backend: str, model, out: Path, optim: str) -> dict:
    """The Trainer arguments both recipes set alike, from the config and what setup resolved."""
    gpu = loading.device() == "cuda"
    dtype = next(model.parameters()).dtype
    # Unsloth set its own checkpointing up at load
    checkpointing = loading.use_checkpointing(cfg.gradient_checkpointing) and backend == "hf"
    return dict(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=cfg.weight_decay,
        optim=optim,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=(gpu and dtype == torch.bfloat16) or spec.autocast_bf16,
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


def resume_step(resume_from: Path | None) -> int:
    return int(resume_from.name.split("-")[-1]) if resume_from else 0


# ---------------------------------------------------------------- save


def peak_memory() -> dict:
    """{peak_memory_gib, peak_memory_of} for the summary: CUDA's allocated peak, or the process's peak RSS."""
    if torch.cuda.is_available():
        allocated = torch.cuda.max_memory_allocated() / 2**30
        return {"peak_memory_gib": round(allocated, 3), "peak_memory_of": "cuda allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"peak_memory_gib": round(rss, 3), "peak_memory_of": "process RSS"}


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def run_record(
    cfg: BaseModel, interrupted: bool, spec: ModelSpec, backend: str, fallback: str | None, optim: str
) -> dict:
    """run.json's part both recipes write alike (each adds its own keys)."""
    return {
        "status": "interrupted" if interrupted else "done",
        "config": cfg.model_dump(),
        "base_model": {"name": spec.name, "path": spec.path},
        "max_seq_length": spec.max_seq_length,  # the config's, within the model's context (GRPO: prompt + completion)
        "backend": backend,
        "backend_fallback": fallback,  # why `auto` did not use Unsloth, or None
        "imported_before_unsloth": unsloth_adapter.imported_before() if backend == "unsloth" else None,
        "unsloth_switches": unsloth_adapter.switches() if backend == "unsloth" else None,
        "processes": ranks.world_size(),
        "optimizer": optim,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "versions": versions(),
    }


def finish(record: dict, out: Path, interrupted: bool, plot: Callable[[], None], save: Callable[[], list[str]]) -> dict:
    """Rank 0: the plot, and unless interrupted (the checkpoint is saved; --resume continues) the model
    (`save` returns its files), run.json last (a kill from there on leaves the run done), then the checkpoints go."""
    if not ranks.is_main():
        return record
    plot()
    if interrupted:
        return record
    record["files"] = save()
    write_json(out / "run.json", record)
    from train.callbacks import remove_checkpoints

    remove_checkpoints(out / "checkpoints")
    return record
