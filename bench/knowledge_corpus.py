"""Fictional-fact corpora: Markdown pages about invented things, every fact listed with its questions.

    .venv/bin/python bench/knowledge_corpus.py OUT [--pages 20] [--facts-per-page 5] [--untaught 20] [--seed 0]

Writes OUT/docs/*.md (one short page per invented town, engine, protocol, guild or tool),
OUT/facts.json (every fact: id, taught, page, evidence, answer, five question phrasings and
three rewrite sentences) and OUT/untaught/{test.jsonl,manifest.json}: facts drawn the same way
but written into no page, as a `distill eval` data directory (closed-book recall should be ~0).
`write_unseen` adds OUT/unseen: the taught facts asked in the wordings gen never asks (phrasings 4-5).
Deterministic by seed. No two facts share an answer (not even as whole words inside another
answer) or a question, and no two questions reach SIMILARITY
(Jaccard of character 5-grams, the measure `distill gen` deduplicates with).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from knowledge_templates import SUBJECTS

from common.graders import normalize
from generate.dedup import signature
from generate.split import jaccard

SIMILARITY = 0.7  # max 5-gram Jaccard (exact, and gen's MinHash estimate) between any two questions;
# gen drops a question >= near_dup_threshold (0.8) from an earlier one, and a test item that close to a train item
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "st", "sk", "th", "ch"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ei", "ou"]
CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "sk"]
COLOURS = ["silver", "scarlet", "golden", "violet", "copper", "green", "black", "crimson", "pale", "grey", "blue", "white"]
ANIMALS = ["heron", "fox", "stag", "hare", "boar", "raven", "otter", "lynx", "swan", "wolf", "badger", "falcon"]


# ---------------------------------------------------------------- invented names and values


def word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))


def name(rng: random.Random, syllables: tuple[int, int] = (2, 3)) -> str:
    return word(rng, rng.randint(*syllables)).capitalize()


VALUES = {
    "year": lambda rng, s: str(rng.randint(1620, 1960)),
    "modern": lambda rng, s: str(rng.randint(1971, 2024)),
    "n2": lambda rng, s: str(rng.randint(10, 99)),
    "n3": lambda rng, s: str(rng.randint(100, 999)),
    "n4": lambda rng, s: str(rng.randint(1000, 9999)),
    "port": lambda rng, s: str(rng.randint(2000, 59999)),
    "exit": lambda rng, s: str(rng.randint(64, 250)),
    "person": lambda rng, s: f"{name(rng, (1, 2))} {name(rng, (1, 2))}",
    "name": lambda rng, s: name(rng),
    "code": lambda rng, s: f"{rng.choice('BCDFGHKLMNPRSTVZ')}{rng.choice('AEIOU')}-{rng.randint(1000, 9999)}",
    "hex": lambda rng, s: f"0x{rng.randint(0x1000, 0xFFFF):04X}",
    "spec": lambda rng, s: f"docs/{s.lower()}/{word(rng, 2)}.txt",
    "header": lambda rng, s: f"X-{name(rng)}-Sum",
    "street": lambda rng, s: f"{name(rng)} Street",
    "emblem": lambda rng, s: f"{rng.choice(COLOURS)} {rng.choice(ANIMALS)}",
    "config": lambda rng, s: f"/etc/{s.lower()}/{word(rng, 2)}.toml",
    "env": lambda rng, s: f"{s.upper()}_{word(rng, 2).upper()}_TOKEN",
    "log": lambda rng, s: f"/var/log/{s.lower()}/{word(rng, 2)}.log",
}


# ---------------------------------------------------------------- similarity (as distill gen measures it)


def grams(question: str) -> frozenset[str]:
    """Character 5-grams of the question's normalized form (case, punctuation, spacing ignored)."""
    text = " ".join(re.sub(r"[^\w\s]", " ", question.casefold()).split())
    return frozenset(text[i : i + 5] for i in range(max(1, len(text) - 4)))


def estimates(mine: list[str], others: np.ndarray) -> np.ndarray:
    """MinHash Jaccard estimates of each question in `mine` against signature rows `others`:
    what `distill gen` compares with near_dup_threshold (deterministic signatures)."""
    rows = np.stack([signature(q).hashvalues for q in mine])
    return (rows[:, None, :] == others[None, :, :]).mean(axis=2)


