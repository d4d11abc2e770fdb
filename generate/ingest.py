"""Read documents (.txt .md .html .htm .pdf .docx) from files, directories and globs.

A file that cannot be read is skipped with a one-line reason; it never stops the run:
an unsupported type, binary content, text that is not UTF-8 (or UTF-16/32 with a byte order
mark), a damaged PDF or DOCX, no text at all, a file over `max_file_mb`, a broken link or a
link loop, a link to a folder (links to folders are not followed, so no loop can form), or a
second link to a file already read. Damaged HTML is read best effort (html.parser).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gc
import glob
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx")
MAX_FILE_MB = 100  # GenConfig.max_file_mb: the text of one file is held whole, with its chunks and prompts (~5x)
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass(frozen=True)
class Document:
    doc: str  # the document's id in records: its path under the corpus root (doc_name)
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def discover(inputs: list[str]) -> list[Path]:
    """Expand files, directories (recursive) and globs into a sorted list of candidate files.
    Links to folders are listed, not followed (read_all says so), so a link loop cannot repeat files."""
    if not inputs:
        raise UserError("no input documents given; pass files, directories or globs, e.g. distill gen docs/ --out data")
    found: list[Path] = []
    for item in inputs:
        for path in _expand(item) or [Path(item)]:
            if path.is_dir():
                found += sorted(p for p in path.rglob("*") if (p.is_file() or p.is_symlink()) and not _hidden(p, path))
            elif path.is_file() or path.is_symlink():
                found.append(path)
            else:
                raise UserError(f"input {item} does not exist; check the path or quote the glob")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(f"no files found under {', '.join(inputs)}; point at documents ({', '.join(SUFFIXES)})")
    return unique


def corpus_root(inputs: list[str]) -> str:
    """The folder that documents are named from (`doc_name`): the deepest one holding every input's folder (a
    folder input itself, a glob's folder before its first wildcard, a file's folder). So a record's document,
    id and fact, and with them the split, stay the same wherever the corpus is moved or copied to."""
    folders = []
    for item in inputs:
        if globbed := _glob(item):
            folder = globbed[0]
        else:
            folder = Path(item) if Path(item).is_dir() else Path(item).parent
        folders.append(os.path.abspath(folder))
    try:
        return os.path.commonpath(folders)
    except ValueError:  # no common folder (Windows drives): documents keep their paths as given
        return ""


def doc_name(path: Path | str, root: str) -> str:
    """A document's id: its path under the corpus root, with '/' (the path as given without a root)."""
    if not root:
        return str(path)
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()


def _expand(item: str) -> list[Path]:
    """A glob's matches, sorted; `**` does not descend into linked folders (glob.glob does, and a
    link loop then repeats every file ~40 times). Hidden files only where the pattern names them."""
    if not (split := _glob(item)):
        return []
    root, pattern = split
    shown = pattern.startswith(".") or "/." in pattern
    return sorted(p for p in root.glob(pattern) if shown or not _hidden(p, root))


def _glob(item: str) -> tuple[Path, str] | None:
    """A glob's folder (before its first wildcard) and pattern; None for a plain path."""
    parts = Path(item).parts
    magic = next((i for i, part in enumerate(parts) if glob.has_magic(part)), None)
    if magic is None:
        return None
    return (Path(*parts[:magic]) if magic else Path(".")), "/".join(parts[magic:])


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def unique_files(paths: list[Path]) -> tuple[list[Path], list[Skipped]]:
    """The paths to read, each file once (under its own name where a link also names it), and the links left out."""
    kept, skipped = [], []
    seen = {os.path.realpath(p): str(p) for p in reversed(paths) if not p.is_symlink()}  # a file is read under its own name
    for path in paths:
        real = os.path.realpath(path)
        if seen.setdefault(real, str(path)) != str(path):
            skipped.append(Skipped(str(path), f"same file as {seen[real]} (a link): read once"))
        else:
            kept.append(path)
    return kept, skipped


