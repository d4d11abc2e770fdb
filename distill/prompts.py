"""How a record becomes a chat prompt, shared by training and evaluation.

closed-book (item split, knowledge): the user turn is the question alone.
open-book (document split, skill): the user turn is the passage, then the question.
"""

from __future__ import annotations

from typing import Literal

Mode = Literal["closed-book", "open-book"]
OPEN_BOOK = "Read the passage and answer the question.\n\nPassage:\n{context}\n\nQuestion: {question}"


def mode_for_split(split_by: str) -> Mode:
    """The prompt mode that matches how the data was split (see DESIGN.md)."""
    return "open-book" if split_by == "document" else "closed-book"


def user_turn(record: dict, mode: Mode) -> str:
    if mode == "open-book":
        return OPEN_BOOK.format(context=record["context"], question=record["question"])
    return record["question"]


def prompt_messages(record: dict, mode: Mode) -> list[dict]:
    """The conversation up to the assistant turn."""
    return [{"role": "user", "content": user_turn(record, mode)}]


def training_messages(record: dict, mode: Mode) -> list[dict]:
    """The full conversation the student learns: the record's assistant turn (trace + answer)."""
    return prompt_messages(record, mode) + [record["messages"][-1]]
