"""`distill train` (SFT of the student), `distill ask` and `distill chat` (try a trained model)."""

from __future__ import annotations

import json
import sys

import click

from common.config import load_config
from distill.options import Flag, config_command, one_path
from distill.quiet import verbose_option
from train.config import TrainConfig
from train.grpo_config import GRPOConfig

FLAGS = (
    Flag("out", "-o", "--out"),
    Flag("model", "-m", "--model"),
    Flag("method"),
    Flag("backend"),
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
    Flag("from_model", "--from", model=GRPOConfig),
    Flag("num_generations", model=GRPOConfig),
)
EXAMPLES = """\b
Examples:
  distill train data --out student                          # LoRA on the embedded student (SFT)
  distill train data --out student -m Qwen/Qwen3-1.7B --method qlora --epochs 3
  distill train data --out student --resume                 # after Ctrl-C or a crash
  distill train chats.jsonl --out student                   # your own data: chat, Alpaca, ShareGPT or a datasets folder
  torchrun --nproc_per_node 2 -m distill train data --out student   # data-parallel
  distill train data --stage grpo --from student --out grpo # GRPO after SFT (rewards: correctness, format)
  distill train data --stage grpo --from student --reward correctness=1 --reward mypkg.rewards:cites=0.5 --out grpo
"""


@config_command("train", TrainConfig, FLAGS, "DATA [KEY=VALUE]...", EXAMPLES, {"--stage grpo": GRPOConfig})
@click.option("--stage", type=click.Choice(["sft", "grpo"]), default="sft", show_default=True, help="sft: supervised fine-tuning on the teacher's answers; grpo: reinforcement from rewards, usually after SFT (--from); --help-config lists the keys of both.")
@click.option("--reward", "rewards", multiple=True, help="grpo: NAME=WEIGHT or module:function=WEIGHT (repeatable; replaces the default correctness=1, format=0.2); names: correctness, format, length, judge.")
def train(args, config_path, as_json, quiet, flags, stage="sft", rewards=()):
    """Fine-tune the student on DATA (a `distill gen` directory, or your own data: docs/train.md): SFT,
    or GRPO with --stage grpo; key=value overrides any config key of the stage."""
    flags["data"], overrides = one_path(args, "data directory")
    from train import ranks

    if stage == "grpo":
        from train.grpo import run_grpo
        from train.rewards import parse_reward_specs

        flags["rewards"] = parse_reward_specs(list(rewards)) if rewards else None
        cfg = load_config(GRPOConfig, config_path, flags, overrides)
        record = run_grpo(cfg, show_progress=not (quiet or as_json))
    else:
        if rewards or flags.get("from_model") or flags.get("num_generations"):
            raise click.UsageError("--from, --reward and --num-generations are GRPO settings: add --stage grpo")
        from train.sft import run_sft

        cfg = load_config(TrainConfig, config_path, flags, overrides)
        record = run_sft(cfg, show_progress=not (quiet or as_json))
    if not ranks.is_main():
        return  # under torchrun, rank 0 reports
    if as_json:
        click.echo(json.dumps(record, indent=2))
    elif not quiet:
        click.echo(summary_line(record, cfg.out))
    if record["status"] == "interrupted":
        click.echo("interrupted: a checkpoint is saved; rerun with --resume to continue", err=True)
        sys.exit(130)


def summary_line(record: dict, out: str) -> str:
    m = record["metrics"]
    if record.get("stage") == "grpo":
        epochs = m.get("by_epoch", {}).get("reward", [])
        reward = f"reward by epoch {', '.join(map(str, epochs))}" if len(epochs) > 1 else f"reward {m['reward']['first']} -> {m['reward']['last']}"
        return f"{record['status']}: {m['steps']} GRPO steps, {reward}, {m['seconds_per_step']} s/step, backend {record['backend']}; model in {out}"
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
