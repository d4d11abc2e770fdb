"""Ingest: every format, directories (recursive), globs; unreadable files skipped with a reason."""

from __future__ import annotations

import pytest

from common.errors import UserError
from generate.ingest import corpus_root, discover, doc_name, read, read_all

from conftest import FACTS, write_broken, write_every_format, write_md, write_txt


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("fmt", sorted(FACTS))
def test_every_format_yields_its_text(tmp_path, fmt):
    path = write_every_format(tmp_path)[fmt]
    text = squash(read(path))
    for fact in FACTS[fmt]:
        assert fact in text


def test_html_drops_markup_scripts_styles_and_navigation(tmp_path):
    text = read(write_every_format(tmp_path)["html"])
    assert "<p>" not in text and "SCRIPT_TEXT" not in text and "color: red" not in text and "NAV_TEXT" not in text
    # the title and every block element become paragraphs of their own, which chunking prefers
    assert text.split("\n\n") == ["The Quillon bridge", "The Quillon bridge", *FACTS["html"]]


def test_html_tables_keep_cells_apart(tmp_path):
    path = write_txt(tmp_path / "t.html", "<table><tr><th>Name</th><th>Height</th></tr><tr><td>Quillon</td><td>480 m</td></tr></table>")
    assert read(path) == "Name Height\n\nQuillon 480 m"


def test_docx_headings_become_markdown_headings(tmp_path):
    text = read(write_every_format(tmp_path)["docx"])
    assert text.splitlines()[0] == "## Amberley glassblowers"
    assert text.split("\n\n")[1:] == FACTS["docx"]


def test_docx_styles_resolve_as_python_docx_resolves_them(tmp_path):
    """The one-pass style lookup names each paragraph's style as python-docx's (slow) Paragraph.style
    does: headings of any level, a built-in style, no style, an id the document lacks, a character style."""
    import docx

    from generate.ingest import _docx_style_names

    document = docx.Document()
    document.add_heading("Top", level=1)
    document.add_heading("Deep", level=3)
    document.add_paragraph("Quoted", style="Quote")
    document.add_paragraph("Plain")
    for style_id in ("NoSuchStyle", "Strong"):  # unknown; a character style's id on a paragraph
        document.add_paragraph("Odd")._p.get_or_add_pPr().get_or_add_pStyle().val = style_id
    path = tmp_path / "styles.docx"
    document.save(str(path))
    reopened = docx.Document(str(path))
    style_of = _docx_style_names(reopened)
    got = [style_of(p._p.style) for p in reopened.paragraphs]
    assert got == [(p.style.name or "").lower() for p in reopened.paragraphs]
    assert got[:4] == ["heading 1", "heading 3", "quote", "normal"]
    assert read(path).split("\n\n")[:2] == ["# Top", "### Deep"]

    from docx.oxml.ns import qn  # a template whose default paragraph style is Heading 2 (w:default="true")

    for style in reopened.styles.element.xpath('w:style[@w:default="1"]'):
        style.set(qn("w:default"), "0")
    reopened.styles["Heading 2"].element.set(qn("w:default"), "true")
    style_of = _docx_style_names(reopened)
    assert [style_of(p._p.style) for p in reopened.paragraphs] == [(p.style.name or "").lower() for p in reopened.paragraphs]
    assert style_of(None) == "heading 2"


def test_htm_and_markdown_suffixes_and_bom(tmp_path):
    htm = write_txt(tmp_path / "page.HTM", "<p>Upper-case suffix works too.</p>")
    md = tmp_path / "notes.markdown"
    md.write_bytes("\ufeffA byte order mark is dropped.".encode("utf-8"))
    assert read(htm) == "Upper-case suffix works too."
    assert read(md) == "A byte order mark is dropped."


def test_windows_line_ends_become_newlines(tmp_path, tokenizer):
    from generate.chunk import chunk_documents

    path = tmp_path / "crlf.txt"
    path.write_bytes(b"Title\r\n=====\r\n\r\nFirst paragraph of the text.\r\n\r\nSecond paragraph.\r\n")
    text = read(path)
    assert text == "Title\n=====\n\nFirst paragraph of the text.\n\nSecond paragraph.\n"
    (docs, _) = read_all([path])
    assert all(not c.text.endswith("\r") for c in chunk_documents(docs, tokenizer, 8, 0))


def test_directories_are_read_recursively_in_sorted_order(tmp_path):
    write_txt(tmp_path / "b.txt", "b")
    write_txt(tmp_path / "sub" / "deeper" / "a.md", "a")
    write_txt(tmp_path / "sub" / "c.txt", "c")
    write_txt(tmp_path / ".git" / "HEAD.txt", "hidden")
    write_txt(tmp_path / "sub" / ".hidden.md", "hidden")
    found = [p.relative_to(tmp_path).as_posix() for p in discover([str(tmp_path)])]
    assert found == ["b.txt", "sub/c.txt", "sub/deeper/a.md"]


