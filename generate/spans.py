"""Extractive items (`answers: span`): what a small teacher can write correctly.

A small teacher (the embedded 135M model) answers with words unrelated to the sentence it
quotes and asks questions about anything. Asked to copy, it copies. With `answers: span` each
item of the request schema is one of a few branches per quotable sentence, and in a branch:
- the evidence is the sentence, and is written first;
- the answer is one of its answer spans (below), written second;
- every question is made of the sentence's words (and glue words such as "what", "does", "the"),
  without the answer's own words, and names the sentence's subject where it has one;
- the reasoning is the sentence itself: a small teacher's own reasoning is noise, and a student
  that recalls the sentence before it answers has learned the sentence.
Every teacher's items are checked after the reply (`answer_in_evidence`, `leaks`), so a server
that ignores the schema cannot slip an unrelated answer in.

Names are runs of words with a digit or a capital (past the sentence's first word, which has a
capital anyway, unless it is no function word: "Nargollas reads ..."). The subject is the first
name run if it opens the sentence (within its first SUBJECT_WITHIN words) and is no number. Answer
spans are the other name runs and the sentence's last 1 to SUFFIX_WORDS words (where a plain
statement puts its object: "... built for grain mills"), neither starting with a function word nor
crossing a copula ("is", "was", ...), and never holding the subject.
"""

from __future__ import annotations

import re
from functools import lru_cache

from generate.validate import normalize_space

SUBJECT_WITHIN = 3  # "The first Krofamdrer engine ...": a subject starts within the first three words
SUFFIX_WORDS = 4  # words of the longest answer span taken from the sentence's end
MOST_QUESTION_WORDS = 14
EDGE = re.compile(r"^[^\w/]+|[^\w]+$")
FUNCTION_WORDS = frozenset(
    "a an the of in on at to for from by with and or but as is are was were be been being has have had do does did "
    "it its this that these those which who whom whose what when where why how not no than then there their they "
    "he she his her we our you your i my me us them can could will would shall should may might must also only "
    "every each all some most many any default".split()
)
COPULAS = frozenset("is are was were be been has have had".split())  # a span across one is a clause, not an answer
QUESTION_OPENINGS = (
    "What",
    "Which",
    "Who",
    "When",
    "Where",
    "How many",
    "How much",
    "In which",
    "In what",
    "Name",
    "Give",
)
GLUE = (
    "what which who whom whose when where how many much does do did is are was were has have had the a an of in on at "
    "to for from by with and called named its it their year number name kind type"
).split()

GLUE_SET = frozenset(GLUE)


def words_of(sentence: str) -> list[str]:
    return list(_words(sentence))


@lru_cache(maxsize=65536)  # a chunk's sentences are read again for every answer span and every other sentence
def _words(sentence: str) -> tuple[str, ...]:
    return tuple(EDGE.sub("", word) for word in normalize_space(sentence).split())


@lru_cache(maxsize=65536)
def _folded(sentence: str) -> frozenset[str]:
    return frozenset(w.casefold() for w in _words(sentence))


def is_name(word: str) -> bool:
    """A word with a digit or a capital that is no function word ("The" opening a sentence is not)."""
    if not word or word.casefold() in FUNCTION_WORDS:
        return False
    return word[:1].isupper() or any(c.isdigit() for c in word)


def name_runs(words: list[str]) -> list[tuple[int, int]]:
    """(start, end) of every maximal run of names, in order."""
    runs, start = [], None
    for i, word in enumerate(words + [""]):
        if is_name(word) and start is None:
            start = i
        elif not is_name(word) and start is not None:
            runs.append((start, i))
            start = None
    return runs


def answer_spans(sentence: str) -> list[str]:
    """The answers an extractive item about `sentence` may give (see the module docstring)."""
    if sentence.lstrip().startswith("#"):
        return []  # a heading states no fact
    raw = normalize_space(sentence).split()
    words = words_of(sentence)
    runs = name_runs(words)
    first = subject_run(words, runs)
    subject = set(range(*first)) if first else set()
    found: dict[str, None] = {}
    spans = [run for run in runs if run != first] + [
        (len(words) - size, len(words)) for size in range(1, SUFFIX_WORDS + 1)
    ]
    for start, end in spans:
        piece = words[start:end]
        if start < 1 or subject & set(range(start, end)) or not piece[0] or not piece[-1]:
            continue
        if (
            piece[0].casefold() in FUNCTION_WORDS
            or piece[-1].casefold() in FUNCTION_WORDS
            or COPULAS & {w.casefold() for w in piece}
        ):
            continue
        found.setdefault(EDGE.sub("", " ".join(raw[start:end])))
    return [span for span in found if span]


