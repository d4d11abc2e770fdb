"""`distill grpo` as one program: setup -> run -> save.

setup: check the output directory and the request, find where the policy starts (an SFT output
       directory's adapter is trained further; a model gets a new LoRA adapter), pick the backend
       (Unsloth, else transformers + PEFT) and the sampler (vLLM where installed on a GPU, else
       model.generate), turn train.jsonl into prompts in the data's prompt mode with the reference
       answer and evidence beside them as columns, size the completions from the teacher's answers,
       resolve the model spec, and bind the rewards (common.graders, the judge teacher, the user's functions).
run:   TRL's GRPOTrainer: each step samples num_generations completions for batch_size prompts,
       scores them, and moves the policy towards the completions that beat their group's mean.
       Checkpoints every `save_steps`, marked complete only once fully written; Ctrl-C saves one
       and stops; every step's rewards, zero-advantage groups, lengths and rates go to metrics.jsonl.
save:  the adapter (or merged model), tokenizer, metrics.jsonl, rewards.png and run.json — last;
       then the checkpoints are removed. A run whose judge requests partly failed ends `incomplete`
       (counted in run.json); run again, it asks only those (the others are cached).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.contract import prompt_messages
from common.errors import UserError
from common.models import EMBEDDED, resolve_model
from train import loading, ranks, recipe, unsloth_adapter
from train.data import apply_template, read_data_dir, split_and_mode
from train.grpo_config import GRPOConfig
from train.grpo_summary import summary
from train.saving import plot_metrics, save_model
from train.spec import ModelSpec

LOG = logging.getLogger("distill.grpo")
COLUMNS = ("id", "question", "answer", "evidence", "context", "reasoning")  # what reward functions get by name


@dataclass
class Start:
    """Where the policy starts: a model (a new adapter is added) or an SFT adapter on its base."""

    name: str  # --from as given
    base_name: str  # the base as the adapter names it ('embedded', a hub id, a path), or name
    base: str  # the base, resolved to a local directory or a hub id
    adapter: str | None  # the adapter directory to train further
    tokenizer: str  # where the tokenizer (and chat template) comes from


@dataclass
class Plan:
    out: Path
    start: Start
    spec: ModelSpec
    backend: str
    fallback: str | None  # why `backend: auto` did not use Unsloth
    generation: str  # vllm | transformers
    model: object
    tokenizer: object
    rows: list[dict]  # one per prompt: {"prompt": messages, *COLUMNS}
    data: dict  # for run.json
    lengths: dict  # {"max_completion_length", "length_budget", "max_prompt_length", "teacher_longest"}
    rewards: list
    weights: list[float]
    judge: object  # train.rewards.JudgeReward or None
    optim: str
    resume_from: Path | None
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Say it now (stderr; rank 0 alone under torchrun) and keep it for run.json."""
        if ranks.is_main():
            LOG.warning("warning: %s", message)
        self.warnings.append(message)


def run_grpo(cfg: GRPOConfig, show_progress: bool = True) -> dict:
    """Refine the policy; returns the run.json dict (also for a run that had already finished)."""
    started = time.time()
    ident = recipe.identity(cfg)
    with ranks.main_first():  # under torchrun: rank 0 checks (and --overwrite clears) first
        finished = recipe.check_out(cfg, ident)
    if finished is not None:
        return finished
    plan = setup(cfg, ident)
    try:
        trainer, interrupted = run(cfg, plan, show_progress)
    finally:
        if plan.judge is not None:
            plan.judge.close()
    return save(cfg, plan, trainer, interrupted, started)


# ---------------------------------------------------------------- setup


def require_from(name: str | None) -> None:
    """GRPO on an untrained base is said explicitly (--from embedded, a model id), never a default."""
    if name is None:
        raise UserError(
            "GRPO refines an SFT student: pass --from SFT_OUT, the directory `distill train --out SFT_OUT` wrote "
            "(e.g. --from student); to start from an untrained base, say so: --from embedded or --from MODEL_ID"
        )