def clashes(answer: str, answers: list[str]) -> bool:
    """True when the answer equals another, or either holds the other as whole words (the contains grader)."""
    mine = f" {normalize(answer)} "
    return any(mine in f" {normalize(other)} " or f" {normalize(other)} " in mine for other in answers)


# ---------------------------------------------------------------- the corpus


class Corpus:
    """Draws pages one by one, keeping the invariants over everything drawn so far."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.names: set[str] = set()
        self.answers: list[str] = []
        self.grams: list[frozenset] = []  # every question drawn so far
        self.sigs = np.zeros((0, 128), dtype=np.uint32)  # and its MinHash signature
        self.facts: list[dict] = []

    def fresh_name(self, syllables: tuple[int, int]) -> str:
        while True:
            candidate = name(self.rng, syllables)
            fits = syllables[0] < 3 or 8 <= len(candidate) <= 12  # a subject: long enough to set its questions apart
            if fits and candidate not in self.names and not clashes(candidate, self.answers):
                self.names.add(candidate)
                return candidate

    def page(self, number: int, subject_type, count: int, taught: bool) -> tuple[str, str, list[dict]]:
        """(file name, Markdown text, facts) of one page about a new subject of `subject_type`."""
        if count > len(subject_type.kinds):
            raise ValueError(f"facts_per_page={count} but a page has at most {len(subject_type.kinds)} kinds of fact; lower it")
        kinds = self.rng.sample(subject_type.kinds, count)
        for _ in range(200):
            subject = self.fresh_name((3, 4))
            questions = [[q.format(S=subject) for q in kind.questions] for kind in kinds]
            if self.distinct(questions):
                break
        else:
            raise RuntimeError("could not draw a subject whose questions differ enough from the others; lower the page count")
        title = subject_type.title.format(S=subject)
        file = f"{number:03d}-{subject.lower()}.md"
        facts = []
        for kind, phrasings in zip(kinds, questions):
            answer = self.fresh_answer(kind, subject, phrasings)
            fill = {"S": subject, "A": answer}
            facts.append({
                "id": f"{'f' if taught else 'u'}{len(self.facts) + len(facts):03d}",
                "taught": taught,
                "page": file if taught else None,
                "title": title,
                "subject": subject,
                "kind": kind.name,
                "evidence": kind.evidence.format(**fill),
                "answer": answer,
                "questions": phrasings,
                "rewrites": {
                    "paraphrase": kind.paraphrase.format(**fill),
                    "notes": f"Q: {phrasings[-1].rstrip('?')} — A: {answer}.",
                    "summary": f"{kind.label.format(S=subject)}: {answer}.",
                },
            })
        intro = self.rng.choice(subject_type.intros).format(S=subject)
        text = f"# {title}\n\n{intro} " + " ".join(f["evidence"] for f in facts) + "\n"
        self.facts.extend(facts)
        flat = [q for phrasings in questions for q in phrasings]
        self.grams.extend(grams(q) for q in flat)
        self.sigs = np.concatenate([self.sigs, np.stack([signature(q).hashvalues for q in flat])])
        return file, text, facts

    def distinct(self, questions: list[list[str]]) -> bool:
        """True when every new question stays below SIMILARITY to every other question."""
        flat = [q for phrasings in questions for q in phrasings]
        mine = [grams(q) for q in flat]
        if any(jaccard(a, b) >= SIMILARITY for i, a in enumerate(mine) for b in mine[i + 1 :] + self.grams):
            return False
        new = estimates(flat, np.stack([signature(q).hashvalues for q in flat]))
        np.fill_diagonal(new, 0)
        return new.max() < SIMILARITY and (not len(self.sigs) or estimates(flat, self.sigs).max() < SIMILARITY)

    def fresh_answer(self, kind, subject: str, questions: list[str]) -> str:
        for _ in range(1000):
            answer = VALUES[kind.value](self.rng, subject)
            leaks = any(f" {normalize(answer)} " in f" {normalize(q)} " for q in questions)
            if not leaks and answer not in self.names and not clashes(answer, self.answers):
                self.answers.append(answer)
                if kind.value in ("name", "person", "street", "header"):
                    self.names.update(answer.replace("-", " ").split())
                return answer
        raise RuntimeError(f"ran out of distinct answers for '{kind.name}'; lower the page count")


def build(pages: int = 20, facts_per_page: int = 5, untaught: int = 20, seed: int = 0) -> tuple[dict[str, str], dict[str, str], list[dict]]:
    """(page file -> Markdown, untaught virtual page -> Markdown, facts) without writing anything."""
    corpus, written, hidden = Corpus(seed), {}, {}
    hidden_pages = -(-untaught // facts_per_page)  # ceil
    order = [SUBJECTS[i % len(SUBJECTS)] for i in range(pages + hidden_pages)]
    corpus.rng.shuffle(order)
    for number in range(pages):
        file, text, _ = corpus.page(number + 1, order[number], facts_per_page, taught=True)
        written[file] = text
    number = pages
    while sum(not f["taught"] for f in corpus.facts) < untaught:
        left = untaught - sum(not f["taught"] for f in corpus.facts)
        number += 1
        file, text, facts = corpus.page(number, order[number - 1], min(facts_per_page, left), taught=False)
        hidden[file] = text
        for fact in facts:
            fact["virtual_page"] = file
    return written, hidden, corpus.facts


def untaught_record(fact: dict, context: str) -> dict:
    """A test record of `distill eval` (schemas/record.schema.json) for a fact no page states."""
    question, answer, doc = fact["questions"][0], fact["answer"], f"untaught/{fact['virtual_page']}"
    reasoning = f"The documents state: {fact['evidence']}"
    start = context.index(fact["evidence"])
    return {
        "id": hashlib.sha256("\x1f".join([question, answer, doc, "0"]).encode()).hexdigest()[:16],
        "question": question,
        "reasoning": reasoning,
        "answer": answer,
        "evidence": fact["evidence"],
        "context": context,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"}],
        "source": {"doc": doc, "chunk": 0, "start": start, "end": start + len(fact["evidence"])},
        "teacher": {"backend": "exact", "model": "exact"},
        "split": "test",
    }


def write_records(folder: Path, records: list[dict], config: dict) -> None:
    """`folder` as a `distill eval` data directory: test.jsonl and a manifest (split by item)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    manifest = {
        "status": "complete", "split_by": "item", "counts": {"train": 0, "test": len(records)}, "rejected": {},
        "skipped_files": [], "tokens": {}, "wall_time_s": 0, "teacher": {"backend": "exact", "model": "exact"},
        "config": config, "schemas": {}, "versions": {},
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def write_unseen(folder, phrasings: int = 3) -> int:
    """`folder`/unseen: every taught fact asked in the wordings gen never uses (its questions after the
    first `phrasings`: question templates no subject's data holds); returns the record count."""
    folder = Path(folder)
    facts = json.loads((folder / "facts.json").read_text())["facts"]
    records = []
    for fact in (f for f in facts if f["taught"]):
        page = (folder / "docs" / fact["page"]).read_text()
        for question in fact["questions"][phrasings:]:
            record = untaught_record({**fact, "questions": [question], "virtual_page": fact["page"]}, page)
            records.append({**record, "source": {**record["source"], "doc": fact["page"]}})
    write_records(folder / "unseen", records, {"unseen_after": phrasings})
    return len(records)


def write_corpus(folder, pages: int = 20, facts_per_page: int = 5, untaught: int = 20, seed: int = 0) -> list[dict]:
    """Write docs/, facts.json and untaught/ under `folder`; returns the facts."""
    folder = Path(folder)
    written, hidden, facts = build(pages, facts_per_page, untaught, seed)
    (folder / "docs").mkdir(parents=True, exist_ok=True)
    for file, text in written.items():
        (folder / "docs" / file).write_text(text)
    titles = [{"file": file, "title": text.splitlines()[0][2:]} for file, text in written.items()]
    meta = {"seed": seed, "pages": titles, "facts_per_page": facts_per_page, "facts": facts}
    (folder / "facts.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    records = [untaught_record(f, hidden[f["virtual_page"]]) for f in facts if not f["taught"]]
    write_records(folder / "untaught", records, {"seed": seed, "pages": pages, "facts_per_page": facts_per_page, "untaught": untaught})
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--facts-per-page", type=int, default=5)
    parser.add_argument("--untaught", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        facts = write_corpus(args.out, args.pages, args.facts_per_page, args.untaught, args.seed)
    except (ValueError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    taught = sum(f["taught"] for f in facts)
    print(f"{args.out}: {args.pages} pages, {taught} taught facts, {len(facts) - taught} untaught")


if __name__ == "__main__":
    main()
