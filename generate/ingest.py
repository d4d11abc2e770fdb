"""Read documents (.txt .md .html .htm .pdf .docx) from files, directories and globs.

A file that cannot be read is skipped with a reason; it never stops the run.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx")


@dataclass(frozen=True)
class Document:
    doc: str  # display path, used as the document id in records
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def discover(inputs: list[str]) -> list[Path]:
    """Expand files, directories (recursive) and globs into a sorted list of candidate files."""
    if not inputs:
        raise UserError("no input documents given; pass files, directories or globs, e.g. distill gen docs/ --out data")
    found: list[Path] = []
    for item in inputs:
        matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))] or [Path(item)]
        for path in matches:
            if path.is_dir():
                found += sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
            elif path.is_file():
                found.append(path)
            else:
                raise UserError(f"input {item} does not exist; check the path or quote the glob")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(f"no files found under {', '.join(inputs)}; point at documents ({', '.join(SUFFIXES)})")
    return unique


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_all(paths: list[Path]) -> tuple[list[Document], list[Skipped]]:
    docs, skipped = [], []
    for path in paths:
        try:
            text = read(path)
        except Exception as exc:  # any reader failure is a reason to skip this file, not to stop
            skipped.append(Skipped(str(path), f"{type(exc).__name__}: {exc}".strip()[:200]))
            continue
        if not text.strip():
            skipped.append(Skipped(str(path), "empty: no text"))
        else:
            docs.append(Document(str(path), text))
    return docs, skipped


def read(path: Path) -> str:
    """The plain text of one document; raises on unsupported or unreadable files."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"unsupported file type '{suffix or path.name}' (supported: {', '.join(SUFFIXES)})")
    if suffix == ".pdf":
        return _pdf(path)
    if suffix == ".docx":
        return _docx(path)
    text = _decode(path.read_bytes())
    return _html(text) if suffix in (".html", ".htm") else text


def _decode(raw: bytes) -> str:
    if b"\x00" in raw[:4096]:
        raise ValueError("binary content (NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"undecodable: not UTF-8 at byte {exc.start}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # Windows and old Mac line ends


def _html(markup: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript"]):
        tag.decompose()
    blocks = ("title", "p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr", "section", "article", "br")
    for tag in soup.find_all(blocks):
        tag.insert_after("\n\n")
    for tag in soup.find_all(("td", "th")):  # cells of a row stay on one line, but apart
        tag.insert_after(" ")
    lines = [" ".join(line.split()) for line in soup.get_text().split("\n\n")]
    return "\n\n".join(line for line in lines if line)


def _pdf(path: Path) -> str:
    from pypdf import PdfReader

    reader = PdfReader(path)
    return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()


def _docx(path: Path) -> str:
    import docx

    document = docx.Document(str(path))
    paragraphs = []
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name or "").lower() if para.style is not None else ""
        if style.startswith("heading"):
            level = style.removeprefix("heading").strip()
            text = "#" * (int(level) if level.isdigit() else 1) + " " + text
        paragraphs.append(text)
    return "\n\n".join(paragraphs)
