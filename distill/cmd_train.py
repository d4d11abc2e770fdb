"""`distill train` (SFT of the student; GRPO is `distill grpo`), `distill ask` and `distill chat` (try a model)."""

from __future__ import annotations

import json
import sys

import click

from common.config import load_config
from common.errors import UserError
from distill import launch
from distill.options import Flag, config_command, one_path
from distill.quiet import verbose_option
from train.config import TrainConfig

FLAGS = (
    Flag("out", "-o", "--out"),
    Flag("model", "--model"),  # no -m: -m/--model names the teacher (gen, eval)
    Flag("method"),
    Flag("backend"),
    Flag("recipe"),
    Flag("epochs"),
    Flag("max_steps"),
    Flag("lr"),
    Flag("batch_size"),
    Flag("grad_accum"),
    Flag("max_seq_length"),
    Flag("prompt_mode"),
    Flag("chat_template"),
    Flag("packing"),
    Flag("val_fraction"),
    Flag("save"),
    Flag("resume"),
    Flag("overwrite"),
    Flag("gpus"),
)
EXAMPLES = """\b
Examples:
  distill train data --out student                          # LoRA on the embedded student (SFT)
  distill train data --out student --model Qwen/Qwen3-1.7B --method qlora --epochs 3
  distill train data --out student --resume                 # after Ctrl-C or a crash
  distill train chats.jsonl --out student                   # your own data: chat, Alpaca, ShareGPT or a datasets folder
  distill train data --out student --gpus 2                 # data-parallel on 2 GPUs (distill starts torchrun)
  distill grpo data --from student --out grpo               # GRPO after SFT: its own command
"""


@config_command("train", TrainConfig, FLAGS, "DATA [KEY=VALUE]...", EXAMPLES)
@click.option("--stage", type=click.Choice(["sft", "grpo"]), default="sft", hidden=True)
def train(args, config_path, as_json, quiet, flags, stage="sft"):
    """Fine-tune the student on DATA (a `distill gen` directory, or your own data: docs/train.md) with SFT;
    key=value overrides any config key. GRPO after it: `distill grpo`."""
    if stage == "grpo":
        raise UserError("GRPO has its own command: distill grpo DATA --from SFT_OUT (distill grpo --help: its flags)")
    flags["data"], overrides = one_path(args, "data directory")
    cfg = load_config(TrainConfig, config_path, flags, overrides)
    launch.relaunch(cfg.gpus)  # --gpus N: becomes torchrun running this command on N processes (before heavy imports)
    from train import ranks
    from train.sft import run_sft

    record = run_sft(cfg, show_progress=not (quiet or as_json))
    ranks.leave()  # every rank, once rank 0 has written the run
    if not ranks.is_main():
        return  # under torchrun, rank 0 reports
    report(record, summary_line(record, cfg.out), as_json, quiet)


def report(record: dict, line: str, as_json: bool, quiet: bool) -> None:
    """What a training command prints at its end (the JSON record or one line); exit 130 for an interrupted run."""
    if as_json:
        click.echo(json.dumps(record, indent=2))
    elif not quiet:
        click.echo(line)
    if record["status"] == "interrupted":
        click.echo("interrupted: a checkpoint is saved; rerun with --resume to continue", err=True)
        sys.exit(130)


def summary_line(record: dict, out: str) -> str:
    m = record["metrics"]
    recall = f", recall of held-out phrasings {m['recall_val']} (taught {m['recall_train']})" if m.get("recall_val") is not None else ""
    return f"{record['status']}: {m['steps']} steps, loss {m['first_loss']} -> {m['final_loss']}{recall}, {m['tokens_per_s']} tok/s, backend {record['backend']}; model in {out}"


@click.command("ask")
@click.argument("model_dir")
@click.argument("question")
@click.option("--context", help="A passage to read first (open-book prompt).")
@click.option("--max-new-tokens", type=int, default=512, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@verbose_option
def ask(model_dir, question, context, max_new_tokens, temperature):
    """Ask MODEL_DIR (adapter, merged model, 'embedded' or hub id) one QUESTION."""
    from common.contract import prompt_messages
    from common.generation import generate
    from evaluation.inference import load_model

    model, tokenizer = load_model(model_dir)
    record = {"question": question, "context": context or ""}
    messages = prompt_messages(record, "open-book" if context else "closed-book")
    click.echo(generate(model, tokenizer, [messages], max_new_tokens=max_new_tokens, temperature=temperature)[0])


@click.command("chat")
@click.argument("model_dir")
@click.option("--max-new-tokens", type=int, default=512, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@verbose_option
def chat(model_dir, max_new_tokens, temperature):
    """Talk to MODEL_DIR interactively (empty line or Ctrl-D ends; /reset forgets the conversation)."""
    from common.generation import generate
    from evaluation.inference import load_model

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
