"""Facts first (`pairs_per_chunk: auto`): listings, the item requests they make, coverage, near-twins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.teacher.backends import Response
from distill.cli import main
from generate.config import GenConfig
from generate.facts import FACTS_PER_REQUEST, factual_sentences, listing_schema
from generate.stage import run_gen
from generate.tasks import load_task, worst_case_tokens

from conftest import good_response, is_listing, write_md

pytestmark = pytest.mark.usefixtures("shared_tokenizer")

# one page that states six facts (more than one item request holds) under a heading
SIX = [
    "The Brannock canal was dug between 1791 and 1796.",
    "It runs for 34 kilometres from Holt to the port of Leaming.",
    "Forty-one locks lift the boats over the Brannock ridge.",
    "The canal company was founded by the engineer Mara Quill.",
    "Coal barges paid a toll of three pence a mile.",
    "Since 1961 the canal has carried only pleasure boats.",
]


def canal(folder: Path) -> Path:
    return write_md(folder / "canal.md", "The Brannock canal", [" ".join(SIX[:3]), " ".join(SIX[3:])])


def gen(tmp_path: Path, **changes) -> dict:
    fields = {"inputs": [str(tmp_path / "docs")], "out": str(tmp_path / "out"), "chunk_tokens": 256}
    cfg = GenConfig.model_validate({**fields, **changes})
    return run_gen(cfg, show_progress=False)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_auto_lists_the_facts_then_asks_every_one_in_as_many_requests_as_needed(tmp_path, teacher_factory):
    canal(tmp_path / "docs")
    teacher = teacher_factory()
    manifest = gen(tmp_path, answers="free")  # the teacher lists (span answers list the sentences: below)
    assert GenConfig().pairs_per_chunk == "auto" and manifest["config"]["pairs_per_chunk"] == "auto"
    listings = [r for r in teacher.sent if is_listing(r)]
    asked = [r for r in teacher.sent if not is_listing(r)]
    assert len(listings) == 1 and "List every fact" in listings[0].messages[1]["content"]
    assert len(asked) == -(-len(SIX) // FACTS_PER_REQUEST) == 2  # six facts: two item requests (4 + 2)
    assert [r.schema["properties"]["items"]["minItems"] for r in asked] == [4, 2]
    assert SIX[4] in asked[1].messages[1]["content"].split("already chosen")[1]  # each request names its facts
    records = rows(tmp_path / "out" / "train.jsonl") + rows(tmp_path / "out" / "test.jsonl")
    assert {r["evidence"] for r in records} == set(SIX)  # every fact of the page is taught
    assert len(records) == len(SIX) * 3  # in the three phrasings of the knowledge default
    coverage = manifest["coverage"]
    assert coverage["facts_listed"] == coverage["facts_taught"] == len(SIX) and coverage["items_asked"] == 3 * len(SIX)
    assert coverage["factual_sentences"] == coverage["sentences_covered"] == len(SIX)
    assert coverage["sentence_coverage"] == 1.0
    assert manifest["counts"]["fact_requests"] == 1 and manifest["counts"]["requests"] == 3
    again = teacher_factory()
    assert gen(tmp_path, answers="free")["counts"]["sent"] == 0 and again.sent == []  # listings and items, cached


def test_span_answers_take_the_sentences_as_facts_and_hold_each_item_to_its_own(tmp_path, teacher_factory):
    """answers: span (the embedded teacher's default): no listing request (the 135M teacher listed 41 facts for
    115 sentences); every sentence with an answer span is a fact, asked 4 a request, item i held to sentence i."""
    canal(tmp_path / "docs")
    teacher = teacher_factory()
    manifest = gen(tmp_path)
    assert manifest["answers"] == "span" and not any(is_listing(r) for r in teacher.sent)
    assert [r.schema["properties"]["items"]["minItems"] for r in teacher.sent] == [4, 2]
    held = [item["anyOf"] for r in teacher.sent for item in r.schema["properties"]["items"]["prefixItems"]]
    assert [{b["properties"]["evidence"]["enum"][0] for b in branches} for branches in held] == [{s} for s in SIX]
    records = rows(tmp_path / "out" / "train.jsonl") + rows(tmp_path / "out" / "test.jsonl")
    assert {r["evidence"] for r in records} == set(SIX) and len(records) == len(SIX) * 3
    coverage = manifest["coverage"]
    assert coverage["facts_listed"] == coverage["facts_taught"] == len(SIX) and coverage["sentence_coverage"] == 1.0
    assert manifest["counts"]["fact_requests"] == 0 and manifest["counts"]["requests"] == 2


def test_a_chunk_that_states_nothing_gets_no_listing_request(tmp_path, teacher_factory):
    """A heading alone has no fact to list: no request is sent for it (its listing could only be empty,
    which the listing schema refuses, so it would be asked again as a repair)."""
    canal(tmp_path / "docs")
    (tmp_path / "docs" / "heading.md").write_text("# Appendix\n")
    teacher = teacher_factory()
    manifest = gen(tmp_path, answers="free")
    listings = [r for r in teacher.sent if is_listing(r)]
    assert len(listings) == 1 and "Brannock" in listings[0].messages[1]["content"]
    assert manifest["counts"]["chunks"] == 2 and manifest["counts"]["fact_requests"] == 1


def test_a_fixed_number_stays_available(tmp_path, teacher_factory):
    canal(tmp_path / "docs")
    teacher = teacher_factory()
    manifest = gen(tmp_path, pairs_per_chunk=2)
    assert len(teacher.sent) == 1 and not is_listing(teacher.sent[0])
    # two items: the scripted teacher quotes the first two sentences offered (answers: span, the embedded
    # teacher's default, offers no heading: it has no answer span), so two facts
    assert manifest["coverage"]["sentences_covered"] == 2 and "facts_listed" not in manifest["coverage"]
    assert GenConfig(split_by="document").facts_per_request == 2 and not GenConfig(split_by="document").facts_first


def test_coverage_names_the_sentences_no_item_quotes_and_the_summary_prints_it(
    tmp_path, teacher_factory, capsys, monkeypatch
):
    canal(tmp_path / "docs")

    def lists_two(request):
        if is_listing(request):
            facts = [{"evidence": SIX[0], "fact": "The canal was dug in "
                                                  "1791-1796."}, {"evidence": "The moon is made of cheese and "
                                                                              "rock.", "fact": "x" * 9}]
            return Response(request.key, text=json.dumps({"facts": facts}), prompt_tokens=5, completion_tokens=5)
        return good_response(request)

    teacher_factory(lists_two)
    monkeypatch.setenv("COLUMNS", "500")
    with pytest.raises(SystemExit) as exit_:
        main(["gen", str(tmp_path / "docs"), "--out", str(tmp_path / "out"), "chunk_tokens=256", "answers=free"])
    code, stdout = exit_.value.code, capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    coverage = manifest["coverage"]
    assert code == 0 and coverage["facts_listed"] == 1 and manifest["rejected"] == {"ungrounded_fact": 1}
    assert coverage["sentences_covered"] == 1 and coverage["factual_sentences"] == len(SIX)
    assert [u["sentence"] for u in coverage["uncovered_sentences"]] == sorted(SIX[1:])
    assert f"coverage: 1 of {len(SIX)} factual sentences (17%)" in stdout and "facts listed 1, taught 1" in stdout


def test_factual_sentences_leave_out_headings_and_fragments():
    text = "# A heading of many words\n\nShort line. See it.\n\nThe canal was dug in 1791. It is long and wide indeed!"
    assert factual_sentences(text) == ["The canal was dug in 1791.", "It is long and wide indeed!"]
    four = "Steiskrostel has 3133 inhabitants."
    assert factual_sentences(four) == [four]


def test_the_listing_is_bounded_for_the_local_teacher():
    chunk = " ".join(SIX)
    schema = listing_schema(chunk)
    assert schema["properties"]["facts"]["items"]["properties"]["evidence"]["enum"] == SIX
    assert schema["properties"]["facts"]["maxItems"] == 12  # two facts a sentence at most
    assert worst_case_tokens(schema) is not None and worst_case_tokens(listing_schema()) is not None


def test_near_twin_phrasings_are_dropped_before_the_split_and_counted(tmp_path, teacher_factory):
    canal(tmp_path / "docs")

    def twins(request):
        if is_listing(request):
            return good_response(request)
        output = json.loads(good_response(request).text)
        for item in output["items"]:
            first = item["questions"][0].rstrip("?")
            item["questions"] = [first + " level?", first + " levels?", "Name the answer stated by: "
                                                                        f"{item['evidence']}"]
        return Response(request.key, text=json.dumps(output), prompt_tokens=5, completion_tokens=5)

    teacher_factory(twins)
    manifest = gen(tmp_path, test_fraction=0.5, answers="free")  # the imperative quotes its evidence, answer and all
    records = rows(tmp_path / "out" / "train.jsonl") + rows(tmp_path / "out" / "test.jsonl")
    assert manifest["counts"]["near_twins_dropped"] == len(SIX) and manifest["rejected"]["near_twin"] == len(SIX)
    assert not any(r["question"].endswith(" levels?") for r in records)
    assert len(records) == 2 * len(SIX)  # each fact: "... level?" and the imperative survive
    assert any(r["question"].startswith("Name the") for r in records)


def test_prompts_ask_for_phrasings_that_differ_in_form():
    task = load_task("qa")
    prompt = task.messages("The canal was dug in 1791.", 2, 3)[1]["content"]
    assert "Name the" in prompt and "voice" in prompt and "question word" in prompt
    item = task.validator_for(3).schema["properties"]["items"]["items"]
    pattern = item["properties"]["questions"]["items"]["pattern"]
    import re

    assert re.match(pattern, "Name the engineer who founded the Brannock canal company.")
    assert not re.match(pattern, "the engineer who founded it")
