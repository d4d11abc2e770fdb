"""`distill train` (SFT of the student), `distill ask` and `distill chat` (try a trained model)."""

from __future__ import annotations

import json
import sys

import click

from common.config import describe, load_config


@click.command("train")
@click.argument("data", required=False)
@click.argument("overrides", nargs=-1)
@click.option("-o", "--out", help="Output model directory (adapter or merged model, run.json, metrics, loss.png).")
@click.option("-c", "--config", "config_path", type=click.Path(), help="YAML file with TrainConfig keys.")
@click.option("-m", "--model", help="Base student: 'embedded', a local directory or a hub id.")
@click.option("--method", type=click.Choice(["lora", "qlora", "8bit", "full"]), help="LoRA 16-bit, QLoRA 4-bit, 8-bit + LoRA, or full fine-tuning.")
@click.option("--backend", type=click.Choice(["auto", "unsloth", "hf"]), help="auto: Unsloth where it runs, else transformers + PEFT + TRL.")
@click.option("--epochs", type=float, help="Passes over train.jsonl.")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--batch-size", type=int, help="Records per micro-batch.")
@click.option("--grad-accum", type=int, help="Micro-batches per optimizer step.")
@click.option("--max-seq-length", type=int, help="Longest training sequence in tokens.")
@click.option("--prompt-mode", type=click.Choice(["auto", "closed-book", "open-book"]), help="User turn: question alone or context + question.")
@click.option("--chat-template", help="For base models without one: chatml, llama3 or a Jinja string.")
@click.option("--packing/--no-packing", default=None, help="Pack records into full-length sequences.")
@click.option("--val-fraction", type=float, help="Share of train.jsonl held out for validation loss.")
@click.option("--save", type=click.Choice(["adapter", "merged", "gguf"]), help="Output form (default adapter).")
@click.option("--resume", is_flag=True, default=None, help="Continue from the last complete checkpoint.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an output directory holding another run.")
@click.option("--help-config", is_flag=True, help="List every TrainConfig key with its default and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print run.json instead of a summary.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(data, overrides, config_path, help_config, as_json, quiet, **flags):
    """Fine-tune the student on DATA (a `distill gen` directory); key=value overrides any config key."""
    from train.config import TrainConfig

    if help_config:
        click.echo(describe(TrainConfig))
        return
    if data and "=" in data and not data.startswith(("/", ".")):
        overrides = (data, *overrides)
        data = None
    flags["data"] = data
    cfg = load_config(TrainConfig, config_path, flags, list(overrides))
    from train import ranks
    from train.sft import run_sft

    record = run_sft(cfg, show_progress=not (quiet or as_json))
    if not ranks.is_main():
        return  # under torchrun, rank 0 reports
    if as_json:
        click.echo(json.dumps(record, indent=2))
    elif not quiet:
        m = record["metrics"]
        click.echo(
            f"{record['status']}: {m['steps']} steps, loss {m['first_loss']} -> {m['final_loss']}, "
            f"{m['tokens_per_s']} tok/s, backend {record['backend']}; model in {cfg.out}"
        )
    if record["status"] == "interrupted":
        click.echo("interrupted: a checkpoint is saved; rerun with --resume to continue", err=True)
        sys.exit(130)


@click.command("ask")
@click.argument("model_dir")
@click.argument("question")
@click.option("--context", help="A passage to read first (open-book prompt).")
@click.option("--max-new-tokens", type=int, default=512, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
def ask(model_dir, question, context, max_new_tokens, temperature):
    """Ask MODEL_DIR (adapter, merged model, 'embedded' or hub id) one QUESTION."""
    from common.contract import prompt_messages
    from distill.inference import generate, load_model

    model, tokenizer = load_model(model_dir)
    record = {"question": question, "context": context or ""}
    messages = prompt_messages(record, "open-book" if context else "closed-book")
    click.echo(generate(model, tokenizer, [messages], max_new_tokens=max_new_tokens, temperature=temperature)[0])


@click.command("chat")
@click.argument("model_dir")
@click.option("--max-new-tokens", type=int, default=512, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
def chat(model_dir, max_new_tokens, temperature):
    """Talk to MODEL_DIR interactively (empty line or Ctrl-D ends; /reset forgets the conversation)."""
    from distill.inference import generate, load_model

    model, tokenizer = load_model(model_dir)
    history: list[dict] = []
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        if line == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": line})
        reply = generate(model, tokenizer, [history], max_new_tokens=max_new_tokens, temperature=temperature)[0]
        history.append({"role": "assistant", "content": reply})
        click.echo(f"model> {reply}")


COMMANDS = (train, ask, chat)
