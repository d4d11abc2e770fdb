"""One place that separates a teacher's native reasoning trace from its JSON answer.

Providers return the trace in different ways: a `reasoning_content` or `reasoning` field of
the message (vLLM/SGLang with a reasoning parser, DeepSeek, OpenRouter), an inline
`<think>...</think>` block before the answer, or, for R1-style distills served without a
reasoning parser, the trace followed by a lone `</think>` (the chat template already opened
the block). Whatever the form, the answer passed on is the text after the block.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def split_reasoning(content: str | None, reasoning: str | None = None) -> tuple[str, str | None]:
    """(answer text, trace or None). A field trace wins over an inline one; both are stripped."""
    text = (content or "").strip()
    inline = None
    if CLOSE in text:
        head, _, text = text.partition(CLOSE)
        inline = head.strip().removeprefix(OPEN).strip()
        text = text.strip()
    elif text.startswith(OPEN):  # cut off while thinking: the trace is all there is
        inline, text = text[len(OPEN) :].strip(), ""
    trace = (reasoning or "").strip() or inline
    return text, trace or None
