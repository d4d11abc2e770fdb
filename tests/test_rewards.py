"""GRPO rewards on hand-made completions, in both forms TRL passes them (strings, and chat-message
lists for conversational prompts); the reward spec parser; user rewards by import path; the judge
reward through the cached-teacher path; the GRPO config's rules."""

from __future__ import annotations

import asyncio
import json

import pytest

from common import graders
from common.config import build
from common.errors import UserError
from common.teacher.backends import Response
from common.teacher.config import TeacherConfig
from train.grpo_config import GRPOConfig
from train.rewards import JudgeReward, load_user_reward, named, parse_reward_specs

GOOD = "<think>\nThe passage dates it.\n</think>\n\nIn 1874."


def both_forms(texts: list[str]) -> list[list]:
    """The same completions as strings and as TRL's conversational completions."""
    return [list(texts), [[{"role": "assistant", "content": t}] for t in texts]]


@pytest.mark.parametrize("form", [0, 1], ids=["strings", "messages"])
def test_format_reward(form):
    texts = [
        GOOD,
        "The passage dates it.\n</think>\n\n1874",  # the template opened <think> in the prompt: still a trace
        "<think>\nstill thinking when the budget ran out",  # never closed
        "<think>\nThe passage dates it.\n</think>\n\n  ",  # closed, but no answer
        "<think>\n</think>\n\n1874",  # an empty trace
        "1874",  # no trace at all
    ]
    completions = both_forms(texts)[form]
    assert graders.format_reward([None] * len(texts), completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("form", [0, 1], ids=["strings", "messages"])
def test_correctness_reward_picks_the_grader_per_reference(form):
    texts = [GOOD, "<think>\nx\n</think>\n\nin 1875", "<think>\nx\n</think>\n\nthe Eiffel Tower!", "<think>\nx\n</think>\n\nloops run while true"]
    answers = ["1874", "1874", "Eiffel tower", "a loop runs while its condition is true"]
    scores = graders.correctness_reward(None, both_forms(texts)[form], answer=answers)
    # numeric (short number), numeric wrong, exact match (short text), token F1: pred {loops run while true}, ref
    # {loop runs while its condition is true}: common {while, true} -> P 2/4, R 2/7, F1 = 2*(1/2)(2/7)/(1/2+2/7) = 4/11
    assert scores == pytest.approx([1.0, 0.0, 1.0, 4 / 11])
    assert graders.pick_grader("1874") == "numeric" and graders.pick_grader("3.5 kg") == "numeric"
    assert graders.pick_grader("Eiffel tower") == "exact_match" and graders.pick_grader("a loop runs while its condition is true") == "token_f1"


def test_evals_correctness_is_the_reward():
    """string_scores (what `distill eval` reports per answer) carries the correctness reward's value."""
    texts = [GOOD, "<think>\nx\n</think>\n\nin 1875", "<think>\nx\n</think>\n\nthe Eiffel Tower!", "it runs while true"]
    answers = ["1874", "1874", "Eiffel tower", "a loop runs while its condition is true"]
    rewards = graders.correctness_reward(None, texts, answer=answers)
    scores = [graders.string_scores(t, a)["correctness"] for t, a in zip(texts, answers)]
    assert scores == rewards == pytest.approx([1, 0, 1, 6 / 11])  # F1: P 3/4, R 3/7


def test_correctness_reward_with_a_chosen_grader():
    completions = ["<think>\nx\n</think>\n\nIt was built in 1874 from granite.", "<think>\nx\n</think>\n\nno idea"]
    assert graders.correctness_reward(None, completions, answer=["1874", "1874"], grader="contains") == [1.0, 0.0]
    assert graders.correctness_reward(None, completions, answer=["granite", "1874"], grader="exact_match") == [0.0, 0.0]
    assert graders.correctness_reward(None, completions[:1], answer=["granite"], grader="numeric") == [None]  # no number: does not apply


@pytest.mark.parametrize("form", [0, 1], ids=["strings", "messages"])
def test_length_reward_is_a_soft_penalty_past_the_budget(form):
    ids = [[0] * n for n in (5, 10, 15, 20, 40)]
    completions = both_forms(["x"] * 5)[form]
    assert graders.length_reward(None, completions, completion_ids=ids, budget=10, limit=20) == pytest.approx([0, 0, -0.5, -1, -1])
    words = both_forms(["one two three", "one two three four five six"])[form]  # no completion_ids: words count
    assert graders.length_reward(None, words, budget=4) == pytest.approx([0, -0.5])  # limit 2 x budget


def test_parse_reward_specs():
    assert parse_reward_specs(["correctness=1.0", "format=0.2", "mypkg.rewards:cites_evidence=0.5", "judge"]) == {
        "correctness": 1.0,
        "format": 0.2,
        "mypkg.rewards:cites_evidence": 0.5,
        "judge": 1.0,
    }
    assert parse_reward_specs(["length=-0.5"]) == {"length": -0.5}
    for spec, message in [("speed=1", "unknown reward 'speed'"), ("format=lots", "not a number"), ("format=nan", "finite"), ("mypkg.rewards=1", "unknown reward")]:
        with pytest.raises(UserError, match=message):
            parse_reward_specs([spec])
    with pytest.raises(UserError, match="given twice"):
        parse_reward_specs(["format=1", "format=0.5"])


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def cites(prompts, completions, evidence, **kwargs):\n"
        "    return [float(e.lower() in str(c).lower()) for c, e in zip(completions, evidence)]\n"
        "def positional(text):\n    return [0.0]\n"
        "async def judged(prompts, completions, **kwargs):\n    return [0.5] * len(completions)\n"
        "NOT_A_FUNCTION = 3\n"
    )
    (tmp_path / "broken_rewards.py").write_text("import no_such_package_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def test_user_reward_loads_and_is_checked(user_module):
    cites = named("my_rewards:cites", load_user_reward("my_rewards:cites"))
    assert cites.__name__ == "my_rewards:cites"
    assert cites(["p", "p"], ["it says granite", "no"], evidence=["granite", "granite"], trainer_state=None) == [1.0, 0.0]
    judged = named("my_rewards:judged", load_user_reward("my_rewards:judged"))
    assert asyncio.run(judged(["p"], ["x"])) == [0.5]  # async stays async (TRL runs it on its event loop)
    for spec, message in [
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
        ("broken_rewards:f", "cannot import broken_rewards"),
        ("my_rewards:missing", "has no attribute 'missing'"),
        ("my_rewards:NOT_A_FUNCTION", "not a function"),
        ("my_rewards:positional", r"def positional\(prompts, completions, \*\*kwargs\)"),
    ]:
        with pytest.raises(UserError, match=message):
            load_user_reward(spec)


def test_judge_reward_asks_once_and_reads_the_cache_after(tmp_path, teacher_factory):
    def grade(request):
        answer = request.messages[0]["content"].split("Answer to grade: ")[1].split("\n")[0]
        return Response(key=request.key, text=json.dumps({"score": 5 if answer == "1874" else 1}) if answer != "broken" else "not json")

    teacher = teacher_factory(grade)
    cfg = TeacherConfig(model="scripted-judge")
    columns = {"question": ["When?"] * 3, "answer": ["1874"] * 3}
    completions = [[{"role": "assistant", "content": GOOD.replace("In 1874.", "1874")}], "<think>\nx\n</think>\n\n1900", "<think>\nx\n</think>\n\nbroken"]
    judge = JudgeReward(cfg, tmp_path / "judge.sqlite")
    assert judge(["p"] * 3, completions, **columns) == [1.0, 0.0, None]
    assert judge.asked == {"cache_hits": 0, "sent": 3} and len(teacher.sent) == 3
    assert teacher.sent[0].schema == graders.JUDGE_SCHEMA and teacher.sent[0].max_new_tokens == 32
    judge.close()
    again = JudgeReward(cfg, tmp_path / "judge.sqlite")  # a resumed run: same completions, same cache
    assert again(["p"] * 3, completions[:2], **{k: v[:2] for k, v in columns.items()}) == [1.0, 0.0]
    assert again.asked == {"cache_hits": 2, "sent": 0} and len(teacher.sent) == 3
    again.close()


def test_the_judge_reward_is_evals_judge(tmp_path, teacher_factory):
    """GRPO's judge reward asks what `distill eval`'s judge asks (common.judge): greedy, the same
    prompt on the final answer, the same schema and budget, so the same cache keys."""
    from common.judge import judge_prompt, judge_teacher
    from common.teacher.ask import prompt_key

    teacher = teacher_factory(lambda request: Response(key=request.key, text='{"score": 4}'))
    cfg = TeacherConfig(model="scripted-judge")  # temperature 0.7 by default, as a gen teacher samples
    completions = [GOOD, [{"role": "assistant", "content": "<think>\nx\n</think>\n\n1900"}]]
    judge = JudgeReward(cfg, tmp_path / "judge.sqlite")
    assert judge(["p"] * 2, completions, question=["When?"] * 2, answer=["1874"] * 2) == [0.75, 0.75]
    judge.close()
    assert judge_teacher(cfg).temperature == 0.0 and judge.cfg == judge_teacher(cfg)
    evals = [judge_prompt("When?", "1874", graders.completion_text(c)) for c in completions]  # what eval asks
    assert [r.key for r in teacher.sent] == [prompt_key(judge_teacher(cfg), p) for p in evals]
    assert [r.messages for r in teacher.sent] == [p.messages for p in evals]
    assert "Answer to grade: In 1874." in evals[0].messages[0]["content"]


def test_config_rules_say_what_to_do():
    base = {"data": "d", "out": "o"}
    cases = [
        ({"num_generations": 1}, "zero advantage"),
        ({"rewards": {"speed": 1.0}}, "unknown reward 'speed'"),
        ({"rewards": {}}, "no rewards"),
        ({"rewards": {"judge": 1.0}}, "needs a judge teacher"),
        ({"batch_size": 3, "num_generations": 4, "micro_batch_size": 5}, "does not divide a step's 12 completions"),
        ({"rewards": {"length": 1.0}, "length_budget": 64, "max_completion_length": 64}, "must be below max_completion_length"),
        ({"form": "x"}, "unknown key 'form'"),
    ]
    for extra, message in cases:
        with pytest.raises(UserError, match=message):
            build(GRPOConfig, {**base, **extra})
    cfg = build(GRPOConfig, {**base, "rewards": {"judge": 1.0, "format": 0.5}, "judge": {"model": "embedded"}})
    assert cfg.judge.model == "embedded" and cfg.num_generations == 8 and cfg.lr == 5e-6 and cfg.beta == 0.0 and cfg.temperature == 1.0
    assert GRPOConfig().rewards == {"correctness": 1.0, "format": 0.2}
    assert all(field.description for field in GRPOConfig.model_fields.values())
