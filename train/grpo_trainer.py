"""The Trainer class the GRPO stage builds: TRL's GRPOTrainer (Unsloth's patched one when Unsloth
was imported first), plus where each step's time goes and the derived per-step metrics.

TRL already logs what GRPO needs watching: `rewards/<name>/mean|std`, `reward`, `reward_std`,
`frac_reward_zero_std` (the share of completions whose advantage was divided by a zero std),
`completions/mean_length`, `clipped_ratio`, `kl` (beta > 0), `entropy`, `step_time` and
`num_tokens`. Added here: `generate_s` (sampling + scoring the step's completions) and
`update_s` (the rest of the step), `generated_tokens_per_s`, `alike_share` and `zero_advantage_groups`,
the share and number of prompts in the step whose completions all scored the same (they teach
nothing), read off the advantages: TRL's `frac_reward_zero_std` measures the std it divides by,
which under scale_rewards=batch is the step's, so it reads 0 whatever the groups did.

TRL computes the completions' log-probabilities with a Triton kernel (a fused, chunked LM head)
that cannot run without a GPU; on CPU the hf backend takes them from the model's logits instead.
Unsloth, on its backend, computes them its own way, on GPU and CPU.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from train.trainer import ResumeOnCPUProcesses

ALIKE = 1e-3  # a group's advantages spread less than this: it scored alike (rounding in its mean, divided by std + 1e-4, leaves ~6e-4)


class StepTimes:
    """Times each step's generation (sampling + rewards), counts the tokens it wrote and the groups that scored alike."""

    def _generate_and_score_completions(self, inputs):
        start = time.perf_counter()
        batch = super()._generate_and_score_completions(inputs)
        if self.model.training:
            seconds = time.perf_counter() - start
            self._metrics["train"]["generate_s"].append(seconds)
            self._metrics["train"]["generated_tokens"].append(float(batch["completion_mask"].sum()))
            groups = batch["advantages"].detach().float().view(-1, self.num_generations)  # a rank's slice holds whole groups
            spread = groups.max(dim=1).values - groups.min(dim=1).values
            self._metrics["train"]["alike_share"].append((spread < ALIKE).float().mean().item())
        return batch


class LogitsLogps:
    """Per-token log-probabilities and entropies of the completions from the model's own logits."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, compute_aux_loss=False, **multimodal):
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
            with self.accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1).logits
            log_softmax = (logits[:, :-1].float() / self.temperature).log_softmax(-1)  # position t predicts token t + 1
            logps.append(log_softmax.gather(-1, ids[:, -logits_to_keep:].unsqueeze(-1)).squeeze(-1))
            if compute_entropy:
                entropies.append(-(log_softmax.exp() * log_softmax).sum(-1))
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None


def grpo_trainer_class(backend: str, gpu: bool) -> type:
    """Unsloth's or TRL's GRPOTrainer with step times; logits-based log-probabilities for hf without a GPU."""
    mixins = (StepTimes, ResumeOnCPUProcesses) + ((LogitsLogps,) if backend == "hf" and not gpu else ())
    return type("DistillGRPOTrainer", (*mixins, GRPOTrainer), {})


class StepStats(TrainerCallback):
    """Adds the derived metrics to each log before metrics.jsonl gets it (list it before Metrics), and
    warns once when every group of the first logged steps scored alike: the rewards cannot tell this
    policy's completions apart (all right, all wrong, or a format it never writes), so nothing moves."""

    WATCHED = 3  # logged steps

    def __init__(self, prompts_per_step: int, warn: Callable[[str], None]):
        self.prompts_per_step = prompts_per_step
        self.warn = warn
        self.alike: list[bool] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "step_time" not in logs:
            return
        generate, tokens = logs.pop("generate_s", None), logs.pop("generated_tokens", None)
        if generate:
            logs["generate_s"] = round(generate, 4)
            logs["update_s"] = round(max(logs["step_time"] - generate, 0.0), 4)
            logs["generated_tokens_per_s"] = round(tokens / generate, 2)
        share = logs.get("alike_share")
        if share is None:
            return
        logs["zero_advantage_groups"] = round(share * self.prompts_per_step, 2)
        if len(self.alike) < self.WATCHED:
            self.alike.append(share >= 1.0)
            if len(self.alike) == self.WATCHED and all(self.alike):
                self.warn(
                    f"every group of the first {self.WATCHED} logged steps scored alike (zero advantage: no update); the rewards cannot "
                    "tell this policy's completions apart: start from an SFT student (--from), raise temperature, or add a reward with partial credit"
                )
