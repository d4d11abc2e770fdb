"""What `distill train` leaves in its output directory: the model (LoRA adapter, merged 16-bit
model or GGUF), the tokenizer, run.json, metrics.jsonl and loss.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common.errors import UserError
from common.models import HUB_ID
from train.spec import ModelSpec


def portable_base(name: str, path: str) -> str:
    """What adapter_config.json names as base: 'embedded' or a hub id as given, else the absolute path."""
    if name == "embedded" or (HUB_ID.match(name) and not Path(name).exists()):
        return name
    return str(Path(path).resolve())


def gguf_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py: $LLAMA_CPP_DIR, on PATH, or ~/llama.cpp; else a clear error."""
    candidates = [Path(os.environ["LLAMA_CPP_DIR"]) / "convert_hf_to_gguf.py"] if os.environ.get("LLAMA_CPP_DIR") else []
    on_path = shutil.which("convert_hf_to_gguf.py") or shutil.which("convert-hf-to-gguf.py")
    candidates += [Path(on_path)] if on_path else []
    candidates.append(Path("~/llama.cpp/convert_hf_to_gguf.py").expanduser())
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        "--save gguf needs llama.cpp's convert_hf_to_gguf.py, which was not found: clone llama.cpp and set LLAMA_CPP_DIR "
        "to it (pip install -r its requirements), or use --save merged"
    )


def check_save(save: str) -> None:
    """Fail before training, not after it, when the requested output format cannot be written."""
    if save == "gguf":
        gguf_converter()


def save_model(spec: ModelSpec, save: str, gguf_quant: str, model, tokenizer, out: Path) -> list[str]:
    """Write the trained model in the requested form (save: adapter | merged | gguf); returns the files written."""
    tokenizer.save_pretrained(out)
    if spec.method == "full":
        model.save_pretrained(out)
    elif save == "adapter":
        model.save_pretrained(out)
        config_file = out / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = portable_base(spec.name, spec.path)
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    else:
        merge_adapter(model, spec.path, out)
    if save == "gguf":
        convert_gguf(out, gguf_quant)
    return sorted(p.name for p in out.iterdir() if p.is_file())


def merge_adapter(model, base_path: str, out: Path) -> None:
    """Merge LoRA into a fresh 16-bit copy of the base (also right for a 4-bit QLoRA base) and save it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        model.save_pretrained(tmp)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(base, tmp).merge_and_unload()
    merged.save_pretrained(out)


def convert_gguf(out: Path, quant: str) -> Path:
    target = out / f"model-{quant}.gguf"
    cmd = [sys.executable, str(gguf_converter()), str(out), "--outfile", str(target), "--outtype", quant]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"llama.cpp's converter failed ({tail[0]}); the merged model is in {out}")
    return target


def plot_loss(rows: list[dict], path: Path) -> None:
    """Training (and validation) loss against the step, as a PNG."""
    plot_metrics(rows, path, {"loss": "train loss", "eval_loss": "validation loss"}, "loss (assistant tokens)")


def plot_metrics(rows: list[dict], path: Path, series: dict[str, str], ylabel: str) -> None:
    """metrics.jsonl keys (-> legend labels) against the step, as a PNG; sparse series get markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = len({r["step"] for r in rows}) or 1
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in series.items():
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o" if len(points) < steps / 2 else None, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
