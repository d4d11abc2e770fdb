"""Graders: plain functions that score one answer against one reference.

A leaf of the shared layer: `distill eval` reports them and the GRPO rewards in `train/` import
the same functions, so what the student is rewarded for is what it is measured on. Nothing here calls
a model: the LLM-as-judge graders are split into a prompt builder (`judge_messages`,
`pairwise_messages`, with the JSON Schema the judge must answer in) and a parser of the
judge's reply; the caller sends the prompt through whatever backend it has.

Student outputs look like `<think>\\n{trace}\\n</think>\\n\\n{answer}`: grade `final_answer(text)`.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter

import jsonschema

from common.contract import THINK_CLOSE, final_answer, split_trace

ARTICLES = {"a", "an", "the"}
NUMBER = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")


# ---------------------------------------------------------------- normalization


def normalize(text: str) -> str:
    """SQuAD-style normalization, unicode-aware: NFKC, casefold, punctuation and symbols become
    spaces, articles (a, an, the) dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return " ".join(word for word in text.split() if word not in ARTICLES)


def tokens(text: str) -> list[str]:
    return normalize(text).split()


# ---------------------------------------------------------------- string graders


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalized strings are equal."""
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over normalized tokens (bag of words)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, reference: str) -> float:
    """1.0 when the normalized reference occurs in the normalized prediction as whole words."""
    ref = normalize(reference)
    if not ref:
        return 0.0
    return float(f" {ref} " in f" {normalize(prediction)} ")


# ---------------------------------------------------------------- numbers


def numbers(text: str) -> list[float]:
    """Every number written with digits, in order: `1,234.5`, `-3`, `2e-3`, `.5`; unicode
    digits (NFKC) and the minus sign `−` count."""
    text = unicodedata.normalize("NFKC", text)
    found = []
    for match in NUMBER.finditer(text):
        raw = match.group().replace(",", "").replace("−", "-")
        if not any(ch.isdigit() for ch in raw):
            continue
        try:
            found.append(float(raw))
        except ValueError:
            continue
    return found


def numeric_match(prediction: str, reference: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> float | None:
    """1.0 when the last number of the prediction equals the last number of the reference
    within tolerance; None when the reference holds no number (the grader does not apply)."""
    ref = numbers(reference)
    if not ref:
        return None
    pred = numbers(prediction)
    return float(bool(pred) and math.isclose(pred[-1], ref[-1], rel_tol=rel_tol, abs_tol=abs_tol))


# ---------------------------------------------------------------- format


def format_adherence(text: str) -> float:
    """1.0 when the output has a non-empty `<think>` trace, closes it, and a non-empty answer follows."""
    trace, answer = split_trace(text)
    return float(bool(trace) and THINK_CLOSE in text and bool(answer))


def string_scores(output: str, reference: str, rel_tol: float = 1e-6) -> dict[str, float | None]:
    """Every non-LLM grader on one model output (its final answer against the reference), by the
    names of `common.contract.STRING_METRICS`. `correctness` is the GRPO correctness reward's value
    (`correctness`, auto grader, default tolerance) for this output: what training rewards is what eval reports."""
    answer = final_answer(output)
    return {
        "correctness": correctness(output, reference),
        "exact_match": exact_match(answer, reference),
        "token_f1": token_f1(answer, reference),
        "contains": contains_answer(answer, reference),
        "numeric": numeric_match(answer, reference, rel_tol=rel_tol),
        "format": format_adherence(output),
    }


# ---------------------------------------------------------------- LLM as judge

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"enum": [1, 2, 3, 4, 5]}},
    "required": ["score"],
    "additionalProperties": False,
}
PAIRWISE_SCHEMA = {
    "type": "object",
    "properties": {"better": {"enum": ["1", "2", "tie"]}},
    "required": ["better"],
    "additionalProperties": False,
}
JUDGE_PROMPT = """You grade an answer to a question against the reference answer.
Score 5: same meaning as the reference. 4: correct, minor omissions. 3: partly correct.
2: mostly wrong. 1: wrong, empty or off topic. Judge meaning, not wording or length.

Question: {question}
Reference answer: {reference}
Answer to grade: {answer}

Reply with JSON only: {{"score": <1-5>}}"""
PAIRWISE_PROMPT = """Two answers to the same question. Which one is closer in meaning to the
reference answer and more correct? Ignore length and style. Say "tie" when they are equally good.

Question: {question}
Reference answer: {reference}
Answer 1: {first}
Answer 2: {second}

