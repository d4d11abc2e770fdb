"""Chunking: token budget, overlap, heading/paragraph boundaries, exact offsets, oversize blocks."""

from __future__ import annotations

import re

import pytest

from generate.chunk import chunk_documents
from generate.config import GenConfig
from generate.ingest import Document
from generate.stage import setup

from conftest import count_tokens, write_every_format

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def sentence(i: int, words: int = 12) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words)).capitalize() + f" number {i}."


def paragraph(i: int, sentences: int = 3) -> str:
    return " ".join(sentence(i * 10 + k) for k in range(sentences))


def sections(count: int, paragraphs: int) -> str:
    parts = []
    for s in range(count):
        parts.append(f"## Section {s}\n\n" + "\n\n".join(paragraph(s * 100 + p) for p in range(paragraphs)))
    return "\n\n".join(parts) + "\n"


def check_exact(doc: Document, chunks, stripped: bool = True) -> None:
    for chunk in chunks:
        assert chunk.doc == doc.doc
        assert chunk.text == doc.text[chunk.start : chunk.end] and chunk.text.strip()
        if stripped:  # cut at paragraphs and sentences, no chunk starts or ends in whitespace
            assert chunk.text == chunk.text.strip()
    assert [c.index for c in chunks] == list(range(len(chunks)))


def covered(doc: Document, chunks) -> bool:
    """Every non-space character of the document lies in some chunk."""
    mask = [False] * len(doc.text)
    for chunk in chunks:
        mask[chunk.start : chunk.end] = [True] * (chunk.end - chunk.start)
    return all(mask[i] or ch.isspace() for i, ch in enumerate(doc.text))


@pytest.mark.parametrize("size, overlap", [(64, 0), (64, 16), (128, 32), (200, 8)])
def test_budget_offsets_and_coverage(tokenizer, size, overlap):
    doc = Document("doc.md", sections(4, 5))
    chunks = chunk_documents([doc], tokenizer, size, overlap)
    assert len(chunks) >= count_tokens(tokenizer, doc.text) // size
    check_exact(doc, chunks)
    assert covered(doc, chunks)
    for chunk in chunks:
        assert count_tokens(tokenizer, chunk.text) <= size, chunk.text


def test_chunks_end_on_paragraph_boundaries(tokenizer):
    doc = Document("doc.md", sections(3, 6))
    chunks = chunk_documents([doc], tokenizer, 100, 20)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.start == 0 or doc.text[chunk.start - 2 : chunk.start] == "\n\n"
        assert chunk.end == len(doc.text.rstrip()) or doc.text[chunk.end : chunk.end + 2] == "\n\n"


def test_overlap_repeats_trailing_paragraphs(tokenizer):
    doc = Document("doc.md", "\n\n".join(sentence(i, 6) for i in range(40)))
    sentence_tokens = max(count_tokens(tokenizer, sentence(i, 6)) for i in range(40))
    overlap = 2 * sentence_tokens + 1
    with_overlap = chunk_documents([doc], tokenizer, 60, overlap)
    without = chunk_documents([doc], tokenizer, 60, 0)
    for a, b in zip(with_overlap, with_overlap[1:]):
        assert b.start < a.end  # consecutive chunks share text...
        shared = doc.text[b.start : a.end]
        assert 0 < count_tokens(tokenizer, shared) <= overlap  # ...at most `overlap` tokens of it
    for a, b in zip(without, without[1:]):
        assert b.start > a.end
    assert len(with_overlap) > len(without)


def test_headings_start_chunks(tokenizer):
    # Each section is about 60% of a chunk: without the heading rule two would share a chunk.
    doc = Document("doc.md", sections(6, 2))
    section_tokens = count_tokens(tokenizer, doc.text) / 6
    size = int(section_tokens / 0.6)
    chunks = chunk_documents([doc], tokenizer, size, 0)
    assert len(chunks) == 6
    assert all(c.text.startswith("## Section ") for c in chunks)


@pytest.mark.parametrize("overlap", [0, 30])
def test_a_heading_never_ends_a_chunk(tokenizer, overlap):
    # a short section, then a heading whose long paragraph does not fit beside it
    text = "## One\n\n" + paragraph(1, 1) + "\n\n## Two\n\n" + paragraph(2, 4)
    doc = Document("doc.md", text)
    chunks = chunk_documents([doc], tokenizer, count_tokens(tokenizer, paragraph(2, 4)) + 10, overlap)
    check_exact(doc, chunks)
    assert [c.text.split("\n")[0] for c in chunks] == ["## One", "## Two"]
    assert all(not c.text.endswith("## Two") for c in chunks)


