"""`distill grpo`: refine a trained student by reinforcement from rewards (GRPO), as `trl grpo` sits beside
`trl sft`. Its flags and `--help-config` come from GRPOConfig: GRPO's keys with GRPO's defaults."""

from __future__ import annotations

import click

from common.config import load_config
from common.errors import IncompleteRun
from distill import launch
from distill.cmd_train import report
from distill.options import Flag, config_command, one_path
from train.grpo_config import GRPOConfig

FLAGS = (
    Flag("from_model", "--from"),
    Flag("out", "-o", "--out"),
    Flag("method"),
    Flag("backend"),
    Flag("epochs"),
    Flag("max_steps"),
    Flag("lr"),
    Flag("batch_size"),
    Flag("num_generations"),
    Flag("max_completion_length"),
    Flag("temperature"),
    Flag("prompt_mode"),
    Flag("chat_template"),
    Flag("save"),
    Flag("resume"),
    Flag("overwrite"),
    Flag("gpus"),
)
EXAMPLES = """\b
Examples:
  distill grpo data --from student --out grpo                # after `distill train data --out student`
  distill grpo data --from student --reward correctness=1 --reward mypkg.rewards:cites=0.5 --out grpo
  distill grpo data --from student --out grpo --resume       # after Ctrl-C or a crash
  distill grpo data --from embedded --out grpo               # from the untrained base, said explicitly
  distill grpo data --from student --out grpo --gpus 2       # data-parallel on 2 GPUs (distill starts torchrun)
"""


REWARD_HELP = ("NAME=WEIGHT or module:function=WEIGHT (repeatable; replaces the default correctness=1, format=0.2); "
               "names: correctness, format, length, judge.")


@config_command("grpo", GRPOConfig, FLAGS, "DATA [KEY=VALUE]...", EXAMPLES)
@click.option("--reward", "rewards", multiple=True, help=REWARD_HELP)
def grpo(args, config_path, as_json, quiet, flags, rewards=()):
    """Refine the student given by --from (an SFT output directory) on DATA's prompts with rewards (GRPO);
    key=value overrides any config key (--help-config lists them)."""
    flags["data"], overrides = one_path(args, "data directory")
    from train.rewards import parse_reward_specs

    flags["rewards"] = parse_reward_specs(list(rewards)) if rewards else None
    cfg = load_config(GRPOConfig, config_path, flags, overrides)
    launch.relaunch(cfg.gpus)  # --gpus N: becomes torchrun running this command on N processes
    from train import ranks
    from train.grpo import incomplete_message, run_grpo

    record = run_grpo(cfg, show_progress=not (quiet or as_json))
    ranks.leave()  # every rank, once rank 0 has written the run
    if not ranks.is_main():
        return  # under torchrun, rank 0 reports
    report(record, summary_line(record, cfg.out), as_json, quiet)
    if record["status"] == "incomplete":
        raise IncompleteRun(incomplete_message(record))


def summary_line(record: dict, out: str) -> str:
    m = record["metrics"]
    epochs = m.get("by_epoch", {}).get("reward", [])
    if len(epochs) > 1:
        reward = f"reward by epoch {', '.join(map(str, epochs))}"
    else:
        reward = f"reward {m['reward']['first']} -> {m['reward']['last']}"
    return (f"{record['status']}: {m['steps']} GRPO steps, {reward}, {m['seconds_per_step']} s/step, "
            f"backend {record['backend']}; model in {out}")


COMMANDS = (grpo,)