Reply with JSON only: {{"better": "1" | "2" | "tie"}}"""


def judge_messages(question: str, reference: str, answer: str) -> list[dict]:
    """The prompt asking a judge for a 1-5 grade; its reply must fit `JUDGE_SCHEMA`."""
    content = JUDGE_PROMPT.format(question=question, reference=reference, answer=answer or "(empty)")
    return [{"role": "user", "content": content}]


def parse_judge(reply: str) -> float | None:
    """The judge's grade mapped to [0, 1] ((score - 1) / 4); None for a reply off the schema."""
    data = _parse_json(reply, JUDGE_SCHEMA)
    return None if data is None else (data["score"] - 1) / 4


def pairwise_messages(question: str, reference: str, first: str, second: str) -> list[dict]:
    """The prompt asking which of two answers is better; its reply must fit `PAIRWISE_SCHEMA`."""
    content = PAIRWISE_PROMPT.format(question=question, reference=reference, first=first or "(empty)", second=second or "(empty)")
    return [{"role": "user", "content": content}]


def parse_pairwise(reply: str) -> str | None:
    """'1', '2' or 'tie'; None for a reply off the schema."""
    data = _parse_json(reply, PAIRWISE_SCHEMA)
    return None if data is None else data["better"]


def pairwise_preference(student_first: str | None, teacher_first: str | None) -> float | None:
    """Combine the two orders: the student shown first (verdict '1' = student), then the teacher
    shown first (verdict '2' = student). 1.0 student preferred in both, 0.0 teacher preferred in
    both, 0.5 otherwise (a tie, or the orders disagree: position bias); None if a reply is missing."""
    if student_first is None or teacher_first is None:
        return None
    if (student_first, teacher_first) == ("1", "2"):
        return 1.0
    if (student_first, teacher_first) == ("2", "1"):
        return 0.0
    return 0.5


def _parse_json(reply: str, schema: dict) -> dict | None:
    try:
        data = json.loads(reply.strip())
        jsonschema.validate(data, schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return None
    return data


# ---------------------------------------------------------------- GRPO rewards
#
# TRL's reward signature: `reward(prompts, completions, **columns) -> list[float | None]`, one
# score per completion; the dataset's columns (`answer`, `evidence`, `question`, ...) arrive by
# name, with TRL's extras (`completion_ids`, `trainer_state`, ...) among them. A completion is a
# string, or a list of chat messages (conversational prompts); `completion_text` reads both.
# None means "does not apply here" (TRL ignores it in the group's mean).

CORRECTNESS_GRADERS = ("auto", "exact_match", "token_f1", "numeric", "contains")
SHORT_ANSWER = 3  # normalized tokens: a reference this short is a name or a number, graded whole


def completion_text(completion: str | list[dict]) -> str:
    """The text a model wrote: a string as is, or the assistant messages' content joined."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")


def pick_grader(reference: str) -> str:
    """The grader that fits a reference answer: numeric match for a short number ("1874",
    "3.5 kg"), exact match for another short answer (a name, a term), token F1 for a sentence
    (partial credit, and verbosity costs precision)."""
    short = len(tokens(reference)) <= SHORT_ANSWER
    if short and numbers(reference):
        return "numeric"
    return "exact_match" if short else "token_f1"


def correctness(output: str, reference: str, grader: str = "auto") -> float | None:
    """The output's final answer against the reference with `grader` (auto: `pick_grader`);
    None where numeric match was asked for a reference without a number."""
    grader = pick_grader(reference) if grader == "auto" else grader
    answer = final_answer(output)
    if grader == "numeric":
        return numeric_match(answer, reference)
    return {"exact_match": exact_match, "token_f1": token_f1, "contains": contains_answer}[grader](answer, reference)


def correctness_reward(prompts, completions, answer, grader: str = "auto", **columns) -> list[float | None]:
    """1.0 for a right final answer, partial credit for token F1; graded as `distill eval` grades."""
    return [correctness(completion_text(c), ref, grader) for c, ref in zip(completions, answer)]


def format_reward(prompts, completions, **columns) -> list[float]:
    """1.0 for a `<think>` trace, closed, then a non-empty answer (eval's `format` metric)."""
    return [format_adherence(completion_text(c)) for c in completions]


def length_reward(prompts, completions, completion_ids=None, budget: int = 256, limit: int | None = None, **columns) -> list[float]:
    """A soft penalty past a token budget (DAPO's overlong shaping): 0 up to `budget` tokens,
    falling linearly to -1 at `limit` (default 2 x budget) and staying there. Lengths are the
    completion's tokens (`completion_ids`, which TRL passes), else its whitespace-separated words."""
    limit = max(limit or 2 * budget, budget + 1)
    lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else [len(completion_text(c).split()) for c in completions]
    return [-min(max(n - budget, 0) / (limit - budget), 1.0) for n in lengths]
