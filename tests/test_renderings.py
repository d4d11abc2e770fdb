"""Schemas each engine digests (issue 27): servers that compile a schema into a GBNF grammar
(llama.cpp's and llama-cpp-python's) are sent the gbnf rendering (no regex patterns, no long
maxLength spans), the reply is still checked against the full schema, the manifest records the
rendering of every server, and a server that died of a schema is not sent it again."""

from __future__ import annotations

import copy
import json
import re

import pytest
from test_dialects import docs_small  # noqa: F401 - fixture
from test_openai_gen import gen, records

import schemas
from common.teacher.backend_openai import OpenAITeacher
from common.teacher.dialects import GBNF_MAX_SPAN, REPEAT, for_gbnf, gbnf_pattern, render, rendering
from generate.tasks import BUILTIN, load_task

from openai_server import FakeOpenAI, Reply, gbnf_fatal, good_json, good_output
from reliability import record
from test_openai_teacher import config, make_request


def builtin_schemas() -> dict[str, dict]:
    """Every schema a built-in task sends: each task, one or three phrasings, evidence free or an
    enum of the quotes of a passage of real text (CPython's language reference)."""
    from pydoc_data.topics import topics

    passage = topics["assignment"][:3000]
    found = {}
    for name in BUILTIN:
        task = load_task(name)
        for k in (1, 3):
            found[f"{name} k={k}"] = task.request_schema(4, None, k)
            found[f"{name} k={k} quotes"] = task.request_schema(4, passage, k)
    return found


