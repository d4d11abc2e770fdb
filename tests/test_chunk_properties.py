"""Property-based tests of chunking (hypothesis) on hostile text: blank runs, headings, long words, any Unicode.

The contract (generate/chunk.py): every chunk is the exact slice `text[start:end]`; it begins at
a non-space character or at the start of an indented line (the indentation is kept) and ends at
a non-space character; chunks come in document order; only whitespace is left out of every
chunk; the same input gives the same chunks; a chunk holds at most `size` tokens, give or take
one (the blank before a block cut at sentences, or a token merged differently where a word longer
than the budget is cut by tokens).
"""

from __future__ import annotations

import os
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generate.chunk import chunk_documents
from generate.ingest import Document

from conftest import count_tokens

FRAGMENTS = [
    "word", "Quillon", "bridge", "1936", "ünïcødé", "日本語", "🙂", "x9Qz" * 30,  # a long word
    " ", "  ", "\t", "\n", "\n\n", "\n \n", "\n\n\n\n", " " * 40, ".", "!", "?", ";", ": ",
    "# ", "## Heading\n", "\nTitle\n=====\n", "---\n", '"""', "</passage>", "\r",
]  # fmt: skip
texts = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=120).map("".join),
    st.text(max_size=400),  # any Unicode, surrogates and controls included
)
PROPERTY = settings(max_examples=int(os.environ.get("DISTILL_HYPOTHESIS_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check_contract(text: str, chunks, size: int, tokenizer) -> None:
    covered = bytearray(len(text))
    for n, chunk in enumerate(chunks):
        assert chunk.index == n and 0 <= chunk.start < chunk.end <= len(text)
        assert chunk.text == text[chunk.start : chunk.end] and chunk.text.strip()
        first, last = chunk.text[0], chunk.text[-1]
        assert not first.isspace() or chunk.start == 0 or text[chunk.start - 1] == "\n", repr(chunk.text)
        assert not last.isspace(), repr(chunk.text)
        assert count_tokens(tokenizer, chunk.text) <= size + 1, repr(chunk.text)
        covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
    left_out = "".join(ch for ch, seen in zip(text, covered) if not seen)
    assert not left_out.strip(), repr(left_out)  # only whitespace is dropped, between chunks
    assert [c.start for c in chunks] == sorted({c.start for c in chunks})  # document order, no repeats
    assert [c.end for c in chunks] == sorted({c.end for c in chunks})


@PROPERTY
@given(text=texts, size=st.integers(8, 48), overlap_share=st.sampled_from([0, 0.25, 0.5]))
def test_chunks_are_exact_cover_everything_but_whitespace_and_repeat(tokenizer, text, size, overlap_share):
    doc = Document("doc.md", text)
    overlap = int(size * overlap_share)
    chunks = chunk_documents([doc], tokenizer, size, overlap)
    check_contract(text, chunks, size, tokenizer)
    assert chunk_documents([doc], tokenizer, size, overlap) == chunks  # deterministic
    if not text.strip():
        assert chunks == []


@PROPERTY
@given(text=texts, cut=st.integers(0, 400))
def test_a_document_is_chunked_alone(tokenizer, text, cut):
    """Chunks of one document do not depend on the other documents beside it."""
    a, b = Document("a.md", text[:cut]), Document("b.md", text[cut:])
    together = chunk_documents([a, b], tokenizer, 24, 6)
    assert [c for c in together if c.doc == "a.md"] == chunk_documents([a], tokenizer, 24, 6)
    assert [c for c in together if c.doc == "b.md"] == chunk_documents([b], tokenizer, 24, 6)


@pytest.mark.parametrize("blank", [" ", "\t", " \n", "\n"])
def test_long_runs_of_blanks_take_linear_time(tokenizer, blank):
    """Blank runs of a megabyte: the paragraph pattern once took quadratic time on them (100k spaces: ~50 s)."""
    text = "Start of the text.\n\n" + blank * 1_000_000 + "\n\nEnd of the text."
    started = time.perf_counter()
    chunks = chunk_documents([Document("doc.txt", text)], tokenizer, 32, 0)
    assert time.perf_counter() - started < 5
    assert [c.text for c in chunks] == ["Start of the text.", "End of the text."]  # no chunk spans a megabyte of blanks


def test_a_word_of_megabytes_is_cut_by_tokens(tokenizer):
    blob = "x9Qz" * 250_000  # one "word" of a megabyte, no space: read a window at a time
    chunks = chunk_documents([Document("doc.txt", f"Before. {blob} After.")], tokenizer, 64, 0)
    inside = [c.text for c in chunks if c.text in blob]
    assert "".join(inside) == blob and all(re.fullmatch(r"[x9Qz]+", t) for t in inside)
    assert max(count_tokens(tokenizer, t) for t in inside[:50]) <= 65