def subject_run(words: list[str], runs: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The subject's (start, end): the first name run, where it opens the sentence and is no number."""
    if not runs or runs[0][0] >= SUBJECT_WITHIN:
        return None
    start, end = runs[0]
    return None if all(any(c.isdigit() for c in w) for w in words[start:end]) else runs[0]


@lru_cache(maxsize=65536)
def subject_of(sentence: str) -> str | None:
    words = words_of(sentence)
    run = subject_run(words, name_runs(words))
    return " ".join(words[run[0] : run[1]]) if run else None


def question_pattern(sentence: str, answer: str, others: list[str] = ()) -> str:
    """A question made of the words of `sentence` but not of `answer` (and their forms without a
    final s or ed, and glue words), opened by a question word or an order and closed by ? or .,
    that names the sentence's subject where it has one and, where the sentence has words no other
    sentence of `others` has (past its subject and answer: "fuel", "ferry"), one of them: the
    subject alone asks about any sentence of its page."""
    banned = {w.casefold() for w in words_of(answer)}
    words = {w for w in words_of(sentence) if w.casefold() not in banned}
    words |= {stem for word in list(words) for stem in stems(word)}
    words |= {w.casefold() for w in words} | GLUE_SET
    words -= banned
    vocabulary, openings = alternatives(words), OPENINGS
    subject = subject_of(sentence)
    if not subject or subject.casefold() in banned or set(subject.casefold().split()) & banned:
        return f"^{openings}( {vocabulary}){{1,{MOST_QUESTION_WORDS}}}[?.]$"
    third = MOST_QUESTION_WORDS // 3
    filler = f"( {vocabulary}){{0,{third}}}"
    common = _elsewhere(sentence, tuple(others)) | FUNCTION_WORDS | GLUE_SET | set(subject.casefold().split())
    own = {w for w in words if w.casefold() not in common}
    if not own:
        return f"^{openings}{filler} {re.escape(subject)}{filler}[?.]$"
    marked, named = alternatives(own), re.escape(subject)
    return f"^{openings}{filler} ({named}{filler} {marked}|{marked}{filler} {named}){filler}[?.]$"


@lru_cache(maxsize=4096)  # the same for every answer span of a sentence
def _elsewhere(sentence: str, others: tuple[str, ...]) -> frozenset[str]:
    """The words (casefolded) of the other sentences."""
    return frozenset().union(*(_folded(other) for other in others if other != sentence))


def alternatives(words) -> str:
    """A regex group matching any of `words` (longest first; words a JSON string pattern cannot hold left out)."""
    spelled = sorted(filter(None, map(_spelled, words)), key=lambda w: (-len(w), w))
    return "(" + "|".join(spelled) + ")"


@lru_cache(maxsize=65536)
def _spelled(word: str) -> str | None:
    return re.escape(word) if word and '"' not in word and "\\" not in word else None


OPENINGS = alternatives(QUESTION_OPENINGS)


def stems(word: str) -> list[str]:
    """burns -> burn, called -> call: the forms a question puts after "does" or "did"."""
    return [word[: -len(ending)] for ending in ("s", "ed") if word.endswith(ending) and len(word) > len(ending) + 2]


def answer_in_evidence(answer: str, evidence: str) -> bool:
    """The answer is words of its evidence (case and spacing aside), and not all of it."""
    said, quote = (EDGE.sub("", normalize_space(text).casefold()) for text in (answer, evidence))
    return bool(said) and said in quote and said != quote


def leaks(question: str, answer: str) -> bool:
    """The question contains its answer (case and spacing aside)."""
    return normalize_space(answer).casefold() in normalize_space(question).casefold()
