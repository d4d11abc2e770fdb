"""The typed configuration of `distill train` (YAML, flags and key=value all land here)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.models import EMBEDDED


class StageConfig(BaseModel):
    """The keys both recipes (SFT: TrainConfig, GRPO: train.grpo_config.GRPOConfig) read alike, declared once;
    each recipe declares its own keys, and its own defaults where they differ (GRPO's lr, batch size...)."""

    model_config = ConfigDict(extra="forbid")

    split: str = Field("train", description="Which split to train on where DATA has several: DATA/{split}.jsonl, or a split of a `datasets` DatasetDict (e.g. train_sft).")
    backend: Literal["auto", "unsloth", "hf"] = Field(
        "auto", description="auto: Unsloth wherever it imports and runs (GPU, or its CPU fallback), else hf; unsloth: Unsloth or an error; hf: plain transformers + PEFT + TRL."
    )
    prompt_mode: Literal["auto", "closed-book", "open-book"] = Field(
        "auto",
        description="User turn: closed-book (question alone) or open-book (context + question); auto follows the data manifest's split_by, closed-book without a manifest. Chat, Alpaca and ShareGPT rows keep their own user turns. The mode never picks hyperparameters (SFT: see recipe).",
    )
    chat_template: str | None = Field(
        None, description="Chat template for base models without one: 'chatml' (used when the model has none), 'llama3', or a Jinja template string. None: the model's own."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Compute dtype; auto: bfloat16 on GPUs that support it, else float16 on GPU, and bfloat16 autocast on CPUs with AVX512-BF16/AMX, else float32."
    )
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA path (0 lets Unsloth use its fast kernels).")
    lora_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="A new LoRA adapter's weights and so its gradients: float32 (Unsloth's and PEFT's default) or bfloat16, half the bytes, as plain TRL's QLoRA holds them (8B QLoRA r 32: 0.31 GiB less at the peak; docs/train.md). bfloat16 needs a GPU that computes in it."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers that get LoRA adapters (all attention and MLP projections by default).",
    )
    optim: str = Field(
        "auto", description="Optimizer name as transformers knows it (adamw_torch, adamw_8bit, ...); auto: adamw_8bit (Adam's state in 8 bits, bitsandbytes) on a CUDA GPU where bitsandbytes is installed, as Unsloth's notebooks train, else adamw_torch."
    )
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    gradient_checkpointing: bool | Literal["auto", "unsloth"] = Field(
        "auto", description="Recompute activations in the backward pass to save memory (true/false); unsloth: Unsloth's offloaded variant; auto: unsloth on GPU, off on CPU."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (older ones are removed).")
    resume: bool = Field(False, description="Continue from the newest complete checkpoint in out/checkpoints (same config required).")
    overwrite: bool = Field(False, description="Replace an output directory that holds a different run.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (None: torch's default).")
    gpus: int = Field(
        1,
        ge=1,
        description="Data-parallel processes on this machine, one a GPU: above 1, the command relaunches itself "
        "under torchrun (global batch = batch_size x grad_accum x gpus); ignored inside a torchrun you started "
        "(docs/scale.md).",
    )


class TrainConfig(StageConfig):
    """Everything `distill train` needs; `distill train --help` lists the common flags."""

    # what to train on, and where the result goes
    data: str = Field(
        "data",
        description="Data directory written by `distill gen` (train.jsonl + manifest.json; test.jsonl is never read), or your own data: a directory of train.jsonl, one JSONL/JSON file (all of it is trained on) or a `datasets` save_to_disk folder, in distill, chat (messages), Alpaca or ShareGPT format (docs/train.md).",
    )
    out: str = Field("student", description="Output model directory: adapter or merged model, tokenizer, run.json, metrics.jsonl, loss.png, checkpoints/.")
    model: str = Field(EMBEDDED, description="Base student: 'embedded' (SmolLM2-135M-Instruct), a local model directory or a hub id.")
    method: Literal["lora", "qlora", "8bit", "full"] = Field(
        "lora", description="lora: 16-bit base + LoRA; qlora: 4-bit base + LoRA (bitsandbytes, GPU); 8bit: 8-bit base + LoRA (bitsandbytes, GPU); full: every weight trained."
    )
    recipe: Literal["auto", "knowledge", "skill"] = Field(
        "auto",
        description="Which DEFAULTS the `auto` hyperparameters (epochs, lr, lora_r, lora_alpha) and the recall probe "
        "follow: knowledge (facts: many epochs, high rank) or skill; auto: knowledge for data with fact ids "
        "(`distill gen` data split by item), skill for the rest (data split by document, brought chat, Alpaca or "
        "ShareGPT data). Printed, with the reason, on every run and kept in run.json.",
    )
    max_seq_length: int = Field(2048, ge=32, description="Longest training sequence in tokens; longer records are dropped (and counted in run.json). Must not exceed the model's context.")
    # LoRA
    lora_r: Annotated[int, Field(ge=1)] | Literal["auto"] = Field("auto", description="LoRA rank; auto: by the data's kind (DEFAULTS: knowledge data needs the capacity to store facts).")
    lora_alpha: Annotated[int, Field(ge=1)] | Literal["auto"] = Field("auto", description="LoRA scaling numerator (scale = alpha / r); auto: by the data's kind (DEFAULTS).")
    # optimisation
    epochs: Annotated[float, Field(gt=0)] | Literal["auto"] = Field("auto", description="Passes over the training data; auto: by the data's kind (DEFAULTS: facts are learned only after many passes); ignored when max_steps is set.")
    lr: Annotated[float, Field(gt=0)] | Literal["auto"] = Field("auto", description="Peak learning rate; auto: by the data's kind and method (DEFAULTS; full fine-tuning takes a tenth of LoRA's).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of the steps spent warming the learning rate up from 0.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(4, ge=1, description="Records per micro-batch on one device.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step (effective batch = batch_size x grad_accum x devices).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(0, description="Seed of initialisation, shuffling and the validation slice.")
    packing: bool = Field(
        False, description="Pack several records into one sequence of max_seq_length (best-fit, attention kept inside each record). Off: one record per row (see batching)."
    )
    batching: Literal["auto", "padding-free", "padded"] = Field(
        "auto",
        description="Without packing, how a micro-batch holds its records: padding-free (concatenated, no pad tokens, attention kept inside each record); padded (to the batch's longest record; Unsloth compiles each decoder block for these); auto: padded for LoRA/QLoRA with Unsloth on a CUDA GPU (2-3x the tokens/s of padding-free there, docs/benchmarks.md), padding-free elsewhere.",
    )
    group_by_length: bool | Literal["auto"] = Field(
        "auto", description="Draw each micro-batch from records of similar length (transformers' LengthGroupedSampler; the longest batch comes first); auto: with padded batches."
    )
    max_batch_tokens: int | None | Literal["auto"] = Field(
        "auto",
        description="Padded batches only: a micro-batch larger than this (rows x padded length) is trained as several smaller ones whose gradients add up to the same update, for a lower peak memory; None: never split; auto: where batches are padded by default (Unsloth on a CUDA GPU), the tokens whose MLP backward buffers (six of tokens x the model's intermediate_size, bf16) take about half a GiB, to the nearest 1,024 (8,192 for a 1B Llama, 3,072 for an 8B), else None.",
    )
    fixed_shapes: bool = Field(
        False,
        description="Padded batches only: train every micro-batch as parts of a few fixed shapes (a length of 256, 512, 768, 1024, 1280, 1536 or 2048 tokens, then multiples of 512, and a power of two of rows within max_batch_tokens; filler rows carry no label): the same update with fewer shapes for the compiled blocks, at the cost of the padding's arithmetic. Off by default: measured through distill on an H100 it gained nothing that the runs' order did not explain (docs/benchmarks.md).",
    )
    pad_to_multiple_of: int | None = Field(None, ge=1, description="Round padded batch lengths up to a multiple of this (fewer distinct shapes for compiled kernels); None: no rounding.")
    # knowledge: what else is trained on, and recall measured while training
    text: bool | Literal["auto"] = Field(
        "auto", description="Also train on DATA/text.jsonl (the chunks and the teacher's rewrites of them, loss on every token) in the same run as the chat records; auto: when the file exists."
    )
    recall_probe: int = Field(
        24,
        ge=0,
        description="Knowledge data: phrasings held out of training (one per fact; the fact keeps its others) and "
        "as many taught questions, answered greedily after an epoch, as often as probe_budget allows (recall_val, "
        "recall_train in metrics.jsonl; the curve in eval's report); 0: off.",
    )
    probe_budget: float | None = Field(
        0.1,
        gt=0,
        description="Most of the training time the recall probe may take (0.1: a tenth): the first epoch is probed, "
        "later ones while the probes' total stays within it; None: every epoch.",
    )
    early_stop: int | None = Field(
        None, ge=1, description="Stop when the held-out recall (recall_probe) has not improved for this many probes; None: never."
    )
    # validation, checkpoints, output
    val_fraction: float = Field(0.0, ge=0, lt=0.5, description="Share of train.jsonl held out for validation loss (never test.jsonl); 0: none.")
    eval_steps: int = Field(50, ge=1, description="Validation loss every this many steps (when val_fraction > 0).")
    save_steps: int = Field(50, ge=1, description="Write a checkpoint (atomically) every this many steps; --resume continues from the last one.")
    logging_steps: int = Field(1, ge=1, description="Log loss, learning rate and tokens/s every this many steps (metrics.jsonl).")
    save: Literal["adapter", "merged", "gguf"] = Field(
        "adapter", description="adapter: LoRA adapter + tokenizer (full fine-tuning always saves the model); merged: 16-bit merged model; gguf: merged model converted with llama.cpp."
    )
    gguf_quant: Literal["f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0", "auto"] = Field("q8_0", description="GGUF type written by llama.cpp's converter (save=gguf).")

    @model_validator(mode="after")
    def _rules_across_fields(self) -> "TrainConfig":
        if self.packing and self.batching == "padded":
            raise ValueError("packing=true packs records into padding-free rows, so batching=padded cannot apply; drop one of them")
        if self.early_stop and not self.recall_probe:
            raise ValueError("early_stop watches the recall of held-out phrasings: set recall_probe above 0 or drop early_stop")
        return self

    def resolved(self, kind: str) -> "TrainConfig":
        """A copy of this config with every `auto` hyperparameter set from DEFAULTS for the `kind` recipe."""
        chosen = DEFAULTS[kind]
        update = {key: chosen[key] for key in ("epochs", "lora_r", "lora_alpha") if getattr(self, key) == "auto"}
        if self.lr == "auto":
            update["lr"] = chosen["lr"] / 10 if self.method == "full" else chosen["lr"]
        return self.model_copy(update=update)


# Hyperparameters `auto` resolves to, by the data's kind (the manifest's split_by: item = knowledge,
# closed-book; document = skill, open-book). Knowledge: chosen by measurement, docs/eval.md
# ("Learning the facts"): on 100 invented facts the old skill recipe recalled none; this one
# recalls 97.8% of held-out phrasings and every training question (H200 and CPU alike). Exact teacher: its
# held-out phrasings are templates taught for other subjects; the quickstart's real 135M teacher: 0.235.
DEFAULTS = {
    "knowledge": {"epochs": 10.0, "lr": 1e-3, "lora_r": 64, "lora_alpha": 64},
    "skill": {"epochs": 2.0, "lr": 2e-4, "lora_r": 16, "lora_alpha": 16},
}
