"""The contract between the stages that is not a JSON Schema, in one place:

- the assistant turn: `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`; a trace ends at the first
  `</think>` (as vLLM's reasoning parsers read it), and what follows is the answer that is graded;
- how a record becomes a chat prompt: closed-book (item split, knowledge) asks the question
  alone; open-book (document split, skill) gives the passage, then the question; a record
  without a passage (data brought from elsewhere) is asked as its own conversation;
- the names of the metrics that evaluation reports and GRPO rewards reuse.
"""

from __future__ import annotations

from typing import Literal

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

Mode = Literal["closed-book", "open-book"]
OPEN_BOOK = "Read the passage and answer the question.\n\nPassage:\n{context}\n\nQuestion: {question}"

# metric -> label in reports; the first six are the string graders (common.graders.string_scores):
# correctness is GRPO's correctness reward (per reference: numeric, exact match or token F1)
METRICS = {
    "correctness": "correctness (GRPO reward)",
    "exact_match": "exact match",
    "token_f1": "token F1",
    "contains": "contains answer",
    "numeric": "numeric match",
    "format": "format",
    "judge": "judge (0-1)",
    "pairwise_vs_teacher": "preferred over teacher",
}
STRING_METRICS = ("correctness", "exact_match", "token_f1", "contains", "numeric", "format")


# ---------------------------------------------------------------- the assistant turn


def assistant_text(reasoning: str, answer: str) -> str:
    """The assistant turn a student learns: its trace, closed, then the answer."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"


def split_trace(text: str) -> tuple[str | None, str]:
    """(trace, answer) of a model output. The trace ends at the first `</think>` (an opening
    `<think>` is optional: R1-style templates open it in the prompt). No `</think>`: no trace and
    the whole text is the answer, unless a `<think>` was opened and never closed (the output ran
    out inside its trace): then the trace is all there is and the answer is empty."""
    if THINK_CLOSE in text:
        head, _, answer = text.partition(THINK_CLOSE)
        return head.strip().removeprefix(THINK_OPEN).strip(), answer.strip()
    stripped = text.strip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN) :].strip(), ""
    return None, stripped


def final_answer(text: str) -> str:
    """The part of a model output that is graded: what follows the trace."""
    return split_trace(text)[1]


# ---------------------------------------------------------------- record -> prompt


def mode_for_split(split_by: str) -> Mode:
    """The prompt mode that matches how the data was split (see DESIGN.md)."""
    return "open-book" if split_by == "document" else "closed-book"


def own_conversation(record: dict) -> bool:
    """A record without `context` (data brought as chat, Alpaca, ShareGPT, or records without a
    passage: common.formats) is asked as its own conversation, in either mode: its user turns
    hold whatever passage the prompt has."""
    return "context" not in record


def user_turn(record: dict, mode: Mode) -> str:
    if mode == "open-book" and not own_conversation(record):
        return OPEN_BOOK.format(context=record["context"], question=record["question"])
    return record["question"]


def prompt_messages(record: dict, mode: Mode) -> list[dict]:
    """The conversation up to the (last) assistant turn."""
    if own_conversation(record):
        return record["messages"][:-1]
    return [{"role": "user", "content": user_turn(record, mode)}]


def training_messages(record: dict, mode: Mode) -> list[dict]:
    """The full conversation the student learns: the record's assistant turn (trace + answer);
    a record's own conversation as it stands (every assistant turn of it is learned)."""
    if own_conversation(record):
        return record["messages"]
    return prompt_messages(record, mode) + [record["messages"][-1]]
