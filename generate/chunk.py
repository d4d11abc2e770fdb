"""Token-aware chunking that prefers heading and paragraph boundaries.

Every chunk is an exact slice `doc.text[start:end]`, so its offsets always point back into
the document. Sizes are counted in tokens of the student tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from generate.ingest import Document

PARAGRAPH = re.compile(r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*")
HEADING = re.compile(r"^(#{1,6} |\S.*\n[=-]{3,}$)", re.M)
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
WORD = re.compile(r"\S+")


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


def chunk_documents(docs: list[Document], tokenizer, size: int, overlap: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for doc in docs:
        spans = _spans(doc.text, tokenizer, size)
        for index, (start, end) in enumerate(_pack(spans, size, overlap)):
            chunks.append(Chunk(doc.doc, index, start, end, doc.text[start:end]))
    return chunks


def _spans(text: str, tokenizer, size: int) -> list[Span]:
    """Paragraph blocks (headings start their own block), with oversize blocks cut down to size."""
    bounds = []
    for match in PARAGRAPH.finditer(text):
        cuts = [h.start() for h in HEADING.finditer(match.group())] + [len(match.group())]
        prev = 0
        for cut in cuts:
            if cut > prev:
                bounds.append((match.start() + prev, match.start() + cut))
            prev = cut
    counts = _count(tokenizer, _with_gaps(text, bounds))
    spans: list[Span] = []
    for (start, end), tokens in zip(bounds, counts):
        heading = bool(HEADING.match(text[start:end]))
        if tokens <= size:
            spans.append(Span(start, end, tokens, heading))
        else:
            spans += _cut(text, start, end, tokenizer, size)
    return spans


def _cut(text: str, start: int, end: int, tokenizer, size: int) -> list[Span]:
    """Split one oversize block at sentence ends, and a still-oversize sentence into words."""
    pieces, prev = [], start
    for match in SENTENCE_END.finditer(text, start, end):
        pieces.append((prev, match.start()))
        prev = match.end()
    pieces.append((prev, end))
    counts = _count(tokenizer, _with_gaps(text, pieces))
    out: list[Span] = []
    for (s, e), tokens in zip(pieces, counts):
        out += [Span(s, e, tokens)] if tokens <= size else _words(text, s, e, tokenizer, size)
    return out


def _words(text: str, start: int, end: int, tokenizer, size: int) -> list[Span]:
    """Whole words (packing joins them again), and a word longer than the budget cut by token offsets."""
    words = [match.span() for match in WORD.finditer(text, start, end)]
    out: list[Span] = []
    for (s, e), tokens in zip(words, _count(tokenizer, _with_gaps(text, words))):
        if tokens <= size:
            out.append(Span(s, e, tokens))
            continue
        offsets = tokenizer([text[s:e]], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"][0]
        for i in range(0, len(offsets), size):
            window = offsets[i : i + size]
            out.append(Span(s + window[0][0], s + window[-1][1], len(window)))
    return out


def _with_gaps(text: str, bounds: list[tuple[int, int]]) -> list[str]:
    """Each piece with the whitespace before it: the separators inside a chunk cost tokens too
    (counting a chunk's first piece with its gap over-counts a little, which keeps the budget)."""
    return [text[(bounds[i - 1][1] if i else s) : e] for i, (s, e) in enumerate(bounds)]


def _count(tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _pack(spans: list[Span], size: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy packing; a heading past half a chunk starts a new one; trailing spans repeat as overlap."""
    chunks: list[tuple[int, int]] = []
    current: list[Span] = []
    total = 0
    for span in spans:
        fits = total + span.tokens <= size
        heading_break = span.heading and total >= size // 2
        if current and (not fits or heading_break):
            last = current[-1]  # a heading never ends a chunk: it moves on with its section
            carried = [current.pop()] if last.heading and len(current) > 1 and last.tokens + span.tokens <= size else []
            chunks.append((current[0].start, current[-1].end))
            current = carried or ([] if heading_break else _tail(current, overlap))
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
