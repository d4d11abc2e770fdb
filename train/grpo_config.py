"""The typed configuration of `distill grpo` (YAML, flags and key=value all land here).

Defaults follow what GRPO runs on small students use (DeepSeek-R1's recipe as TRL and Unsloth's
notebooks carry it): a low learning rate, 8 completions a prompt sampled at temperature 1.0, no
KL term (no reference model in memory). Each field says why where the value is not obvious.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from common.teacher.config import TeacherConfig
from train.config import StageConfig

BUILTIN_REWARDS = ("correctness", "format", "length", "judge")
USER_REWARD = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module.path:function


class GRPOConfig(StageConfig):
    """Everything `distill grpo` needs; `distill grpo --help-config` lists every key (the shared ones come from
    StageConfig, declared once for both recipes)."""

    # what to train, on what, and where the result goes
    data: str = Field("data", description="Data directory written by `distill gen` (train.jsonl + manifest.json; prompts come from train.jsonl, test.jsonl is never read), or your own data as for SFT (docs/train.md).")
    out: str = Field("grpo", description="Output model directory: adapter (or merged model), tokenizer, run.json, metrics.jsonl, rewards.png, checkpoints/, judge_cache.sqlite.")
    from_model: str | None = Field(
        None,
        description="The policy to refine (`--from`, required): an SFT output directory (its LoRA adapter is trained "
        "further), a merged model directory; or, said explicitly, 'embedded' or a hub id (a new LoRA is added to an "
        "untrained base).",
    )
    generation: Literal["auto", "vllm", "transformers"] = Field(
        "auto",
        description="How completions are sampled: vllm (Unsloth's fast_inference, or TRL's vLLM colocated on the training GPU for hf), transformers (model.generate); auto: vllm where vLLM is installed and a CUDA GPU is present.",
    )
    vllm_memory: float = Field(0.5, gt=0, lt=1, description="generation=vllm: share of the GPU's memory vLLM may take for weights and KV cache (the rest is the trainer's).")
    # rewards
    rewards: dict[str, float] = Field(
        default_factory=lambda: {"correctness": 1.0, "format": 0.2},
        description="Reward name -> weight; the weighted sum is the reward. Built in: correctness (eval's graders on the final answer), format (<think> trace, closed, then an answer), length (soft penalty past length_budget tokens), judge (the judge teacher's 1-5 grade, scaled to 0-1); or module.path:function, a function f(prompts, completions, **columns) -> list[float | None].",
    )
    correctness_grader: Literal["auto", "exact_match", "token_f1", "numeric", "contains"] = Field(
        "auto", description="Grader of the correctness reward; auto: numeric match for short numeric references, exact match for other short ones (<= 3 words), token F1 for sentences."
    )
    length_budget: int | None = Field(
        None, ge=1, description="length reward: completions up to this many tokens cost nothing, longer ones lose up to 1 at max_completion_length; None: the longest assistant turn the teacher wrote in train.jsonl."
    )
    judge: TeacherConfig | None = Field(None, description="judge reward: the teacher that grades completions (asked through the request cache in out/judge_cache.sqlite, so a resumed run never asks twice). Required when rewards has judge.")
    # sampling
    num_generations: int = Field(8, description="Completions sampled per prompt (the group whose rewards are compared: GRPO's advantage is a completion's reward minus its group's mean). 8 is the usual; at least 2.")
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature of the completions; 1.0 keeps the groups diverse (lower values make groups of equal completions, which teach nothing).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold of the completions (1.0: off).")
    max_completion_length: int | None = Field(
        None, ge=8, description="Most tokens a completion may take; None: the longest assistant turn in train.jsonl plus a quarter, rounded up to 16 (room for a trace like the teacher's; a truncated completion has no answer)."
    )
    max_prompt_length: int | None = Field(None, ge=8, description="Records whose prompt is longer are dropped (and counted); None: the model's context minus max_completion_length.")
    # optimisation
    method: Literal["lora", "qlora"] = Field("lora", description="lora: 16-bit base + LoRA; qlora: 4-bit base + LoRA (bitsandbytes, GPU). An SFT adapter is trained further as it is.")
    # a new adapter (starting from a model; an SFT adapter keeps its own): the same knobs as SFT's
    lora_r: int = Field(16, ge=1, description="LoRA rank of a new adapter (starting from a base model); an SFT adapter given by --from keeps its own.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator of a new adapter (scale = alpha / r).")
    lr: float = Field(5e-6, gt=0, description="Peak learning rate; 5e-6 as in Unsloth's GRPO notebooks and DeepSeek-R1-style recipes (RL moves a policy already trained; SFT's 2e-4 would wreck it).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps spent warming the learning rate up from 0.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(0.1, gt=0, description="Gradient clipping norm; 0.1 as Unsloth's GRPO notebooks (policy-gradient steps are noisy).")
    beta: float = Field(0.0, ge=0, description="KL penalty towards the starting policy; 0: none, and no reference model is kept (R1-style; DAPO and Dr. GRPO drop it). With beta > 0 the starting adapter is kept as the reference and kl is logged.")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field("dapo", description="How token losses are averaged (TRL's loss_type); dapo: over the tokens of the whole step, free of GRPO's length bias.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="What a completion's advantage (its reward minus its group's mean) is divided by (TRL's scale_rewards): group: its group's std (GRPO); "
        "batch: the step's std, so a group whose completions differ a little moves the policy a little (PPO Lite); none: nothing (Dr. GRPO)."
    )
    batch_size: int = Field(4, ge=1, description="Prompts per optimizer step (on each device, under torchrun); each is sampled num_generations times.")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Completions per forward/backward pass (gradients accumulate over a step); None: all of a step's completions (batch_size x num_generations) at once. Must divide them."
    )
    steps_per_generation: int = Field(
        1, ge=1, description="Optimizer steps that share one generation batch (their prompts sampled in one generate call; the later steps train slightly "
        "off-policy, held in by the clipped importance ratio). 1: every step samples its own. Larger batches did not pay on an H200 with Unsloth "
        "(1.1B, 4 prompts x 8 x 128 tokens: 4 steps a batch ran 3.93 s a step at 6.0 GiB against 2.61 s at 3.3 GiB; docs/benchmarks.md)."
    )
    epochs: float = Field(1, gt=0, description="Passes over the prompts of train.jsonl; ignored when max_steps is set.")
    seed: int = Field(0, description="Seed of the new adapter, prompt order and sampling.")
    # checkpoints, logging, output
    save_steps: int = Field(25, ge=1, description="Write a checkpoint (atomically) every this many steps; --resume continues from the last one.")
    logging_steps: int = Field(1, ge=1, description="Log rewards, zero-advantage groups, lengths and rates every this many steps (metrics.jsonl).")
    save: Literal["adapter", "merged"] = Field("adapter", description="adapter: LoRA adapter + tokenizer; merged: 16-bit merged model.")

    @field_validator("num_generations")
    @classmethod
    def groups_of_two_or_more(cls, value: int) -> int:
        if value < 2:
            raise ValueError(
                f"num_generations={value}: GRPO scores each completion against the other completions of its prompt, so a "
                "single completion always has zero advantage and nothing is learned; use 2 or more (8 is usual)"
            )
        return value

    @field_validator("rewards")
    @classmethod
    def known_rewards(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("no rewards: name at least one, e.g. correctness=1.0")
        for name, weight in value.items():
            if name not in BUILTIN_REWARDS and not USER_REWARD.match(name):
                raise ValueError(f"unknown reward {name!r}: use one of {', '.join(BUILTIN_REWARDS)}, or module.path:function for your own")
            if not math.isfinite(weight):
                raise ValueError(f"reward {name!r} has weight {weight}; give a finite number")
        return value

    @model_validator(mode="after")
    def consistent(self) -> "GRPOConfig":
        if "judge" in self.rewards and self.judge is None:
            raise ValueError("the judge reward needs a judge teacher: set judge (e.g. judge.backend=openai judge.model=NAME judge.base_url=[URL], or judge.model=embedded to try)")
        per_step = self.batch_size * self.num_generations
        if self.micro_batch_size is not None and per_step % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} does not divide a step's {per_step} completions (batch_size {self.batch_size} x "
                f"num_generations {self.num_generations}); use a divisor of {per_step}"
            )
        if self.max_completion_length and self.length_budget and self.length_budget >= self.max_completion_length and "length" in self.rewards:
            raise ValueError(f"length_budget={self.length_budget} must be below max_completion_length={self.max_completion_length}, or the length reward never applies")
        return self
