"""The grading judge, built in one place for `distill eval` (its `judge` and `pairwise_vs_teacher`
metrics) and for GRPO's `judge` reward, so that a completion rewarded 0.75 in training is graded
0.75 by eval: the same model config made greedy, the same prompt (`common.graders.judge_messages`
on the final answer), the same JSON Schema and the same token budget.
"""

from __future__ import annotations

from common import graders
from common.contract import final_answer
from common.teacher.ask import Prompt
from common.teacher.config import TeacherConfig

JUDGE_TOKENS = 32  # {"score": 5} or {"better": "tie"} and the end of the turn


def judge_teacher(cfg: TeacherConfig) -> TeacherConfig:
    """The judge: the given model, greedy, answering in the grader's JSON Schema, no repair turns."""
    return cfg.model_copy(
        update={"temperature": 0.0, "structured": True, "max_new_tokens": JUDGE_TOKENS, "repair_attempts": 0}
    )


def judge_prompt(question: str, reference: str, output: str) -> Prompt:
    """Ask for a 1-5 grade of `output`'s final answer (what follows its trace) against the reference."""
    return Prompt(graders.judge_messages(question, reference, final_answer(output)), graders.JUDGE_SCHEMA, JUDGE_TOKENS)


def pairwise_prompt(question: str, reference: str, first: str, second: str) -> Prompt:
    """Ask which of two outputs' final answers is closer to the reference ('1', '2' or 'tie')."""
    messages = graders.pairwise_messages(question, reference, final_answer(first), final_answer(second))
    return Prompt(messages, graders.PAIRWISE_SCHEMA, JUDGE_TOKENS)
