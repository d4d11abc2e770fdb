"""The knowledge benchmark's corpus generator and exact teacher (bench/), offline and fast."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jsonschema
import openai
import pytest

import schemas
from common.graders import normalize
from common.teacher.dialects import response_format
from generate.tasks import load_task, quotable_sentences

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from exact_teacher import ExactTeacher
from knowledge_corpus import build, grams, jaccard, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kb")
    write_corpus(folder)
    return folder, json.loads((folder / "facts.json").read_text())["facts"]


@pytest.fixture(scope="module")
def teacher(corpus):
    with ExactTeacher(corpus[0]) as server:
        yield server, openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)


def test_deterministic_by_seed():
    assert build(4, 5, 5, seed=3) == build(4, 5, 5, seed=3)
    assert build(4, 5, 5, seed=3)[2] != build(4, 5, 5, seed=4)[2]


def test_taught_facts_are_quoted_from_their_pages(corpus):
    folder, facts = corpus
    pages = {p.name: p.read_text() for p in (folder / "docs").glob("*.md")}
    taught = [f for f in facts if f["taught"]]
    assert len(pages) == 20 and len(taught) == 100
    for fact in taught:
        text = pages[fact["page"]]
        assert text.startswith("# ") and len(text) < 1200  # well under 300 tokens
        assert fact["evidence"] in quotable_sentences(text)  # one whole sentence, 20-400 characters
        assert fact["evidence"].endswith(".") and fact["answer"] in fact["evidence"]
    assert all(sum(f["page"] == page for f in taught) == 5 for page in pages)


def test_answers_and_questions_are_distinct(corpus):
    _, facts = corpus
    qa_pattern = re.compile(load_task("qa").schema["properties"]["items"]["items"]["properties"]["question"]["pattern"])
    assert len({f["answer"] for f in facts}) == len({f["evidence"] for f in facts}) == len(facts) == 120
    everything = [q for f in facts for q in f["questions"]]
    assert len(set(everything)) == len(everything)
    for fact in facts:
        phrasings = fact["questions"]
        assert len({grams(q) for q in phrasings}) >= 4 and all(qa_pattern.match(q) for q in phrasings)
    signed = [grams(q) for q in everything]
    assert max(jaccard(a, b) for i, a in enumerate(signed) for b in signed[i + 1 :]) < 0.7  # below distill gen's near-duplicate threshold


def test_untaught_facts_are_in_no_page_and_valid_records(corpus):
    folder, facts = corpus
    text = f" {normalize(' '.join(p.read_text() for p in (folder / 'docs').glob('*.md')))} "
    untaught = [f for f in facts if not f["taught"]]
    assert len(untaught) == 20 and not any(f" {normalize(f['answer'])} " in text for f in untaught)
    records = [json.loads(line) for line in (folder / "untaught" / "test.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in records] == [f["answer"] for f in untaught]
    assert all(schemas.errors("record", r) == [] for r in records)
    assert schemas.errors("manifest", json.loads((folder / "untaught" / "manifest.json").read_text())) == []


def qa_schema(n: int, k: int, passage: str) -> dict:
    """The built-in qa request schema; with k > 1, `question` becomes `questions` (k phrasings)."""
    schema = load_task("qa").request_schema(n, passage)
    if k > 1:
        item = schema["properties"]["items"]["items"]
        item["properties"]["questions"] = {"type": "array", "minItems": k, "maxItems": k, "items": item["properties"].pop("question")}
        item["required"] = ["questions", "evidence", "reasoning", "answer"]
    return schema


def ask(client, prompt: str, schema: dict | None = None) -> str:
    extra = {"response_format": response_format(schema)} if schema else {}
    reply = client.chat.completions.create(model="exact", messages=[{"role": "user", "content": prompt}], extra_body=extra)
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 0
    return reply.choices[0].message.content


@pytest.mark.parametrize("k", [3, 1])
def test_qa_request(corpus, teacher, k):
    folder, facts = corpus
    server, client = teacher
    page = sorted((folder / "docs").glob("*.md"))[2]
    passage = page.read_text()
    schema = qa_schema(5, k, passage)
    prompt = load_task("qa").messages(passage, 5)[1]["content"]
    output = json.loads(ask(client, prompt, schema))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(output)) == []
    mine = [f for f in facts if f["page"] == page.name]
    assert [i["evidence"] for i in output["items"]] == [f["evidence"] for f in mine]
    assert [i["answer"] for i in output["items"]] == [f["answer"] for f in mine]
    if k > 1:
        assert [i["questions"] for i in output["items"]] == [f["questions"][:3] for f in mine]
    assert server.counts["qa"] >= 1


def test_rewrites_restate_every_fact(corpus, teacher):
    folder, facts = corpus
    _, client = teacher
    page = min((folder / "docs").glob("*.md"))
    mine = [f for f in facts if f["page"] == page.name]
    texts = set()
    for style in ("paraphrase", "notes", "summary", "different words"):
        text = ask(client, f'Rewrite this passage as a {style}.\n\n"""\n{page.read_text()}\n"""')
        assert all(f["answer"] in text for f in mine) and "I don't know" not in text
        texts.add(text)
    assert len(texts) == 3  # three forms; the fourth instruction picks one of them
    notes = ask(client, f'Write question notes on:\n"""\n{page.read_text()}\n"""')
    wrapped = ask(client, f'Rewrite as notes:\n"""\n{page.read_text()}\n"""', {"type": "object", "properties": {"text": {"type": "string"}}})
    assert json.loads(wrapped) == {"text": notes}
    schema = qa_schema(5, 1, notes)  # a rewrite is itself a passage the teacher can write QA from
    output = json.loads(ask(client, f'Write 5 questions.\n"""\n{notes}\n"""', schema))
    assert [i["answer"] for i in output["items"]] == [f["answer"] for f in mine]
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(output)) == []  # evidence: one of the notes' sentences


def test_questions_and_judges(corpus, teacher):
    _, facts = corpus
    _, client = teacher
    fact = facts[7]
    assert ask(client, fact["questions"][3]) == fact["answer"]
    assert ask(client, "  " + fact["questions"][1].upper() + " ") == fact["answer"]
    assert ask(client, f"Read the passage and answer the question.\n\nPassage:\nx\n\nQuestion: {fact['questions'][0]}") == fact["answer"]
    assert ask(client, "Who built the Eiffel tower?") == "I don't know."
    judge = {"type": "object", "properties": {"why": {"type": "string"}, "faithfulness": {"type": "integer", "minimum": 1, "maximum": 5}, "usefulness": {"enum": [1, 2, 3, 4, 5]}}}
    assert json.loads(ask(client, 'Passage:\n"""\nx\n"""\nScore it.', judge))["faithfulness"] == 5
    assert json.loads(ask(client, "Grade it.", {"type": "object", "properties": {"score": {"enum": [1, 2, 3, 4, 5]}}})) == {"score": 5}
    assert json.loads(ask(client, "Which is better?", {"type": "object", "properties": {"better": {"enum": ["1", "2", "tie"]}}})) == {"better": "tie"}
    assert client.models.list().data[0].id == "exact"


def test_facts_first_listing_then_items_of_the_listed_facts(corpus, teacher):
    """The exact teacher answers gen's facts-first requests: the listing names every fact of the
    page; an item request answers only the facts whose evidence its schema offers."""
    from generate.facts import batches, facts_note, listed_facts, listing_messages, listing_schema

    folder, facts = corpus
    server, client = teacher
    page = sorted((folder / "docs").glob("*.md"))[4]
    passage = page.read_text()
    mine = [f for f in facts if f["page"] == page.name]
    schema = listing_schema(passage)
    output = json.loads(ask(client, listing_messages(passage)[1]["content"], schema))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(output)) == []
    listed, ungrounded = listed_facts(output, passage)
    assert [f["evidence"] for f in listed] == [f["evidence"] for f in mine] and ungrounded == []
    task, answered = load_task("qa"), []
    for batch in batches(listed):
        asked = task.request_schema(len(batch), passage, 3, [f["evidence"] for f in batch])
        reply = json.loads(ask(client, task.messages(passage, len(batch), 3, facts_note(batch))[1]["content"], asked))
        assert list(jsonschema.Draft202012Validator(asked).iter_errors(reply)) == []
        answered += reply["items"]
    assert [i["answer"] for i in answered] == [f["answer"] for f in mine]  # 4 + 1: each fact once
    assert server.counts["facts"] >= 1


def test_unseen_wordings_are_templates_gen_never_asks(tmp_path):
    from knowledge_corpus import write_unseen

    facts = write_corpus(tmp_path, pages=3)
    assert write_unseen(tmp_path, 3) == 3 * 5 * 2
    records = [json.loads(line) for line in (tmp_path / "unseen" / "test.jsonl").read_text().splitlines()]
    taught = {q for f in facts for q in f["questions"][:3]}  # what gen asks (3 phrasings: the exact teacher's first three)
    assert not {r["question"] for r in records} & taught
    assert {r["answer"] for r in records} == {f["answer"] for f in facts if f["taught"]}
    assert all(schemas.errors("record", r) == [] for r in records)
    assert schemas.errors("manifest", json.loads((tmp_path / "unseen" / "manifest.json").read_text())) == []