@contextlib.contextmanager
def fewer_collections():
    """Python's young-object collections run every 700 allocations by default. Reading and chunking
    allocate millions of short-lived objects (pypdf's object trees, python-docx's XML, token lists), and
    those collections took ~1 ms of a document's 5-7 ms; inside this they run every 50,000 allocations
    and one core reads ~1.4x the documents (2026-12-05, docs/benchmarks.md). The threshold is restored after
    (each use keeps its own: a decorated function's calls may nest or overlap)."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 50_000), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@fewer_collections()
def read_all(paths: list[Path], max_file_mb: float = MAX_FILE_MB, root: str = "") -> tuple[list[Document], list[Skipped]]:
    """The documents named under `root` (`corpus_root`; '': by their paths as given), and the files skipped, by
    their paths as given."""
    docs, skipped = [], []
    links = {s.path: s for s in unique_files(paths)[1]}
    for path in paths:
        if str(path) in links:
            skipped.append(links[str(path)])
            continue
        try:
            text = read(path, max_file_mb)
        except Exception as exc:  # any reader failure is a reason to skip this file, not to stop
            skipped.append(Skipped(str(path), _reason(exc)))
            continue
        if not text.strip():
            scanned = " (a scanned PDF needs OCR first)" if path.suffix.lower() == ".pdf" else ""
            skipped.append(Skipped(str(path), f"empty: no text{scanned}"))
        else:
            docs.append(Document(doc_name(path, root), text))
    return docs, skipped


def _reason(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:200]


def read(path: Path, max_file_mb: float = MAX_FILE_MB) -> str:
    """The plain text of one document; raises on unsupported or unreadable files."""
    _check_link(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"unsupported file type '{suffix or path.name}' (supported: {', '.join(SUFFIXES)})")
    limit = int(max_file_mb * 2**20)
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{size / 2**20:.0f} MB, over max_file_mb ({max_file_mb:g} MB): split the file, or raise max_file_mb (memory grows ~5x the text)")
    if suffix == ".pdf":
        text = _pdf(path)
    elif suffix == ".docx":
        text = _docx(path, limit)
    else:
        text = _decode(path.read_bytes())
        text = _html(text) if suffix in (".html", ".htm") else text
    if len(text) > limit:
        raise ValueError(f"its text is over max_file_mb ({max_file_mb:g} MB): split the file, or raise max_file_mb")
    return text


def _check_link(path: Path) -> None:
    """A link that leads nowhere, in a loop, or to a folder is a reason to skip it, said plainly."""
    if not path.is_symlink():
        return
    try:
        target = path.resolve(strict=True)
    except (RuntimeError, OSError) as exc:
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            raise ValueError("link loop: the link never reaches a file") from None
        raise ValueError(f"broken link: its target {os.readlink(path)} does not exist") from None
    if target.is_dir():
        raise ValueError(f"a link to the folder {target}: links to folders are not followed; pass the folder itself as an input")


def _decode(raw: bytes) -> str:
    bom = next((encoding for mark, encoding in BOMS if raw.startswith(mark)), None)
    if bom is None and b"\x00" in raw[:4096]:
        raise ValueError("binary content (NUL bytes)")
    try:
        text = raw.decode(bom or "utf-8")
    except UnicodeDecodeError as exc:
        what = f"not valid {bom}" if bom else "not UTF-8"
        raise ValueError(f"{what} (byte {exc.start}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # Windows and old Mac line ends


HTML_DROPPED = {"script", "style", "nav", "header", "footer", "noscript"}
HTML_BLOCKS = {"title", "p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr", "section", "article", "br"}
HTML_CELLS = {"td", "th"}  # cells of a row stay on one line, but apart


def _html(markup: str) -> str:
    """The text of a page, every block element a paragraph of its own. One walk with an explicit
    stack, so that nesting 100k elements deep costs linear time (editing the tree took 16 min)."""
    from bs4 import BeautifulSoup, CData, NavigableString, Tag

    parts: list[str] = []
    stack: list[tuple[object, bool]] = [(BeautifulSoup(markup, "html.parser"), False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            parts.append("\n\n" if node.name in HTML_BLOCKS else " ")
        elif isinstance(node, Tag) and node.name not in HTML_DROPPED:
            if node.name in HTML_BLOCKS or node.name in HTML_CELLS:
                stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.contents))
        elif type(node) in (NavigableString, CData):  # not comments, doctypes, scripts' code
            parts.append(str(node))
    lines = [" ".join(line.split()) for line in "".join(parts).split("\n\n")]
    return "\n\n".join(line for line in lines if line)


def _pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # what pypdf raises on damage
        raise ValueError(f"damaged PDF, pypdf cannot read it ({type(exc).__name__}: {exc})") from None


def _docx(path: Path, limit: int) -> str:
    import docx

    if not zipfile.is_zipfile(path):
        raise ValueError("not a DOCX: not a zip archive (an old .doc renamed? save it as .docx)")
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > 8 * limit:  # XML is several times its text; a zip bomb is far more
        raise ValueError(f"DOCX unpacks to {unpacked / 2**20:.0f} MB, over 8x max_file_mb: split the file, or raise max_file_mb")
    try:
        document = docx.Document(str(path))
    except Exception as exc:  # python-docx raises KeyError, lxml errors, its own: all mean a damaged file
        raise ValueError(f"damaged DOCX, python-docx cannot read it ({type(exc).__name__}: {exc})") from None
    style_of = _docx_style_names(document)
    paragraphs = []
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = style_of(para._p.style)  # the paragraph's style id (w:pStyle), or None: its default style
        if style.startswith("heading"):
            level = style.removeprefix("heading").strip()
            text = "#" * (int(level) if level.isdigit() else 1) + " " + text
        paragraphs.append(text)
    return "\n\n".join(paragraphs)


def _docx_style_names(document):
    """style id (or None) -> lower-case style name, resolved as python-docx's `Paragraph.style` resolves it
    (`get_style`: an unknown or missing id is the default paragraph style), once per id a document uses:
    `Paragraph.style` searches every style for each paragraph, three quarters of the time to read a DOCX."""
    from docx.enum.style import WD_STYLE_TYPE
    from docx.styles.style import StyleFactory

    names: dict[str | None, str] = {}

    def name(style_id: str | None) -> str:
        if style_id not in names:
            style = document.part.get_style(style_id, WD_STYLE_TYPE.PARAGRAPH) if style_id else default()
            names[style_id] = (style.name or "").lower() if style is not None else ""
        return names[style_id]

    def default():  # Styles.default, by one XPath query instead of reading every style's attributes
        on = '(@w:default="1" or @w:default="true" or @w:default="on")'
        found = document.styles.element.xpath(f'w:style[(not(@w:type) or @w:type="paragraph") and {on}]')
        return StyleFactory(found[-1]) if found else None

    return name