def resolve_start(name: str) -> Start:
    """What --from names: an SFT output directory holding an adapter, a model directory, 'embedded' or a hub id."""
    folder = Path(name).expanduser()
    if folder.is_dir() and (folder / recipe.RUN_CONFIG).is_file() and not (folder / "run.json").is_file():
        raise UserError(
            f"--from {name} holds an unfinished training run (no run.json); finish it with `distill train ... --out "
            f"{name} --resume` first"
        )
    path = resolve_model(name)  # a directory without config.json or adapter_config.json is refused here
    adapter_config = Path(path) / "adapter_config.json"
    if not adapter_config.is_file():
        return Start(name, name, path, None, path)
    base_name = json.loads(adapter_config.read_text()).get("base_model_name_or_path") or EMBEDDED
    has_tokenizer = (Path(path) / "tokenizer_config.json").is_file()
    base = resolve_model(base_name)
    return Start(name, base_name, base, path, path if has_tokenizer else base)


def choose_generation(cfg: GRPOConfig) -> str:
    """vllm where vLLM is installed on a CUDA machine (auto), else transformers' generate."""
    here = importlib.util.find_spec("vllm") is not None and loading.device() == "cuda"
    if cfg.generation == "vllm" and not here:
        raise UserError(
            "generation=vllm needs vLLM and a CUDA GPU (pip install vllm); use generation=transformers or auto"
        )
    return "vllm" if cfg.generation == "vllm" or (cfg.generation == "auto" and here) else "transformers"


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def size_lengths(cfg: GRPOConfig, tokenizer, records: list[dict], context: int | None) -> dict:
    """Completion room from the teacher's answers: the longest assistant turn (+ its end of turn) is the
    length budget; max_completion_length adds a quarter, rounded up to 16. Prompts get what is left."""
    longest = max(token_count(tokenizer, r["messages"][-1]["content"]) for r in records) + 1
    limit = cfg.max_completion_length or 16 * math.ceil(max(longest, cfg.length_budget or 0) * 1.25 / 16)
    budget = cfg.length_budget or min(longest, limit * 4 // 5)
    prompt = cfg.max_prompt_length or ((context - limit) if context else 2048)
    if prompt < 8:
        raise UserError(
            f"max_completion_length={limit} leaves no room for prompts in the model's {context}-token context; lower it"
        )
    return {
        "max_completion_length": limit,
        "length_budget": budget,
        "max_prompt_length": prompt,
        "teacher_longest": longest,
    }


def prompt_rows(records: list[dict], tokenizer, mode, max_prompt_length: int) -> tuple[list[dict], int]:
    """(one row per record whose prompt fits: the chat prompt and the record's columns, records dropped)."""
    rows = []
    for record in records:
        messages = prompt_messages(record, mode)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if token_count(tokenizer, text) <= max_prompt_length:
            rows.append(
                {"prompt": messages, **{k: record.get(k, "") for k in COLUMNS}}
            )  # brought data may lack evidence, context
    return rows, len(records) - len(rows)


def load_policy(spec: ModelSpec, backend: str, fast_inference: bool, vllm_memory: float):
    if backend == "unsloth":
        return unsloth_adapter.load_for_grpo(spec, fast_inference, vllm_memory)[0]
    return loading.load_hf(spec)[0]


def setup(cfg: GRPOConfig, ident: dict) -> Plan:
    """Cheap checks first (none imports transformers): data, method, --from; then the backend, which must be
    imported before transformers, peft and trl; then the prompts, their lengths, the rewards and the policy."""
    source = read_data_dir(cfg.data, cfg.split)
    records = source.records
    loading.check_method(cfg.method)
    require_from(cfg.from_model)
    backend, fallback = recipe.choose_backend(cfg)  # Unsloth must be imported before transformers, peft and trl
    start = resolve_start(cfg.from_model)  # converting the embedded model imports transformers
    generation = choose_generation(cfg)
    resume_from = recipe.start(cfg)
    from transformers import AutoTokenizer

    from train.rewards import build_rewards

    out = Path(cfg.out)
    tokenizer = AutoTokenizer.from_pretrained(start.tokenizer)
    apply_template(tokenizer, cfg.chat_template)
    split_by, mode = split_and_mode(source, cfg.prompt_mode)
    lengths = size_lengths(cfg, tokenizer, records, loading.model_context(start.base))
    rows, dropped = prompt_rows(records, tokenizer, mode, lengths["max_prompt_length"])
    if not rows:
        longest = lengths["max_prompt_length"]
        raise UserError(
            f"every prompt is longer than max_prompt_length={longest} tokens; raise it (or lower max_completion_length)"
        )
    # user rewards are imported here
    rewards, weights, judge = build_rewards(cfg, out, lengths["length_budget"], lengths["max_completion_length"])
    context = lengths["max_prompt_length"] + lengths["max_completion_length"]
    spec = recipe.model_spec(cfg, start.base_name, start.base, context, adapter=start.adapter)
    model = load_policy(spec, backend, generation == "vllm", cfg.vllm_memory)
    recipe.claim(out, ident)
    data = {
        "dir": str(Path(cfg.data).resolve()),
        "data_format": source.format,
        **source.describe(),
        "split_by": split_by,
        "prompt_mode": mode,
        "prompts": len(rows),
        "dropped_too_long": dropped,
    }
    optim = loading.resolve_optim(cfg.optim)
    plan = Plan(
        out,
        start,
        spec,
        backend,
        fallback,
        generation,
        model,
        tokenizer,
        rows,
        data,
        lengths,
        rewards,
        weights,
        judge,
        optim,
        resume_from,
    )
    for warning in wasteful_settings(cfg):
        plan.warn(warning)
    return plan


def wasteful_settings(cfg: GRPOConfig) -> list[str]:
    """Settings known to waste a run (num_generations 1 is refused by the config itself)."""
    found = []
    if cfg.temperature < 0.5:
        found.append(
            f"temperature={cfg.temperature} samples near-identical completions, whose groups score alike and teach "
            "nothing; 0.7-1.0 is usual"
        )
    if cfg.num_generations < 4:
        found.append(
            f"num_generations={cfg.num_generations}: with so few completions a group often scores alike (zero "
            "advantage); 8 is usual"
        )
    if (
        cfg.lr >= 1e-4
    ):  # measured on the quickstart data (docs/eval.md): it lowered or raised the reward, by the step's size
        found.append(
            f"lr={cfg.lr} is an SFT learning rate; GRPO usually runs at 1e-6 to 5e-5. In our runs 1e-4 and 3e-4 "
            "lowered the reward "
            "with 16 completions a step and raised it with 128 (batch_size 16): keep it only with large steps, and "
            "watch the reward by epoch"
        )
    return found


# ---------------------------------------------------------------- run


def grpo_args(cfg: GRPOConfig, plan: Plan):
    from trl import GRPOConfig as TRLGRPOConfig

    per_step = cfg.batch_size * cfg.num_generations
    micro = cfg.micro_batch_size or per_step
    vllm = plan.generation == "vllm" and plan.backend == "hf"  # Unsloth switches its fast_inference engine on itself
    return TRLGRPOConfig(
        **recipe.common_args(cfg, plan.spec, plan.backend, plan.model, plan.out, plan.optim),
        per_device_train_batch_size=micro,  # completions, not prompts
        gradient_accumulation_steps=per_step // micro,
        steps_per_generation=cfg.steps_per_generation * (per_step // micro),  # TRL counts micro-steps
        num_generations=cfg.num_generations,
        max_completion_length=plan.lengths["max_completion_length"],
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        # a completion cut at the length limit is still scored and still teaches; said explicitly because Unsloth
        # turns masking on for loss_type dapo, which zeroes the whole update when every completion is cut (a policy
        # that never stops)
        mask_truncated_completions=False,
        reward_weights=plan.weights,
        use_vllm=vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=cfg.vllm_memory,
    )


def run(cfg: GRPOConfig, plan: Plan, show_progress: bool):
    """Train to the end, or to the first Ctrl-C (which still saves a checkpoint)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    from train.callbacks import CheckpointMarker, Metrics, ProgressBar, StopOnSignal, train_until_stopped
    from train.grpo_trainer import StepStats, grpo_trainer_class

    metrics = Metrics(plan.out / "metrics.jsonl", recipe.resume_step(plan.resume_from), write=ranks.is_main())
    shown = {
        "reward": ("reward", "{:.3f}"),
        "alike": ("zero_advantage_groups", "{:.0f}"),
        "gen tok/s": ("generated_tokens_per_s", "{:.0f}"),
    }
    bar = ProgressBar(metrics, show_progress and ranks.is_main(), shown, title="grpo")
    stop = StopOnSignal()
    trainer = grpo_trainer_class(plan.backend, loading.device() == "cuda")(
        model=plan.model,
        reward_funcs=plan.rewards,
        args=grpo_args(cfg, plan),
        train_dataset=Dataset.from_list(plan.rows),
        processing_class=plan.tokenizer,
        callbacks=[
            StepStats(cfg.batch_size * ranks.world_size(), plan.warn),
            CheckpointMarker(cfg.keep_checkpoints),
            metrics,
            bar,
            stop,
        ],
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace its printed dicts
    train_until_stopped(trainer, stop, plan.resume_from)
    return trainer, stop.stopped


# ---------------------------------------------------------------- save


def save(cfg: GRPOConfig, plan: Plan, trainer, interrupted: bool, started: float) -> dict:
    rows = recipe.read_metrics(plan.out)
    start, judge = plan.start, plan.judge
    record = recipe.run_record(cfg, interrupted, plan.spec, plan.backend, plan.fallback, plan.optim)
    record |= {
        "stage": "grpo",
        "from": {"name": start.name, "adapter": start.adapter, "kind": "adapter" if start.adapter else "model"},
        "generation": plan.generation,
        "steps_per_generation": cfg.steps_per_generation,
        "data_format": plan.data["data_format"],
        "data": plan.data,
        "lengths": plan.lengths,
        "rewards": dict(zip(cfg.rewards, plan.weights)),
        "judge_requests": judge.asked if judge is not None else None,
        "judge_failures": {"requests": judge.failed, "last_error": judge.last_error} if judge is not None else None,
        "metrics": summary(trainer, rows, time.time() - started),
    }
    if judge is not None and judge.failed and not interrupted:
        record["status"] = "incomplete"  # those completions had no judge reward; a rerun asks only the failed requests
    stalled = record["metrics"]["zero_advantage_share_last"]
    if record["metrics"]["steps"] >= 8 and stalled is not None and stalled >= 0.9:
        plan.warn(
            f"in the last quarter of the steps {stalled:.0%} of the groups scored alike: the policy stopped learning "
            "(every completion "
            "right, every one wrong, or collapsed); more steps will not help: look at rewards.png and the rewards"
        )
    record["warnings"] = plan.warnings
    series = {f"rewards/{name}/mean": name for name in cfg.rewards}
    series |= {"reward": "weighted sum", "alike_share": "share of groups scoring alike"}

    def save_policy() -> list[str]:
        if "ref" in getattr(trainer.model, "peft_config", {}):
            trainer.model.delete_adapter("ref")  # TRL's frozen copy of the starting adapter (beta > 0): not the result
        return save_model(plan.spec, cfg.save, None, trainer.model, plan.tokenizer, plan.out)

    return recipe.finish(
        record,
        plan.out,
        interrupted,
        plot=lambda: plot_metrics(rows, plan.out / "rewards.png", series, "mean over the step's completions"),
        save=save_policy,
    )


def incomplete_message(record: dict) -> str:
    """The one line that says judge requests failed, and what to do."""
    failures = record["judge_failures"]
    n = failures["requests"]
    return (
        f"{n} judge request{'s' if n != 1 else ''} failed (last error: {failures['last_error']}), their completions "
        "went without a judge reward; the model is saved: rerun the same command to retry them (the judge's answers "
        "are cached)"
    )
