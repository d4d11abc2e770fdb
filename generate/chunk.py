"""Token-aware chunking that prefers heading and paragraph boundaries.

Every chunk is an exact slice `doc.text[start:end]`, so its offsets always point back into
the document. Sizes are counted in tokens of the student tokenizer. A chunk starts on a non-space
character (or an indented line's indentation) and ends on one; only whitespace is left out of
every chunk. Memory beyond the text and its chunks stays bounded: pieces are tokenized a batch at
a time, and every pattern runs in linear time (a megabyte of blanks or one endless word included).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from generate.ingest import Document, fewer_collections

# runs of non-blank lines, from a line start (indentation kept) to the last non-space character;
# anchored at line starts, so a long run of blanks costs linear time, not quadratic
PARAGRAPH = re.compile(r"^[^\S\n]*\S(?:[^\n]*\S)?(?:[^\S\n]*\n[^\S\n]*\S(?:[^\n]*\S)?)*", re.M)
HEADING = re.compile(r"^(#{1,6} |\S.*\n[=-]{3,}$)", re.M)
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
WORD = re.compile(r"\S+")
BATCH = 256  # pieces tokenized at once
LONG_PIECE = 64  # characters per budget token beyond which a piece is oversize without counting
LONG_WORD = 65536  # characters of one word tokenized at once


@dataclass(frozen=True)
class Chunk:
    doc: str
    index: int
    start: int
    end: int
    text: str

    @property
    def key(self) -> str:
        return f"{self.doc}#{self.index}"


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    tokens: int
    heading: bool = False
    breaks: bool = False  # after a gap of whitespace too long to share a chunk with what came before


@fewer_collections()
def chunk_documents(docs: list[Document], tokenizer, size: int, overlap: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for doc in docs:
        for index, (start, end) in enumerate(_pack(_spans(doc.text, tokenizer, size), size, overlap)):
            chunks.append(Chunk(doc.doc, index, start, end, doc.text[start:end]))
    return chunks


def _blocks(text: str) -> Iterator[tuple[int, int]]:
    """Paragraphs (runs of non-blank lines), each cut before every heading inside it."""
    for match in PARAGRAPH.finditer(text):
        prev = match.start()
        for heading in HEADING.finditer(text, match.start(), match.end()):
            if heading.start() > prev:
                end = heading.start() - 1
                while text[end - 1].isspace():  # the line end before the heading stays out
                    end -= 1
                yield prev, end
            prev = heading.start()
        yield prev, match.end()


def _spans(text: str, tokenizer, size: int) -> Iterator[Span]:
    """Paragraph blocks (headings start their own block), with oversize blocks cut down to size."""
    for start, end, gap, tokens, breaks in _counted(text, _blocks(text), tokenizer, size):
        if tokens is not None and tokens <= size:
            yield Span(start, end, tokens, bool(HEADING.match(text, start, end)), breaks)
        else:
            yield from _cut(text, start, end, tokenizer, size, gap)


def _cut(text: str, start: int, end: int, tokenizer, size: int, gap: int) -> Iterator[Span]:
    """Split one oversize block at sentence ends, and a still-oversize sentence into words."""

    def pieces() -> Iterator[tuple[int, int]]:
        prev = start
        for match in SENTENCE_END.finditer(text, start, end):
            yield prev, match.start()
            prev = match.end()
        if prev < end:
            yield prev, end

    for s, e, before, tokens, breaks in _counted(text, pieces(), tokenizer, size, gap):
        if tokens is not None and tokens <= size:
            yield Span(s, e, tokens, breaks=breaks)
        else:
            yield from _words(text, s, e, tokenizer, size, before)


def _words(text: str, start: int, end: int, tokenizer, size: int, gap: int) -> Iterator[Span]:
    """Whole words (packing joins them again), and a word longer than the budget cut by token offsets."""
    words = (match.span() for match in WORD.finditer(text, start, end))
    for s, e, _, tokens, breaks in _counted(text, words, tokenizer, size, gap):
        if tokens is not None and tokens <= size:
            yield Span(s, e, tokens, breaks=breaks)
            continue
        for w in range(s, e, LONG_WORD):  # a word of megabytes (a blob) is read a window at a time
            offsets = tokenizer([text[w : min(w + LONG_WORD, e)]], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"][0]
            before = max(0, tokens - len(offsets)) if tokens is not None and w == s else 0  # the whitespace before the word
            for first, last, run in _token_runs(offsets, size):
                yield Span(w + first, w + last, run + before, breaks=breaks and w == s)
                before = 0


def _token_runs(offsets: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int, int]]:
    """(first character, end character, tokens) of runs of at most `size` tokens, cut only where
    no character is split between two tokens (byte-level tokens of one character share its offsets)."""
    cuts = [i for i in range(1, len(offsets)) if offsets[i][0] >= offsets[i - 1][1]] + [len(offsets)]
    start = last = 0
    for cut in cuts:
        if cut - start > size and last > start:
            yield offsets[start][0], offsets[last - 1][1], last - start
            start = last
        last = cut
    if last > start:
        yield offsets[start][0], offsets[last - 1][1], last - start


def _counted(text: str, bounds: Iterable[tuple[int, int]], tokenizer, size: int, before: int | None = None) -> Iterator[tuple[int, int, int, int | None, bool]]:
    """(start, end, gap start, tokens, breaks) of each piece, tokenized BATCH pieces at a time, so
    that a long document never holds the token ids of more than one batch. A piece is counted with
    the whitespace before it (`before`: where the first piece's begins, when it is cut from a
    larger block): the separators inside a chunk cost tokens too (counting a chunk's first piece
    with its gap over-counts a little, which keeps the budget). Past LONG_PIECE characters per
    budget token nothing is tokenized whole: a piece that long is oversize (tokens None), and a
    piece after a gap that long breaks the chunk (it is counted alone)."""
    limit = LONG_PIECE * size
    prev = None
    for batch in _batched(bounds, BATCH):
        texts, pieces = [], []
        for s, e in batch:
            gap = prev if prev is not None else (s if before is None else before)
            breaks = e - gap > limit
            measured = e - s <= limit
            if measured:
                texts.append(text[s if breaks else gap : e])
            pieces.append((s, e, gap, measured, breaks))
            prev = e
        counts = iter(_count(tokenizer, texts))
        for s, e, gap, measured, breaks in pieces:
            yield s, e, gap, (next(counts) if measured else None), breaks


def _batched(items: Iterable, n: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, n)):
        yield batch


def _count(tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _pack(spans: Iterable[Span], size: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy packing; a heading past half a chunk starts a new one; trailing spans repeat as overlap."""
    chunks: list[tuple[int, int]] = []
    current: list[Span] = []
    total = 0
    for span in spans:
        fits = total + span.tokens <= size
        heading_break = span.heading and total >= size // 2
        if current and (not fits or heading_break or span.breaks):
            last = current[-1]  # a heading never ends a chunk: it moves on with its section
            carried = [current.pop()] if last.heading and len(current) > 1 and last.tokens + span.tokens <= size and not span.breaks else []
            chunks.append((current[0].start, current[-1].end))
            current = carried or ([] if heading_break or span.breaks else _tail(current, overlap))
            total = sum(s.tokens for s in current)
            if total + span.tokens > size:
                current, total = [], 0
        current.append(span)
        total += span.tokens
    if current:
        chunks.append((current[0].start, current[-1].end))
    return chunks


def _tail(spans: list[Span], overlap: int) -> list[Span]:
    kept: list[Span] = []
    total = 0
    for span in reversed(spans):
        if total + span.tokens > overlap:
            break
        kept.insert(0, span)
        total += span.tokens
    return kept