def test_globs_and_duplicates(tmp_path):
    write_txt(tmp_path / "one.md", "1")
    write_txt(tmp_path / "two.md", "2")
    write_txt(tmp_path / "three.txt", "3")
    write_txt(tmp_path / "sub" / "four.txt", "4")
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    assert names(discover([str(tmp_path / "*.md")])) == ["one.md", "two.md"]
    assert names(discover([str(tmp_path / "**" / "*.txt")])) == ["four.txt", "three.txt"]  # sorted by path: sub/four.txt < three.txt
    # a file named twice (directly and through a glob) is read once
    assert names(discover([str(tmp_path / "one.md"), str(tmp_path / "*.md")])) == ["one.md", "two.md"]


def test_documents_are_named_under_the_folder_of_every_input(tmp_path, monkeypatch):
    for name in ("docs/a.md", "docs/sub/b.md", "docs/sub/deeper/c.txt", "notes/d.md"):
        write_txt(tmp_path / name, name)
    monkeypatch.chdir(tmp_path)

    def named(*inputs: str) -> list[str]:
        root = corpus_root(list(inputs))
        return [doc_name(p, root) for p in discover(list(inputs))]

    # a folder, a glob, a file: named from that folder, the glob's folder, the file's folder
    assert named("docs") == named("./docs/") == named(str(tmp_path / "docs")) == ["a.md", "sub/b.md", "sub/deeper/c.txt"]
    assert named("docs/**/*.md") == ["a.md", "sub/b.md"]
    assert named("docs/sub/b.md") == ["b.md"]
    assert named("docs/sub", "docs/a.md") == ["sub/b.md", "sub/deeper/c.txt", "a.md"]  # the deepest folder holding both
    assert named("docs", "notes") == ["docs/a.md", "docs/sub/b.md", "docs/sub/deeper/c.txt", "notes/d.md"]
    # read_all names its documents so; the files it skips keep the paths as given
    write_txt(tmp_path / "docs" / "empty.md", "  ")
    docs, skipped = read_all(discover(["docs"]), root=corpus_root(["docs"]))
    assert [d.doc for d in docs] == ["a.md", "sub/b.md", "sub/deeper/c.txt"]
    assert [s.path for s in skipped] == ["docs/empty.md"]


def test_unreadable_files_are_skipped_with_reasons(tmp_path):
    good = write_md(tmp_path / "good.md", "Good", ["A readable paragraph of text."])
    broken = write_broken(tmp_path / "broken")
    docs, skipped = read_all(discover([str(tmp_path)]))
    assert [d.doc for d in docs] == [str(good)]
    reasons = {s.path: s.reason for s in skipped}
    assert set(reasons) == {str(p) for p in broken.values()}
    assert "binary" in reasons[str(broken["binary"])]
    assert "empty" in reasons[str(broken["empty"])]
    assert "not UTF-8" in reasons[str(broken["latin1"])]
    assert "unsupported file type '.png'" in reasons[str(broken["unsupported"])]
    assert reasons[str(broken["broken_pdf"])]  # pypdf's own complaint, whatever its words
    assert all(len(r) <= 200 and "\n" not in r for r in reasons.values())


def test_document_ids_and_digests(tmp_path):
    paths = write_every_format(tmp_path)
    docs, skipped = read_all(sorted(paths.values()))
    assert not skipped
    assert sorted(d.doc for d in docs) == sorted(str(p) for p in paths.values())
    assert len({d.digest for d in docs}) == len(docs)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda tmp: [str(tmp / "missing.md")], "does not exist"),
        (lambda tmp: [str(tmp / "nothing-*.md")], "does not exist"),
        (lambda tmp: (tmp / "empty").mkdir() or [str(tmp / "empty")], "no files found"),
        (lambda tmp: [], "no input documents"),
    ],
)
def test_bad_inputs_are_user_errors(tmp_path, make, words):
    with pytest.raises(UserError, match=words):
        discover(make(tmp_path))


def test_reading_collects_young_objects_less_often_and_restores_the_setting(tmp_path, monkeypatch):
    """Young-object collections every 700 allocations took ~1 ms of a document's 5-7 ms (docs/benchmarks.md)."""
    import gc

    from generate import ingest

    (tmp_path / "a.md").write_text("# A\n\nWords.\n")
    during = []
    monkeypatch.setattr(ingest, "read", lambda path, max_file_mb: during.append(gc.get_threshold()[0]) or "Words.")
    before = gc.get_threshold()
    docs, _ = ingest.read_all([tmp_path / "a.md"])
    assert docs and during == [50_000] and gc.get_threshold() == before
