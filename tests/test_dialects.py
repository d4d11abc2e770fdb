"""Structured-output dialects: each loopback server answers response_format as a real server does
(tests/openai_server.py: DIALECTS), and the openai teacher ends on the dialect it takes, without
retrying a refusal, remembering it per endpoint, and reporting it in the gen manifest."""

from __future__ import annotations

import pytest
from test_openai_gen import gen, records

import schemas
from common.teacher.backend_openai import OpenAITeacher
from common.teacher.dialects import cut_short, refuses, response_format
from common.teacher.endpoint import public_url

from openai_server import FakeOpenAI
from reliability import record
from test_openai_teacher import PASSAGES, config, make_request

# server -> (dialect it ends on, response_format types refused on the way)
ENDS_ON = {
    "json_schema": ("json_schema", []),
    "lm-studio": ("json_schema", []),
    "llama.cpp-2024": ("json_object+schema", ["json_schema"]),
    "vllm-2024": ("json_object+schema", ["json_schema"]),
    "json-mode-only": ("json_object", ["json_schema", "json_object"]),
    "tgi": ("prompt-only", ["json_schema", "json_object", "json_object"]),
}


def sent_format(body: dict) -> str:
    fmt = body.get("response_format")
    if fmt is None:
        return "prompt-only"
    return "json_object+schema" if fmt["type"] == "json_object" and "schema" in fmt else fmt["type"]


@pytest.mark.parametrize("server_kind", list(ENDS_ON))
def test_each_server_ends_on_the_dialect_it_takes(server_kind):
    dialect, refused = ENDS_ON[server_kind]
    with FakeOpenAI(dialect=server_kind) as server:
        teacher = OpenAITeacher(config(server.url, concurrency=1, max_retries=3, backoff_s=0.5))
        try:
            responses = list(teacher.generate([make_request(i) for i in range(len(PASSAGES))]))
            assert teacher.structured_output == {server.url: dialect}
        finally:
            teacher.close()
    assert [r.error for r in responses] == [None] * len(PASSAGES)
    assert [f["type"] for f in server.refused] == refused  # each refusal once, never retried (a retry would repeat it)
    assert {sent_format(b) for b in server.bodies} == {dialect}  # remembered for the run
    assert sum(server.calls.values()) == len(PASSAGES)


def test_concurrent_refusals_step_the_chain_once_each():
    with FakeOpenAI(dialect="tgi") as server:
        teacher = OpenAITeacher(config(server.url, concurrency=8))
        try:
            responses = list(teacher.generate([make_request(i) for i in range(len(PASSAGES))]))
            assert set(teacher.structured_output.values()) == {"prompt-only"}
        finally:
            teacher.close()
    assert all(r.error is None for r in responses)
    types = [f["type"] for f in server.refused]
    assert types.count("json_schema") <= 8 and len(types) <= 3 * 8  # the requests in flight when a refusal came
    assert {sent_format(b) for b in server.bodies} == {"prompt-only"}


def test_each_endpoint_keeps_its_own_dialect():
    with FakeOpenAI(dialect="llama.cpp-2024") as old, FakeOpenAI() as new:
        teacher = OpenAITeacher(config(old.url, base_url=[old.url, new.url], concurrency=2))
        try:
            responses = list(teacher.generate([make_request(i) for i in range(len(PASSAGES))]))
            assert teacher.structured_output == {old.url: "json_object+schema", new.url: "json_schema"}
        finally:
            teacher.close()
    assert all(r.error is None for r in responses)
    assert {sent_format(b) for b in old.bodies} == {"json_object+schema"} and {sent_format(b) for b in new.bodies} == {"json_schema"}


def test_structured_false_starts_prompt_only():
    with FakeOpenAI(dialect="tgi") as server:
        teacher = OpenAITeacher(config(server.url, structured=False))
        try:
            assert [r.error for r in teacher.generate([make_request(0)])] == [None]
            assert teacher.structured_output == {server.url: "prompt-only"}
        finally:
            teacher.close()
    assert not server.refused and "response_format" not in server.bodies[0]


@pytest.mark.faults
@pytest.mark.parametrize("server_kind", ["llama.cpp-2024", "vllm-2024", "json-mode-only", "tgi"])
def test_gen_completes_against_a_server_that_refuses_response_format(server_kind, docs_small, tmp_path, shared_tokenizer):
    """The issue's case (llama.cpp-2024): HTTP 500 naming response_format was retried for ~70 s, nothing was
    accepted, and gen exited 0. Now every refusing server gives the data a well-behaved one gives."""
    with FakeOpenAI() as reference:
        gen(docs_small, tmp_path / "ref", reference.url)
    with FakeOpenAI(dialect=server_kind) as server:
        code, manifest = gen(docs_small, tmp_path / "out", server.url, "teacher.backoff_s=1", "teacher.max_retries=6")
    got, expected = sorted(r["id"] for r in records(tmp_path / "out")), sorted(r["id"] for r in records(tmp_path / "ref"))
    twice = sum(n - 1 for n in server.answered.values() if n > 1)
    record("gen", f"response_format refused ({server_kind} server)", runs=1, survived=int(code == 0 and got == expected), items_lost=len(set(expected) - set(got)), sent_twice=twice)
    assert code == 0 and manifest["status"] == "complete" and schemas.errors("manifest", manifest) == []
    assert manifest["teacher"]["structured_output"] == {server.url: ENDS_ON[server_kind][0]}
    assert got == expected and twice == 0
    steps = len(ENDS_ON[server_kind][1])  # each request in flight sees each refusal at most once: never retried
    assert steps <= len(server.refused) <= steps * manifest["counts"]["chunks"]


def test_refusal_is_recognised_by_what_the_server_says():
    import httpx2
    import openai

    def error(status: int, body) -> openai.APIStatusError:
        response = httpx2.Response(status, json=body, request=httpx2.Request("POST", "http://x/v1/chat/completions"))
        return openai.APIStatusError(f"Error code: {status} - {body}", response=response, body=body)

    assert refuses(error(500, {"message": 'response_format type must be one of "text" or "json_object", but got: json_schema'}))
    assert refuses(error(422, "Failed to deserialize the JSON body into the target type: response_format: missing field `value`"))
    assert refuses(error(400, "'response_format.type' must be 'json_schema' or 'text'"))
    assert not refuses(error(500, {"message": "CUDA out of memory"}))
    assert not refuses(error(503, {"message": "response_format busy"}))  # 503 is a transient fault whatever it says
    assert not refuses(error(400, {"message": "This model's maximum context length is 4096 tokens"}))


def test_cut_short_and_formats():
    assert cut_short('{"items": [{"question": "Whi') and cut_short('{"a": "x\\"') and cut_short("[1, 2")
    assert not cut_short('{"a": "}"}') and not cut_short("Sorry, I cannot.") and not cut_short('{"a": 1} trailing')
    schema = {"$schema": "x", "type": "object"}
    assert response_format(schema) == {"type": "json_schema", "json_schema": {"name": "items", "schema": {"type": "object"}, "strict": False}}
    assert response_format(schema, "json_object+schema") == {"type": "json_object", "schema": {"type": "object"}}
    assert response_format(schema, "json_object") == {"type": "json_object"} and response_format(schema, "prompt-only") is None


def test_public_url_drops_credentials_and_query():
    assert public_url("https://user:sk-secret@host.example:8443/v1?api-key=sk-secret") == "https://host.example:8443/v1"
    assert public_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"


@pytest.fixture
def docs_small(tmp_path):
    from openai_server import make_docs

    make_docs(tmp_path / "docs", docs=2, paragraphs=2)
    return tmp_path / "docs"

