"""Extractive items (`answers: span`, the embedded teacher's default): answer spans, questions held
to the evidence's words, the request schema's branches, and the checks on every reply."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import xgrammar

from common.teacher.backend_local import for_grammar
from common.teacher.backends import Response
from generate.config import GenConfig
from generate.spans import answer_in_evidence, answer_spans, leaks, question_pattern, subject_of
from generate.stage import run_gen
from generate.tasks import load_task, worst_case_tokens

from conftest import good_response, write_md

pytestmark = pytest.mark.usefixtures("shared_tokenizer")

PAGE = [
    "The Krofamdrer engine burns a fuel called Chemseinsteisk oil.",
    "The first Krofamdrer engine was built in 1767.",
    "The Krofamdrer engine is a steam engine built for grain mills.",
    "Its lamp burned whale oil until the year 1921.",
]


def test_answer_spans_are_names_numbers_and_sentence_ends_never_the_subject():
    assert subject_of(PAGE[0]) == "Krofamdrer"
    assert answer_spans(PAGE[0]) == [
        "Chemseinsteisk",
        "oil",
        "Chemseinsteisk oil",
        "called Chemseinsteisk oil",
        "fuel called Chemseinsteisk oil",
    ]
    assert answer_spans(PAGE[1]) == ["1767", "built in 1767"]
    # nothing across "is" (a clause, not an answer), nothing holding the subject
    assert not any(" is " in f" {span} " or "Krofamdrer" in span for line in PAGE for span in answer_spans(line))
    assert subject_of(PAGE[3]) is None and "1921" in answer_spans(
        PAGE[3]
    )  # a number late in the sentence is no subject
    assert answer_spans("# A heading") == []


def test_answers_must_be_words_of_the_evidence_and_questions_must_not_hold_them():
    assert answer_in_evidence("chemseinsteisk  OIL", PAGE[0])
    assert not answer_in_evidence("diesel", PAGE[0]) and not answer_in_evidence(PAGE[0], PAGE[0])
    assert leaks("Which fuel is Chemseinsteisk oil?", "chemseinsteisk oil") and not leaks(
        "Which fuel?", "Chemseinsteisk oil"
    )


def test_questions_are_made_of_the_sentences_words_name_the_subject_and_a_word_of_its_own():
    pattern = question_pattern(PAGE[0], "Chemseinsteisk oil", PAGE)
    assert re.match(pattern, "What fuel does the Krofamdrer engine burn?")
    assert re.match(pattern, "Name the fuel the Krofamdrer engine burns.")
    assert not re.match(pattern, "What does the Krofamdrer engine do?")  # "fuel", "burns": only this sentence has them
    assert not re.match(pattern, "What fuel does it burn?")  # the subject unnamed
    assert not re.match(pattern, "Which Chemseinsteisk fuel does the Krofamdrer engine burn?")  # the answer's own word
    assert not re.match(pattern, "What colour is the Krofamdrer engine fuel?")  # a word of no sentence


def extractive_schema(k: int = 3) -> dict:
    chunk = "# The Krofamdrer engine\n\n" + " ".join(PAGE)
    return load_task("qa").request_schema(2, chunk, k, spans=True)


def test_the_request_offers_one_branch_per_quote_and_answer_evidence_first():
    schema = extractive_schema()
    branches = schema["properties"]["items"]["items"]["anyOf"]
    offered = [(b["properties"]["evidence"]["enum"], b["properties"]["answer"]["enum"]) for b in branches]
    assert offered == [([quote], [span]) for quote in PAGE for span in answer_spans(quote)]  # the heading has none
    for branch in branches:
        properties = branch["properties"]
        assert (
            list(properties)[:2] == ["evidence", "answer"]
            and properties["reasoning"]["enum"] == properties["evidence"]["enum"]
        )
        assert properties["questions"]["minItems"] == 3 and "pattern" in properties["questions"]["items"]
    assert worst_case_tokens(schema) is not None  # the local teacher's budget stays bounded


def reply(question: str, answer: str, evidence: str = PAGE[0]) -> str:
    """Two items of one question each, in the schema's key order and xgrammar's spacing."""
    item = {"evidence": evidence, "answer": answer, "question": question, "reasoning": evidence}
    return json.dumps({"items": [item, item]})


def test_xgrammar_holds_the_teacher_to_a_branch():
    grammar = xgrammar.Grammar.from_json_schema(json.dumps(for_grammar(extractive_schema(k=1))), any_whitespace=False)
    accepts = lambda text: xgrammar.testing._is_grammar_accept_string(grammar, text)  # noqa: E731
    assert accepts(reply("What fuel does the Krofamdrer engine burn?", "Chemseinsteisk oil"))
    assert not accepts(reply("What fuel does the Krofamdrer engine burn?", "diesel"))
    assert not accepts(reply("What fuel does the Krofamdrer engine burn?", "1767"))  # another sentence's answer
    assert not accepts(
        reply("What does the Krofamdrer engine do?", "Chemseinsteisk oil")
    )  # no word of its own sentence


@pytest.mark.parametrize(
    ("model", "task", "answers", "extractive"),
    [
        ("embedded", "qa", "auto", True),
        ("my-served-70b", "qa", "auto", False),
        ("embedded", "reasoning", "auto", False),
        ("my-served-70b", "qa", "span", True),
        ("embedded", "qa", "free", False),
    ],
)
def test_auto_is_span_for_the_embedded_teacher_on_the_qa_task(model, task, answers, extractive):
    cfg = GenConfig.model_validate({"task": task, "answers": answers, "teacher": {"model": model}})
    assert cfg.extractive is extractive


def test_every_reply_is_checked_whatever_the_teacher_was_sent(tmp_path, teacher_factory):
    """A server that ignores the schema: an answer not in its evidence, or a question holding its
    answer, is rejected with its reason; a good item is kept."""
    write_md(tmp_path / "docs" / "engine.md", "The Krofamdrer engine", [" ".join(PAGE)])

    def script(request):
        if not request.schema["properties"]["items"]["items"].get("anyOf"):
            return good_response(request)  # not span: the test would prove nothing
        items = [
            {
                "question": "What fuel does the Krofamdrer engine burn?",
                "evidence": PAGE[0],
                "reasoning": PAGE[0],
                "answer": "Chemseinsteisk oil",
            },
            {
                "question": "When was the first Krofamdrer engine built?",
                "evidence": PAGE[1],
                "reasoning": PAGE[1],
                "answer": "in the spring",
            },
            {
                "question": "Was the first engine built in 1767?",
                "evidence": PAGE[1],
                "reasoning": PAGE[1],
                "answer": "1767",
            },
        ]
        return Response(request.key, text=json.dumps({"items": items}), prompt_tokens=5, completion_tokens=5)

    teacher_factory(script)
    cfg = GenConfig.model_validate(
        {
            "inputs": [str(tmp_path / "docs")],
            "out": str(tmp_path / "out"),
            "pairs_per_chunk": 3,
            "phrasings": 1,
            "test_fraction": 0,
        }
    )
    manifest = run_gen(cfg, show_progress=False)
    assert manifest["answers"] == "span"
    assert manifest["rejected"] == {"answer_not_in_evidence": 1, "answer_in_question": 1}
    kept = [json.loads(line) for line in Path(cfg.out, "train.jsonl").read_text().splitlines()]
    assert [(r["answer"], r["reasoning"]) for r in kept] == [("Chemseinsteisk oil", PAGE[0])]


def test_the_reasoning_task_keeps_its_own_traces_under_span():
    chunk = " ".join(PAGE)
    schema = load_task("reasoning").request_schema(1, chunk, 1, spans=True)
    branch = schema["properties"]["items"]["items"]["anyOf"][0]["properties"]
    assert "enum" in branch["answer"] and "enum" not in branch["reasoning"]
