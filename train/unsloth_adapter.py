"""The one module that imports Unsloth. Everything Unsloth needs lives here:

- import order: `unsloth` must be imported before transformers, peft and trl so that its
  patches (fast RoPE/RMSNorm/cross-entropy kernels, the patched SFTTrainer and GRPOTrainer) take
  effect; `import_unsloth()` is called by the SFT and GRPO stages before they import any of them,
  and records which of them were imported already (`imported_before()`, written to run.json).
- its environment switches are set here, inside the call, never at import of distill (a user's own value wins):
  no statistics calls, and GRPO's padded log-probabilities rather than its packed ones (`SWITCHES`).
- `FastLanguageModel` loads the base (16-bit, 4-bit, 8-bit or full) and adds LoRA with
  Unsloth's gradient checkpointing ("unsloth": activations offloaded to CPU memory); for GRPO
  it also loads an SFT adapter directory trainable, and a vLLM engine (fast_inference) for sampling.
On a machine without a GPU, Unsloth 2026.10 runs its own CPU fallback where it imports.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from train.spec import ModelSpec

_STATE: dict = {}
PATCHED = ("transformers", "peft", "trl")  # what Unsloth patches when it is imported first
# Unsloth's environment switches distill sets before importing it (a user's own value wins); run.json records them.
SWITCHES = {
    "UNSLOTH_DISABLE_STATISTICS": "1",  # no network calls from a training run
    # GRPO's log-probabilities: Unsloth 2026.10.9 packs the completions into one varlen forward by default. On an
    # H100 that made the update 5x slower (1.31 s against 0.25 s a step, 1.1B, 32 x 128 tokens; docs/benchmarks.md).
    # Its padded path shifts a left-padded row's positions, which rotary position embeddings do not see (relative
    # positions are unchanged; tests/test_grpo.py checks the log-probabilities).
    "UNSLOTH_GRPO_SEQ_PACKING": "0",
}


def import_unsloth():
    """Import unsloth once; returns the module or raises ImportError/RuntimeError with the reason."""
    if "module" in _STATE:
        return _STATE["module"]
    if "error" in _STATE:
        raise _STATE["error"]
    _STATE["switches"] = {name: os.environ.setdefault(name, value) for name, value in SWITCHES.items()}
    _STATE["before"] = [name for name in PATCHED if name in sys.modules]
    try:
        import unsloth  # noqa: F401  (must precede transformers/peft/trl; see module docstring)
    except ImportError as exc:
        _STATE["error"] = exc
        raise
    except Exception as exc:  # Unsloth raises NotImplementedError, RuntimeError... when it cannot run here
        _STATE["error"] = RuntimeError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise _STATE["error"] from exc
    _STATE["module"] = unsloth
    return unsloth


def switches() -> dict[str, str]:
    """The values of SWITCHES that Unsloth read when it was imported (ours, or the user's)."""
    return dict(_STATE.get("switches", {}))


def imported_before() -> list[str]:
    """Which of transformers, peft and trl were imported before Unsloth (empty: all its patches apply)."""
    return list(_STATE.get("before", []))


def available() -> tuple[bool, str]:
    """(whether Unsloth imports and runs here, why not)."""
    try:
        import_unsloth()
    except ImportError as exc:
        return False, f"unsloth is not installed ({exc}); pip install 'distill[unsloth]'"
    except RuntimeError as exc:
        return False, f"unsloth cannot run here ({exc})"
    return True, ""


def load(spec: ModelSpec):
    """(model with LoRA or full fine-tuning set up, tokenizer) through FastLanguageModel."""
    from unsloth import FastLanguageModel

    from train.loading import use_checkpointing

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=spec.path,
        max_seq_length=spec.max_seq_length,
        dtype=spec.dtype,
        load_in_4bit=spec.method == "qlora",
        load_in_8bit=spec.method == "8bit",
        full_finetuning=spec.method == "full",
        random_state=spec.seed,
    )
    checkpointing = checkpointing_mode(spec, use_checkpointing(spec.gradient_checkpointing))
    if spec.method == "full":
        if checkpointing:
            model.gradient_checkpointing_enable()
        return model, tokenizer
    return add_lora(model, spec, checkpointing), tokenizer


def add_lora(model, spec: ModelSpec, checkpointing):
    """A new LoRA adapter (spec.lora) on an Unsloth-loaded base."""
    from unsloth import FastLanguageModel

    from train.loading import cast_adapter

    model = FastLanguageModel.get_peft_model(
        model,
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=list(spec.lora.targets),
        bias="none",
        use_gradient_checkpointing=checkpointing,
        random_state=spec.seed,
        max_seq_length=spec.max_seq_length,
    )
    return cast_adapter(model, spec.lora)


def load_for_grpo(spec: ModelSpec, fast_inference: bool, vllm_memory: float):
    """(policy, tokenizer) for GRPO through FastLanguageModel, with a vLLM engine for sampling when
    fast_inference. The spec's adapter (if any) is loaded trainable on its base: Unsloth loads the base an
    adapter's config names (given here resolved, as spec.path); without one a new LoRA adapter is added."""
    from unsloth import FastLanguageModel

    from train.loading import use_checkpointing

    checkpointing = checkpointing_mode(spec, use_checkpointing(spec.gradient_checkpointing))
    path = spec.adapter or spec.path
    adapter = Path(path) / "adapter_config.json"
    rank = json.loads(adapter.read_text())["r"] if adapter.is_file() else spec.lora.r
    vllm = {"fast_inference": True, "max_lora_rank": rank, "gpu_memory_utilization": vllm_memory}
    vllm = vllm if fast_inference else {}
    with adapter_on(path, spec.path) as name:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=name,
            max_seq_length=spec.max_seq_length,
            dtype=spec.dtype,
            load_in_4bit=spec.method == "qlora",
            use_gradient_checkpointing=checkpointing,
            random_state=spec.seed,
            **vllm,
        )
    if adapter.is_file():
        return model, tokenizer
    return add_lora(model, spec, checkpointing), tokenizer


@contextmanager
def adapter_on(path: str, base: str):
    """`path`, or where it is an adapter whose config names its base otherwise ('embedded'), a copy of it
    naming `base`: Unsloth loads the base an adapter directory names."""
    config_file = Path(path) / "adapter_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else None
    if config is None or config.get("base_model_name_or_path") == base:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="distill-adapter-") as tmp:
        for item in Path(path).iterdir():
            if item.is_file() and item.name != config_file.name:
                (Path(tmp) / item.name).symlink_to(item.resolve())
        (Path(tmp) / config_file.name).write_text(json.dumps({**config, "base_model_name_or_path": base}))
        yield tmp


def checkpointing_mode(spec: ModelSpec, wanted: bool):
    """Unsloth's own offloaded checkpointing on GPU ("unsloth"), plain True/False otherwise."""
    if not wanted:
        return False
    if spec.gradient_checkpointing in ("auto", "unsloth"):
        import torch

        return "unsloth" if torch.cuda.is_available() else True
    return True


@contextmanager
def generating(model):
    """Unsloth's inference mode for a model it is training (its fast generation, KV cache on),
    then back to training: the recall probe answers between epochs through this."""
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)
    try:
        yield model
    finally:
        FastLanguageModel.for_training(model)
