"""Hostile documents: damaged PDF/DOCX/HTML, other encodings, link loops, huge files. Each is read
(best effort) or skipped with one line naming the file and why; the rest of the corpus is processed;
no traceback. Memory stays proportional to the text (and a file over max_file_mb is never read)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from distill.cli import main
from generate.ingest import discover, read, read_all

from conftest import FACTS, pdf_bytes, write_every_format, write_txt
from reliability import record

GOOD = "The lighthouse of Varnholm was built in 1874 from grey granite."


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def hostile_corpus(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (path, words of the skip reason, or None where the file is read best effort)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "truncated_pdf": ("cut.pdf", pdf_bytes(["The Morrow observatory stands at 2400 metres."])[:300], "damaged PDF"),
        "garbage_pdf": ("garbage.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 40, "damaged PDF"),
        "not_zip_docx": ("old.docx", b"this is not a zip archive at all", "not a zip archive"),
        "garbage_zip_docx": ("zip.docx", zipped({"hello.txt": "x"}), "damaged DOCX"),
        "bad_xml_docx": ("xml.docx", zipped({"[Content_Types].xml": "<garbage"}), "damaged DOCX"),
        "zip_bomb_docx": ("bomb.docx", zipped({"word/document.xml": " " * (20 * 2**20)}), "unpacks to 20 MB"),
        "broken_html": ("broken.html", b"<html><body><p>Unclosed <b>bold <table><tr><td>cell</p></div><script>x = '</script>after <!-- open", None),
        "deep_html": ("deep.html", b"<div>" * 100_000 + b"Deep text survives." + b"</div>" * 100_000, None),
        "latin1": ("latin1.txt", "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e.".encode("latin-1"), "not UTF-8"),
        "utf16": ("utf16.md", "\ufeffUTF-16 text with a byte order mark is read.".encode("utf-16-le"), None),
        "utf16_odd": ("odd16.txt", codecs_bom16() + b"\x00\xd8\x41", "not valid utf-16"),
        "random_bytes": ("random.txt", bytes((i * 7919 + 13) % 256 for i in range(5000)), "binary"),
        "empty": ("empty.md", b"", "empty"),
        "huge": ("huge.txt", b"A sentence of text.\n\n" * (3 * 2**20 // 21 + 1), "over max_file_mb (2 MB)"),
    }
    made = {}
    for name, (filename, data, words) in files.items():
        (folder / filename).write_bytes(data)
        made[name] = (folder / filename, words)
    sub = folder / "sub"
    sub.mkdir()
    write_txt(sub / "good.txt", GOOD + "\n")
    links = {
        "loop_link": ("loop", "..", "links to folders are not followed"),  # sub/loop -> folder: a loop for glob.glob
        "self_link": ("self.md", "self.md", "link loop"),
        "broken_link": ("gone.md", "missing.md", "broken link"),
        "alias_link": ("alias.txt", "good.txt", "same file as"),
    }
    for name, (filename, target, words) in links.items():
        (sub / filename).symlink_to(target)
        made[name] = (sub / filename, words)
    return made


def codecs_bom16() -> bytes:
    import codecs

    return codecs.BOM_UTF16_LE


def hostile_outcomes(corpus: dict, docs: list, skipped: list) -> dict[str, str]:
    """name -> '' where the file was read (best effort) or skipped with one clear line as expected,
    else what went wrong: counted per case before anything is asserted, so a failure lowers the figure."""
    reasons = {s.path: s.reason for s in skipped}
    texts = {d.doc: d.text for d in docs}
    outcomes = {}
    for name, (path, words) in corpus.items():
        reason = reasons.get(str(path), "")
        if words is None:
            outcomes[name] = "" if str(path) in texts else f"not read: {reason}"
        elif words not in reason:
            read = texts.get(str(path), "")[:80]
            outcomes[name] = f"skip reason {reason!r} lacks {words!r}" if reason else f"read, not skipped: {read!r}"
        else:
            clear = len(reason) <= 200 and "\n" not in reason and "Traceback" not in reason
            outcomes[name] = "" if clear else f"not one clear line: {reason!r}"
    return outcomes


@pytest.mark.faults
def test_hostile_files_are_read_or_skipped_with_one_line(tmp_path):
    corpus = hostile_corpus(tmp_path / "docs")
    started = time.perf_counter()
    docs, skipped = read_all(discover([str(tmp_path / "docs")]), max_file_mb=2)
    seconds = time.perf_counter() - started
    outcomes = hostile_outcomes(corpus, docs, skipped)
    fault = "damaged PDF/DOCX/HTML, other encodings, link loops, oversize, empty"
    record("documents", fault, runs=len(corpus), survived=sum(not v for v in outcomes.values()))
    assert {name: why for name, why in outcomes.items() if why} == {}
    texts = {d.doc: d.text for d in docs}
    assert texts[str(tmp_path / "docs" / "sub" / "good.txt")] == GOOD + "\n"  # the rest of the corpus is read, once
    assert sum(1 for d in docs if d.text.startswith(GOOD)) == 1
    assert texts[str(corpus["deep_html"][0])] == "Deep text survives."
    assert "Unclosed bold" in texts[str(corpus["broken_html"][0])] and "x = " not in texts[str(corpus["broken_html"][0])]
    assert texts[str(corpus["utf16"][0])] == "UTF-16 text with a byte order mark is read."
    assert seconds < 30  # deep HTML took 16 min when the tree was edited in place


def test_a_planted_failure_lowers_the_hostile_files_figure(tmp_path, monkeypatch):
    """A reader that wrongly accepts the latin-1 file: the row is still written, one case short."""
    from generate import ingest

    from reliability import LOG_ENV

    corpus = hostile_corpus(tmp_path / "docs")
    real = ingest.read

    def lax(path, *args, **kwargs):
        return "Café crème" if Path(path).name == "latin1.txt" else real(path, *args, **kwargs)

    monkeypatch.setattr(ingest, "read", lax)
    docs, skipped = read_all(discover([str(tmp_path / "docs")]), max_file_mb=2)
    outcomes = hostile_outcomes(corpus, docs, skipped)
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "log.jsonl"))
    record("documents", "planted", runs=len(corpus), survived=sum(not v for v in outcomes.values()))
    row = json.loads((tmp_path / "log.jsonl").read_text())
    assert [name for name, why in outcomes.items() if why] == ["latin1"] and row["survived"] == row["runs"] - 1


def test_globs_do_not_follow_link_loops(tmp_path):
    """glob.glob's ** follows a link to a parent folder ~40 levels deep: every file came back ~40 times."""
    docs = tmp_path / "docs"
    write_txt(docs / "a.md", "a")
    write_txt(docs / "sub" / "b.md", "b")
    (docs / "sub" / "up").symlink_to("..")
    (docs / "sub" / "up2").symlink_to("..")  # two loops: glob.glob's walk grows exponentially
    found = [p.relative_to(docs).as_posix() for p in discover([str(docs / "**" / "*.md")])]
    assert found == ["a.md", "sub/b.md"]
    assert [p.name for p in discover([str(docs)])] == ["a.md", "b.md", "up", "up2"]  # the links are listed, to be reported