def as_json(text: str) -> str:
    """`text` as it stands inside a JSON string (what a converter's pattern matches)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def nodes(schema):
    """Every dict of a schema, the schema included."""
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from nodes(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from nodes(value)


@pytest.mark.parametrize("name", list(builtin_schemas()))
def test_gbnf_rendering_has_no_pattern_and_no_long_span(name):
    full = builtin_schemas()[name]
    before = copy.deepcopy(full)
    small = render(full, "gbnf")
    assert full == before and render(full, "full") is full  # the full schema is never changed
    assert any("pattern" in node for node in nodes(full)) and any(n.get("maxLength", 0) > 100 for n in nodes(full))
    for node in nodes(small):
        pattern = node.get("pattern", "")
        assert "\\s" not in pattern and all(int(b) - int(a) <= GBNF_MAX_SPAN for a, b in REPEAT.findall(pattern))
        assert node.get("maxLength", 0) - node.get("minLength", 0) <= GBNF_MAX_SPAN
        assert node.get("maxItems", 0) - node.get("minItems", 0) <= GBNF_MAX_SPAN
    items = small["properties"]["items"]
    assert items["minItems"] == items["maxItems"] == 4  # the bounds that fit the budget stay
    assert items["items"]["required"] == full["properties"]["items"]["items"]["required"]
    assert items["items"]["additionalProperties"] is False
    if "quotes" in name:  # the quotes, those with " too, in a pattern over their JSON text (\\" for ")
        quotes = full["properties"]["items"]["items"]["properties"]["evidence"]["enum"]
        spelled = re.compile(items["items"]["properties"]["evidence"]["pattern"])
        assert any('"' in q for q in quotes)
        assert all(spelled.match(as_json(q)) for q in quotes if not re.search(r"[\\\]^]", q))
        assert not spelled.match(as_json(quotes[0]) + " and more") and not spelled.match("x")
    assert not gbnf_fatal(small) and gbnf_fatal(full)


def test_gbnf_rendering_keeps_the_question_word_and_the_string_bounds():
    """SmolLM2-135M under the pattern-less rendering wrote questions such as "The del statement" and
    answers of 600 characters (rejected by the full schema after its repair): the grammar now opens
    each question with a question word and bounds the strings as the full schema does."""
    item = render(load_task("qa").request_schema(2), "gbnf")["properties"]["items"]["items"]
    pattern = re.compile(item["properties"]["question"]["pattern"])
    assert pattern.match("What does the del statement delete?") and pattern.match("Name the statement that deletes. ")
    assert not pattern.match("The del statement") and not pattern.match("What is it") and not pattern.match('Why "x"?')
    bounds = {key: item["properties"][key].get("maxLength") for key in ("question", "reasoning", "answer")}
    assert bounds == {"question": 141, "reasoning": 400, "answer": 200}  # unbounded, it wrote 600-character answers
    assert gbnf_pattern(r"^\d+$") is None and gbnf_pattern("^[.]a.{0,4}$") == '^[.]a[^"\\\\]{0,4}$'


def test_gbnf_rendering_walks_schemas_not_data():
    schema = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "pattern": "^a+$", "maxLength": 500},
            "short": {"type": "string", "maxLength": 20},
        },
        "$defs": {"x": {"anyOf": [{"type": "string", "pattern": "^\\w$"}, {"type": "array", "maxItems": 800}]}},
        "enum": [{"pattern": "kept: data, not a schema"}, 'say "hi"', "a\\b"],
    }
    small = for_gbnf(schema)
    assert small["properties"]["pattern"] == {"type": "string", "pattern": "^a+$"}  # a property named "pattern" stays
    assert small["properties"]["short"] == {"type": "string", "maxLength": 20}
    assert small["$defs"]["x"]["anyOf"] == [{"type": "string"}, {"type": "array"}]
    assert small["enum"] == [{"pattern": "kept: data, not a schema"}]
    quoted = for_gbnf({"type": "string", "enum": ['say "hi".', "a\\b"]})
    assert quoted == {"type": "string", "pattern": r'^(say \\"hi\\"[.])$'}
    assert for_gbnf({"type": "string", "enum": ["a\\b", "x]"]}) == {"type": "string"}  # none spelled: no enum
    assert gbnf_pattern("^y[]]$") is None and gbnf_pattern("^y[^]]$") is None  # [] sends the converter into a loop


def test_rendering_per_dialect_and_choice():
    assert rendering("json_schema", False) == "full" and rendering("json_schema", True) == "gbnf"
    assert rendering("json_object+schema", False) == "gbnf"  # only llama.cpp's servers enforce a schema sent this way
    assert rendering("json_object", True) == "none" and rendering("prompt-only", False) == "none"
    assert rendering("json_schema", False, "gbnf") == "gbnf" and rendering("json_object+schema", True, "full") == "full"


# server kind -> (rendering in the manifest, dialect)
SENT = {
    "json_schema": ("full", "json_schema"),
    "llama.cpp": ("gbnf", "json_schema"),
    "llama-cpp-python": ("gbnf", "json_object+schema"),
    "llama.cpp-2024": ("gbnf", "json_object+schema"),
    "json-mode-only": ("none", "json_object"),
}


def sent_schemas(server: FakeOpenAI) -> list[dict]:
    formats = [b.get("response_format") or {} for b in server.bodies]
    found = [f.get("schema") or f.get("json_schema", {}).get("schema") for f in formats]
    return [schema for schema in found if schema]


@pytest.mark.parametrize("server_kind", list(SENT))
def test_manifest_records_the_rendering_each_server_got(server_kind, docs_small, tmp_path):  # noqa: F811
    with FakeOpenAI(dialect=server_kind) as server:
        code, manifest = gen(docs_small, tmp_path / "out", server.url)
    rendered, dialect = SENT[server_kind]
    assert code == 0 and manifest["status"] == "complete" and schemas.errors("manifest", manifest) == []
    assert manifest["teacher"]["structured_output"] == {server.url: dialect}
    assert manifest["teacher"]["schema_rendering"] == {server.url: rendered}
    sent = sent_schemas(server)
    assert bool(sent) == (rendered != "none") and not server.dropped
    assert all(any("\\s" in n.get("pattern", "") for n in nodes(s)) == (rendered == "full") for s in sent)


def test_schema_rendering_can_be_forced(docs_small, tmp_path):  # noqa: F811
    with FakeOpenAI() as server:
        code, manifest = gen(docs_small, tmp_path / "out", server.url, "teacher.schema_rendering=gbnf")
    assert code == 0 and manifest["teacher"]["schema_rendering"] == {server.url: "gbnf"}
    sent = sent_schemas(server)
    assert sent and not any("\\s" in n.get("pattern", "") for s in sent for n in nodes(s))


def test_full_schema_still_checks_replies_of_the_gbnf_rendering(docs_small, tmp_path):  # noqa: F811
    """A reply that breaks the gbnf rendering (a mock server does not enforce it) and the task's
    schema is rejected, then repaired, as under the full schema."""

    def script(call):
        output = good_output(call.body)
        if not call.repair and not call.judge:
            output["items"][0]["question"] = "tell me " + "very " * 40 + "much"  # no question word, no "?", too long
        return Reply(json.dumps(output))

    with FakeOpenAI(script, dialect="llama.cpp") as server:
        code, manifest = gen(docs_small, tmp_path / "out", server.url)
    assert code == 0 and manifest["teacher"]["schema_rendering"] == {server.url: "gbnf"}
    assert manifest["counts"]["repairs"] == manifest["counts"]["chunks"] > 0
    assert all(r["question"].endswith("?") and len(r["question"]) <= 141 for r in records(tmp_path / "out"))


@pytest.mark.faults
def test_gen_gives_records_against_a_grammar_engine_that_dies_of_the_full_schema(docs_small, tmp_path):  # noqa: F811
    """Issue 27: llama-cpp-python's server died of the schema's grammar at the first request; gen
    exited 3 with 0 records. Now it is sent the gbnf rendering and stays up."""
    with FakeOpenAI(dialect="llama-cpp-python") as server:
        code, manifest = gen(docs_small, tmp_path / "out", server.url)
    kept = records(tmp_path / "out") if code == 0 else []
    fault = "a GBNF grammar engine that dies of patterns and long maxLength (llama-cpp-python)"
    record("gen", fault, runs=1, survived=int(code == 0 and bool(kept)), note=f"{server.dropped} connections dropped")
    assert code == 0 and manifest["status"] == "complete" and len(kept) > 0
    assert not server.dead and server.dropped == 0


def test_a_server_killed_by_the_schema_is_never_sent_it_again():
    """A server whose connection drops before its first answer to a schema-constrained request is
    marked down at once: the request is not retried (a restarted server would die again), and the
    reason says what to try."""
    with FakeOpenAI(lambda call: Reply(drop=True)) as server:
        teacher = OpenAITeacher(config(server.url, concurrency=1, max_retries=5))
        try:
            responses = list(teacher.generate([make_request(i) for i in range(3)]))
        finally:
            teacher.close()
    assert sum(server.calls.values()) == 1 and server.dropped == 1
    first, *rest = [r.error for r in responses]
    assert first and all(e.startswith("not sent: ") for e in rest)
    assert f"the teacher at {server.url} stopped answering after the first schema-constrained request" in rest[0]
    assert "it may not support JSON schemas of this size: try --no-structured" in rest[0]


def test_a_server_killed_by_the_schema_is_not_retried_while_another_answers():
    """With a second server carrying the run, a down server is tried again after retry_down_s, but not
    one a schema may have killed: restarted by its user, it would die of the same schema."""
    with FakeOpenAI(lambda call: Reply(drop=True)) as killed, FakeOpenAI(lambda call: Reply(good_json(call))) as good:
        cfg = config(killed.url, concurrency=1, max_retries=0, retry_down_s=0.001)
        teacher = OpenAITeacher(cfg.model_copy(update={"base_url": [killed.url, good.url]}))
        try:
            responses = list(teacher.generate([make_request(i) for i in range(6)]))
        finally:
            teacher.close()
    assert sum(killed.calls.values()) == 1 and all(r.error is None for r in responses)


def test_no_structured_flag_sends_no_schema(docs_small, tmp_path):  # noqa: F811
    with FakeOpenAI(dialect="llama-cpp-python") as server:
        code, manifest = gen(docs_small, tmp_path / "out", server.url, "--no-structured")
    assert code == 0 and manifest["teacher"]["schema_rendering"] == {server.url: "none"}
    assert manifest["teacher"]["structured_output"] == {server.url: "prompt-only"}
    assert all("response_format" not in body for body in server.bodies)
