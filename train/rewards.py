"""The GRPO stage's reward functions, by name, as TRL calls them:
`reward(prompts, completions, **columns) -> list[float | None]`.

- correctness, format, length: the plain functions of `common.graders` (the graders `distill eval`
  reports), bound to this run's settings;
- judge: the judge teacher grades each completion's final answer against the reference, 1-5 mapped
  to 0-1, by `common.judge` (greedy, eval's prompt and token budget: eval's judge metric),
  asked in one batch per step through the cached-teacher path (`CachedTeacher`, its cache in
  the output directory: a resumed run regenerates the same completions and finds every grade there);
- module.path:function: a user's own function, imported and checked when the run starts.

`parse_reward_specs` turns the CLI's `--reward name=weight` strings into the config's dict.
"""

from __future__ import annotations

import importlib
import inspect
import math
from functools import partial
from pathlib import Path
from typing import Callable

from common import graders
from common.errors import UserError
from common.judge import judge_prompt, judge_teacher
from common.teacher.ask import CachedTeacher
from common.teacher.config import TeacherConfig
from train.grpo_config import BUILTIN_REWARDS, USER_REWARD, GRPOConfig

JUDGE_CACHE = "judge_cache.sqlite"


def parse_reward_specs(specs: list[str]) -> dict[str, float]:
    """`["correctness=1", "format=0.2", "mypkg.rewards:cites=0.5", "judge"]` -> {name: weight}; a
    spec without `=weight` weighs 1.0. Unknown names and bad weights are one-line user errors."""
    rewards: dict[str, float] = {}
    for spec in specs:
        name, sep, raw = spec.rpartition("=") if "=" in spec else (spec, "", "1")
        name = name.strip()
        try:
            weight = float(raw)
        except ValueError:
            raise UserError(f"--reward {spec!r}: the weight {raw!r} is not a number; write name=weight, e.g. format=0.2") from None
        if not math.isfinite(weight):
            raise UserError(f"--reward {spec!r}: the weight must be a finite number")
        if name not in BUILTIN_REWARDS and not USER_REWARD.match(name):
            raise UserError(f"--reward {spec!r}: unknown reward {name!r}; use one of {', '.join(BUILTIN_REWARDS)}, or module.path:function=weight for your own")
        if name in rewards:
            raise UserError(f"--reward {name} is given twice; give each reward once")
        rewards[name] = weight
    return rewards


def named(name: str, function: Callable) -> Callable:
    """`function` under `name`, which TRL logs it by (rewards/<name>/mean); async stays async."""
    if inspect.iscoroutinefunction(getattr(function, "__call__", function)) or inspect.iscoroutinefunction(function):

        async def reward(prompts, completions, **columns):
            return await function(prompts=prompts, completions=completions, **columns)

    else:

        def reward(prompts, completions, **columns):
            return function(prompts=prompts, completions=completions, **columns)

    reward.__name__ = reward.__qualname__ = name
    return reward


def load_user_reward(spec: str) -> Callable:
    """Import `module.path:function` and check that TRL can call it; errors say what to fix."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module failing while it runs
        raise UserError(f"reward {spec}: cannot import {module_name} ({type(exc).__name__}: {exc}); check the module path and that it is importable (PYTHONPATH)") from exc
    function = getattr(module, attr, None)
    if function is None:
        raise UserError(f"reward {spec}: {module_name} has no attribute {attr!r}")
    if not callable(function):
        raise UserError(f"reward {spec}: {attr} is a {type(function).__name__}, not a function")
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError) as exc:
        raise UserError(f"reward {spec}: its signature cannot be read ({exc})") from exc
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind is p.VAR_KEYWORD for p in params) or "completions" not in names:
        signature = inspect.signature(function)
        raise UserError(
            f"reward {spec}{signature} cannot be called by GRPO: write it as def {attr}(prompts, completions, **kwargs) returning one "
            "float (or None) per completion; the data's columns (answer, evidence, question, context) arrive as keyword arguments"
        )
    return function


class JudgeReward:
    """The judge teacher's grade of each completion's final answer, 0-1; None where its reply failed (counted
    in `failed`, the last error kept). The request cache is opened at the first call, so a run that fails
    before training leaves none."""

    def __init__(self, cfg: TeacherConfig, cache: Path):
        self.cfg, self.cache = judge_teacher(cfg), cache  # eval's judge: greedy, same prompt and budget
        self.teacher: CachedTeacher | None = None
        self.asked = {"cache_hits": 0, "sent": 0}
        self.failed, self.last_error = 0, None

    def __call__(self, prompts, completions, question, answer, **columns) -> list[float | None]:
        asks = [judge_prompt(q, ref, graders.completion_text(c)) for c, q, ref in zip(completions, question, answer)]
        self.teacher = self.teacher or CachedTeacher(self.cfg, self.cache)
        asked = self.teacher.ask(asks, parse=lambda response: graders.parse_judge(response.text))
        if asked.interrupted:
            raise KeyboardInterrupt
        self.asked["cache_hits"] += asked.cache_hits
        self.asked["sent"] += asked.sent
        failed = {a.key: a for a in asked.answers if a.response is None or a.response.error is not None}
        for a in failed.values():  # a request, not a completion: equal completions share one
            self.failed += 1
            self.last_error = a.response.error if a.response is not None else "no response"
        return [a.value for a in asked.answers]

    def close(self) -> None:
        if self.teacher is not None:
            self.teacher.close()


def build_rewards(
    cfg: GRPOConfig, out: Path, length_budget: int, length_limit: int
) -> tuple[list[Callable], list[float], JudgeReward | None]:
    """(reward functions, their weights, the judge to close at the end or None) for cfg.rewards."""
    functions, judge = [], None
    for name in cfg.rewards:
        if name == "correctness":
            function = partial(graders.correctness_reward, grader=cfg.correctness_grader)
        elif name == "format":
            function = graders.format_reward
        elif name == "length":
            function = partial(graders.length_reward, budget=length_budget, limit=length_limit)
        elif name == "judge":
            function = judge = JudgeReward(cfg.judge, out / JUDGE_CACHE)
        else:
            function = load_user_reward(name)
        functions.append(named(name, function))
    return functions, list(cfg.rewards.values()), judge