@pytest.mark.faults
def test_gen_with_a_hostile_corpus_finishes_and_names_every_skipped_file(tmp_path, shared_tokenizer, capsys):
    corpus = hostile_corpus(tmp_path / "docs")
    write_every_format(tmp_path / "docs" / "good")
    with pytest.raises(SystemExit) as done:
        main(["gen", str(tmp_path / "docs"), "--out", str(tmp_path / "out"), "--dry-run", "--json", "max_file_mb=2"])
    out = capsys.readouterr()
    first = done.value.code
    manifest = json.loads(out.out) if first == 0 else {"skipped_files": [], "counts": {}}
    skipped = {s["path"]: s["reason"] for s in manifest["skipped_files"]}
    expected = {str(path) for path, words in corpus.values() if words is not None}
    with pytest.raises(SystemExit) as done:
        main(["gen", str(tmp_path / "docs"), "--out", str(tmp_path / "out"), "--dry-run", "-q", "max_file_mb=2"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped ")]
    checks = {
        "finished, no traceback": first == 0 and "Traceback" not in out.err,
        "every hostile file named": set(skipped) == expected,
        # every good format, the best-effort reads, sub/good.txt
        "every good file read": manifest["counts"].get("docs") == 5 + 4 and manifest["counts"].get("chunks", 0) >= 9,
        "-q names each, one line each": done.value.code == 0 and len(lines) == len(expected),
    }
    fault = "a corpus of hostile files beside good ones (gen --dry-run)"
    record("documents", fault, runs=1, survived=int(all(checks.values())))
    assert all(checks.values()), (checks, out.err[-2000:])


def test_every_good_format_still_reads(tmp_path):
    for fmt, path in write_every_format(tmp_path).items():
        text = " ".join(read(path).split())
        assert all(fact in text for fact in FACTS[fmt])


PEAK = """
import json, resource, sys
import generate.stage as stage
from generate.config import GenConfig
from transformers import AutoTokenizer
from common.models import resolve_model
tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded"))
stage.load_tokenizer = lambda name: tokenizer
tokenizer("warm up " * 200)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = stage.setup(GenConfig(inputs=[sys.argv[1]], out=sys.argv[2], max_file_mb=float(sys.argv[3])))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grown_mb": grown / 1024, "docs": [d.doc for d in plan.docs], "chunks": len(plan.chunks), "skipped": [s.reason for s in plan.skipped]}))
"""


def big_text(path: Path, megabytes: int) -> Path:
    """A text of real paragraphs, written a block at a time (a sparse file would be skipped as binary)."""
    paragraph = ("The key rotation service reads a token from the vault every hour and writes an audit log. " * 4).strip() + "\n\n"
    block = (paragraph * (2**20 // len(paragraph) + 1))[: 2**20]
    with path.open("w") as f:
        for _ in range(megabytes):
            f.write(block)
    return path


def peak(folder: Path, out: Path, max_file_mb: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PEAK, str(folder), str(out), str(max_file_mb)], capture_output=True, text=True, timeout=1200, env=env)
    if done.returncode != 0:  # counted as a failed case by the caller, then shown
        return {"docs": [], "chunks": 0, "skipped": [], "grown_mb": float("inf"), "error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.faults
def test_a_large_text_takes_memory_in_proportion(tmp_path):
    """8 MB of text through ingest, chunking and prompt building: peak memory grows ~5x the text
    (it grew ~35x, +650 MB for 20 MB, when every token id was held at once)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    big_text(folder / "big.txt", 8)
    seen = peak(folder, tmp_path / "out", 100)
    ok = bool(seen["docs"]) and seen["chunks"] > 1000 and seen["grown_mb"] < 8 * 8  # at most 8x the text
    record("documents", "an 8 MB text file (memory in proportion)", runs=1, survived=int(ok))
    assert ok, seen


@pytest.mark.slow
@pytest.mark.faults
def test_a_1gb_file_is_skipped_without_being_read(tmp_path):
    """A real 1 GB text file beside a small one: skipped by max_file_mb with one line, its bytes never read
    (peak memory does not move); the small file is processed."""
    folder = tmp_path / "docs"
    folder.mkdir()
    big_text(folder / "dump.txt", 1024)
    write_txt(folder / "small.txt", GOOD + "\n")
    seen = peak(folder, tmp_path / "out", 100)
    ok = seen["docs"] == [str(folder / "small.txt")] and seen["chunks"] == 1 and seen["grown_mb"] < 64
    why = "1024 MB, over max_file_mb (100 MB): split the file, or raise max_file_mb (memory grows ~5x the text)"
    ok = ok and seen["skipped"] == [why]
    record("documents", "a 1 GB text file (skipped by max_file_mb, never read)", runs=1, survived=int(ok))
    assert ok, seen


@pytest.mark.slow
@pytest.mark.faults
def test_a_file_raised_past_the_limit_is_processed_in_proportion(tmp_path):
    """200 MB of text with max_file_mb raised: read, chunked, prompts built, peak memory ~5x the text."""
    folder = tmp_path / "docs"
    folder.mkdir()
    big_text(folder / "dump.txt", 200)
    seen = peak(folder, tmp_path / "out", 300)
    ok = bool(seen["docs"]) and seen["chunks"] > 20_000 and seen["grown_mb"] < 200 * 8
    record("documents", "a 200 MB text file (max_file_mb raised)", runs=1, survived=int(ok))
    assert ok, seen
