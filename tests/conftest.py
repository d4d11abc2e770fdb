"""Shared fixtures: the embedded tokenizer, writers of small documents of every format
(and of broken ones), and a scripted teacher that obeys the backend interface of
`common.teacher.backends` (installed where every stage makes its teacher).

The embedded model directory comes from the real user cache (`~/.cache/distill`): converting
it again into an isolated DISTILL_HOME would cost ~30 s per session.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator

import pytest

import distill  # noqa: F401  (first: it sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP)
from common.teacher.backends import Request, Response

# Facts that the documents state, one sentence each (all long enough to be quotable evidence).
FACTS = {
    "txt": ["The lighthouse of Varnholm was built in 1874 from grey granite.", "Its lamp burned whale oil until the year 1921."],
    "md": ["The river Ostra flows north for 212 kilometres before it reaches the sea.", "Salmon return to the Ostra every autumn to spawn."],
    "html": ["The Quillon bridge spans 480 metres across the Tessel gorge.", "Engineers finished the bridge in the spring of 1936."],
    "pdf": ["The Morrow observatory stands at an altitude of 2400 metres.", "Its main telescope has a mirror of 3.1 metres."],
    "docx": ["The guild of Amberley glassblowers was founded in 1602.", "Members sealed their work with a small green stamp."],
}


# ---------------------------------------------------------------- the embedded model


@pytest.fixture(scope="session")
def embedded_path() -> str:
    from common.models import resolve_model

    return resolve_model("embedded")


@pytest.fixture(scope="session")
def tokenizer(embedded_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_path)


@pytest.fixture
def shared_tokenizer(tokenizer, monkeypatch):
    """The gen stage reuses the session's tokenizer instead of loading it for every run (~1 s each)."""
    import generate.stage

    monkeypatch.setattr(generate.stage, "load_tokenizer", lambda name: tokenizer)
    return tokenizer


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------- documents