def test_setext_headings_count_as_headings(tokenizer):
    body = "\n\n".join(paragraph(i, 2) for i in range(2))
    text = "\n\n".join(f"Title {i}\n========\n\n{body}" for i in range(4))
    doc = Document("doc.txt", text)
    size = int(count_tokens(tokenizer, text) / 4 / 0.6)
    chunks = chunk_documents([doc], tokenizer, size, 0)
    assert [c.text.split("\n")[0] for c in chunks] == [f"Title {i}" for i in range(4)]


def test_oversize_paragraph_is_cut_at_sentences(tokenizer):
    big = " ".join(sentence(i) for i in range(30))  # one paragraph, ~10x the budget
    doc = Document("doc.txt", f"Intro line here.\n\n{big}\n\nOutro line here.")
    chunks = chunk_documents([doc], tokenizer, 48, 0)
    check_exact(doc, chunks)
    assert covered(doc, chunks)
    assert len(chunks) >= count_tokens(tokenizer, big) // 48
    inside = [c for c in chunks if c.start > 20 and c.end < len(doc.text) - 20]
    assert inside and all(re.search(r"number \d+\.$", c.text) for c in inside)  # cut after a sentence end
    assert all(count_tokens(tokenizer, c.text) <= 48 for c in chunks)


@pytest.mark.parametrize("overlap", [0, 8])
def test_oversize_sentence_is_cut_between_words(tokenizer, overlap):
    run_on = " ".join(WORDS * 12)  # ~230 tokens, no sentence end, no newline
    doc = Document("doc.txt", run_on)
    chunks = chunk_documents([doc], tokenizer, 40, overlap)
    check_exact(doc, chunks)
    assert covered(doc, chunks)
    assert len(chunks) >= count_tokens(tokenizer, run_on) // 40
    assert all(count_tokens(tokenizer, c.text) <= 40 for c in chunks)
    for chunk in chunks:  # whole words only
        assert chunk.start == 0 or run_on[chunk.start - 1] == " "
        assert chunk.end == len(run_on) or run_on[chunk.end] == " "


def test_a_word_longer_than_the_budget_is_cut_by_tokens(tokenizer):
    blob = "x9Qz" * 150  # one "word" of ~300 tokens
    doc = Document("doc.txt", f"Before the blob. {blob} After the blob.")
    chunks = chunk_documents([doc], tokenizer, 40, 0)
    check_exact(doc, chunks)
    assert covered(doc, chunks)
    assert "".join(c.text for c in chunks if c.text in blob) == blob
    assert all(count_tokens(tokenizer, c.text) <= 41 for c in chunks)  # a cut inside a word may merge one token differently


def test_every_document_keeps_its_id(tokenizer):
    docs = [Document("a.md", sections(2, 3)), Document("b.md", sections(1, 2))]
    chunks = chunk_documents(docs, tokenizer, 80, 10)
    assert {c.doc for c in chunks} == {"a.md", "b.md"}
    for doc in docs:
        check_exact(doc, [c for c in chunks if c.doc == doc.doc])
    assert len({c.key for c in chunks}) == len(chunks)


def test_max_chunks_caps_the_plan_deterministically(tmp_path, shared_tokenizer):
    docs = tmp_path / "docs"
    write_every_format(docs)
    (docs / "long.md").write_text(sections(4, 4))
    cfg = lambda seed, cap: GenConfig(inputs=[str(docs)], out=str(tmp_path / "out"), chunk_tokens=64, chunk_overlap=0, max_chunks=cap, seed=seed)  # noqa: E731
    full = setup(cfg(0, None))
    assert len(full.chunks) > 6
    first, again, other = setup(cfg(0, 3)), setup(cfg(0, 3)), setup(cfg(1, 3))
    assert len(first.chunks) == len(first.prompts) == 3
    assert first.chunks == again.chunks
    assert all(c in full.chunks for c in first.chunks)
    assert first.chunks == sorted(first.chunks, key=lambda c: (c.doc, c.index))
    assert other.chunks != first.chunks  # the seed picks the sample