def write_txt(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_md(path: Path, title: str, paragraphs: list[str]) -> Path:
    return write_txt(path, f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n")


def write_html(path: Path, title: str, paragraphs: list[str]) -> Path:
    body = "".join(f"<p>{p}</p>\n" for p in paragraphs)
    markup = (
        f"<html><head><title>{title}</title><style>p {{ color: red; }}</style>"
        "<script>var secret = 'SCRIPT_TEXT';</script></head>"
        f"<body><nav>NAV_TEXT</nav><h1>{title}</h1>\n{body}</body></html>"
    )
    return write_txt(path, markup)


def pdf_bytes(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF whose content stream shows `lines` in Helvetica."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    shown = " T* ".join(f"({escape(line)}) Tj" for line in lines)
    stream = f"BT /F1 11 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write_pdf(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pdf_bytes(lines))
    return path


def write_docx(path: Path, title: str, paragraphs: list[str]) -> Path:
    import docx

    path.parent.mkdir(parents=True, exist_ok=True)
    document = docx.Document()
    document.add_heading(title, level=2)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    document.save(str(path))
    return path


def write_every_format(folder: Path) -> dict[str, Path]:
    """One small document per supported format, each stating its own FACTS; returns format -> path."""
    return {
        "txt": write_txt(folder / "lighthouse.txt", "Varnholm lighthouse\n\n" + "\n\n".join(FACTS["txt"]) + "\n"),
        "md": write_md(folder / "river.md", "The river Ostra", FACTS["md"]),
        "html": write_html(folder / "bridge.html", "The Quillon bridge", FACTS["html"]),
        "pdf": write_pdf(folder / "observatory.pdf", FACTS["pdf"]),
        "docx": write_docx(folder / "guild.docx", "Amberley glassblowers", FACTS["docx"]),
    }


def write_broken(folder: Path) -> dict[str, Path]:
    """Files that cannot be read, by kind: binary, empty, broken PDF, non-UTF-8, unsupported type."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "binary": folder / "blob.txt",
        "empty": folder / "empty.md",
        "broken_pdf": folder / "broken.pdf",
        "latin1": folder / "latin1.txt",
        "unsupported": folder / "image.png",
    }
    files["binary"].write_bytes(b"\x00\x01\x02\xff" * 64)
    files["empty"].write_text("  \n\n \t\n")
    files["broken_pdf"].write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    files["latin1"].write_bytes("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve fa\u00e7ade.".encode("latin-1"))
    files["unsupported"].write_bytes(b"\x89PNG\r\n\x1a\n")
    return files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Llama for a module's training tests (tests/trainkit.py)."""
    from trainkit import tiny_model

    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A 24-record gen directory for a module's training tests (tests/trainkit.py)."""
    from trainkit import data_dir

    return data_dir(tmp_path_factory.mktemp("data") / "data", n=24)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder with one readable document of every supported format."""
    folder = tmp_path / "docs"
    write_every_format(folder)
    return folder


# ---------------------------------------------------------------- a scripted teacher


def branches(request: Request) -> list[dict]:
    """The item shapes the request schema offers: one, or (answers: span) one per quote and answer, in
    order (facts first with span answers: item i's branches, then item i+1's: prefixItems)."""
    array = request.schema["properties"]["items"]
    shapes = array["prefixItems"] if "prefixItems" in array else [array["items"]]
    return [branch["properties"] for item in shapes for branch in item.get("anyOf", [item])]


def evidence_choices(request: Request) -> list[str]:
    """The quotable sentences the request schema offers as evidence (structured requests)."""
    return list(dict.fromkeys(quote for branch in branches(request) for quote in branch["evidence"]["enum"]))


def answer_choice(request: Request, quote: str) -> str | None:
    """answers: span: the first answer the schema allows for `quote` (None: the answer is free)."""
    for branch in branches(request):
        if branch["evidence"]["enum"] == [quote] and "enum" in branch["answer"]:
            return branch["answer"]["enum"][0]
    return None


def n_items(request: Request) -> int:
    return request.schema["properties"]["items"]["minItems"]


def phrasings(request: Request) -> int:
    """Questions asked per fact: the request schema's `questions` count, else one `question`."""
    fact = branches(request)[0]
    return fact["questions"]["minItems"] if "questions" in fact else 1


OPENERS = ["Which", "What", "How", "Where", "When", "Who", "Is", "Does"]
WORDS = ["", *(" ".join(f"{word}{j}" for word in ("amber", "birch", "cedar")) for j in range(1, 8))]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def is_listing(request: Request) -> bool:
    """A facts-first listing request (generate/facts.py): its reply lists facts, not items."""
    return request.schema is not None and "facts" in request.schema.get("properties", {})


def listing_output(request: Request) -> str:
    """Every quotable sentence of the chunk as one fact (its evidence), within the list's bound."""
    listed = request.schema["properties"]["facts"]
    quotes = listed["items"]["properties"]["evidence"]["enum"][: listed["maxItems"]]
    return json.dumps({"facts": [{"evidence": quote, "fact": f"Fact: {quote}"} for quote in quotes]})


def good_output(request: Request, tag: str = "") -> str:
    """A schema-valid, grounded answer: one item per requested fact, each quoting the chunk, asked
    in as many phrasings as the request wants (a listing request: every quotable sentence a fact)."""
    if is_listing(request):
        return listing_output(request)
    quotes = evidence_choices(request)
    k = phrasings(request)
    items = []
    for i in range(n_items(request)):
        quote = quotes[i % len(quotes)]
        span = answer_choice(request, quote)  # answers: span (the embedded teacher's default)
        answer = span or quote.split()[-1].rstrip(".")
        # phrasings that differ by more than a word (near-twins of one fact are dropped before the split)
        asked = [f"Which statement {i} {tag} about: {quote}?"] + [f"{OPENERS[j]} {WORDS[j]} {i} {tag} {digest(quote)}?" for j in range(1, k)]
        if span:  # a question never holds its span answer
            asked = [question.replace(answer, "...") for question in asked]
        fact = {"evidence": quote, "reasoning": quote if span else f"The passage says: {quote}", "answer": answer}
        items.append({"questions": asked, **fact} if k > 1 else {"question": asked[0], **fact})
    return json.dumps({"items": items})


def good_response(request: Request) -> Response:
    """Valid JSON for a QA request; for a free-text request (a rewrite) a line naming the request."""
    if request.schema is None:
        return Response(key=request.key, text=f"Rewritten ({request.key[:8]}): {request.messages[-1]['content'][:60]}", prompt_tokens=50, completion_tokens=20)
    return Response(key=request.key, text=good_output(request, request.key[:8]), prompt_tokens=50, completion_tokens=20)


class ScriptedTeacher:
    """Obeys the Teacher protocol; `script(request)` decides each answer (a Response, or an
    exception to raise mid-stream). Every request it was asked to answer is recorded in `sent`."""

    name = "scripted"

    def __init__(self, script: Callable[[Request], Response] = good_response, model: str = "embedded"):
        self.script = script
        self.model = model
        self.sent: list[Request] = []
        self.closed = False

    def generate(self, requests: list[Request]) -> Iterator[Response]:
        for request in requests:
            self.sent.append(request)
            yield self.script(request)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def teacher_factory(monkeypatch):
    """Install ScriptedTeachers where every stage makes its teacher (`common.teacher.ask.make_teacher`,
    behind the cached-teacher path): `use(script)` returns the teacher the next run gets."""
    from common.teacher import ask

    made: list[ScriptedTeacher] = []

    def use(script: Callable[[Request], Response] = good_response) -> ScriptedTeacher:
        teacher = ScriptedTeacher(script)
        made.append(teacher)
        monkeypatch.setattr(ask, "make_teacher", lambda cfg: teacher)
        return teacher

    use.made = made
    return use
