"""The openai teacher against a real HTTP server on loopback: protocol, reasoning, faults, fail-fast."""

from __future__ import annotations

import json
import socket
import time

import pytest

from common.errors import UserError
from common.teacher.backend_openai import OpenAITeacher
from common.teacher.backends import Request, split_reasoning
from common.teacher.config import TeacherConfig
from generate.tasks import load_task
from generate.validate import parse_output

from openai_server import FakeOpenAI, Reply, first_user, good_json

TASK = load_task("qa")
PASSAGES = [f"Item {i} of the list: the river Vexo flows north past the town of Brel number {i}. The mills there grind rye." for i in range(8)]


def make_request(i: int = 0, n: int = 2) -> Request:
    passage = PASSAGES[i]
    return Request(f"key{i}", TASK.messages(passage, n), TASK.request_schema(n, passage), 256)


def config(url: str, **kw) -> TeacherConfig:
    base = {"backend": "openai", "model": "teacher", "base_url": [url], "backoff_s": 0.001, "backoff_max_s": 0.005, "timeout_s": 5, "max_retries": 3, "concurrency": 4}
    return TeacherConfig(**{**base, **kw})


def ask(script, requests: list[Request], **kw):
    with FakeOpenAI(script) as server:
        teacher = OpenAITeacher(config(server.url, **kw))
        try:
            responses = {r.key: r for r in teacher.generate(requests)}
        finally:
            teacher.close()
    return responses, server


def test_plain_json_with_schema_and_parameters():
    responses, server = ask(lambda call: Reply(good_json(call)), [make_request(0), make_request(1)], seed=7, temperature=0.3)
    assert set(responses) == {"key0", "key1"}
    for response in responses.values():
        output, reason, _ = parse_output(response, TASK.validator)
        assert output is not None, reason
        assert response.error is None and response.reasoning is None
        assert response.prompt_tokens == 10 and response.completion_tokens > 0
    body = server.bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    sent_schema = body["response_format"]["json_schema"]["schema"]
    assert sent_schema["properties"]["items"]["minItems"] == 2
    assert body["seed"] == 7 and body["temperature"] == 0.3 and body["max_tokens"] == 256


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_field_is_captured(field):
    script = lambda call: Reply(good_json(call), **{field: "Step 1: read. Step 2: answer."})  # noqa: E731
    responses, _ = ask(script, [make_request()])
    assert responses["key0"].reasoning == "Step 1: read. Step 2: answer."
    assert json.loads(responses["key0"].text)["items"]


@pytest.mark.parametrize("template", ["<think>\nI think.\n</think>\n\n{json}", "I think.\n</think>\n{json}"])
def test_inline_and_bare_think_are_split(template):
    script = lambda call: Reply(template.replace("{json}", good_json(call)))  # noqa: E731
    responses, _ = ask(script, [make_request()])
    assert responses["key0"].reasoning == "I think."
    assert parse_output(responses["key0"], TASK.validator)[0] is not None


def test_split_reasoning_cases():
    assert split_reasoning('{"a": 1}') == ('{"a": 1}', None)
    assert split_reasoning("<think>x</think>{}") == ("{}", "x")
    assert split_reasoning("x</think>{}", None) == ("{}", "x")
    assert split_reasoning("<think>cut off while thinking") == ("", "cut off while thinking")
    assert split_reasoning("<think>inline</think>{}", "field") == ("{}", "field")
    assert split_reasoning(None, "field") == ("", "field")


def test_429_waits_for_retry_after():
    def script(call):
        return Reply(status=429, headers={"Retry-After": "1"}) if call.attempt == 1 else Reply(good_json(call))

    responses, server = ask(script, [make_request()])
    assert responses["key0"].error is None
    assert sum(server.calls.values()) == 2
    assert server.times[1] - server.times[0] >= 0.95  # the server's 1 s, not the 1 ms backoff


def test_500_is_retried_then_succeeds():
    script = lambda call: Reply(status=500) if call.attempt <= 2 else Reply(good_json(call))  # noqa: E731
    responses, server = ask(script, [make_request()])
    assert responses["key0"].error is None and sum(server.calls.values()) == 3


def test_request_that_keeps_failing_becomes_an_error_response():
    doomed = lambda call: "Brel number 0." in first_user(call.body)  # noqa: E731
    script = lambda call: Reply(status=503) if doomed(call) else Reply(good_json(call))  # noqa: E731
    responses, server = ask(script, [make_request(0), make_request(1)], concurrency=1, max_retries=2)
    assert responses["key0"].error.startswith("HTTP 503")
    assert responses["key1"].error is None
    assert sum(server.calls.values()) == 3 + 1  # 1 + max_retries for the doomed one


def test_client_errors_are_not_retried():
    responses, server = ask(lambda call: Reply(status=404, error="no such model"), [make_request()])
    assert responses["key0"].error == "HTTP 404: no such model" and sum(server.calls.values()) == 1


def test_hang_past_the_timeout_is_retried():
    script = lambda call: Reply(good_json(call), delay=3) if call.attempt == 1 else Reply(good_json(call))  # noqa: E731
    started = time.monotonic()
    responses, server = ask(script, [make_request()], timeout_s=0.3)
    assert responses["key0"].error is None and sum(server.calls.values()) == 2
    assert time.monotonic() - started < 2.5


def test_finish_reason_length_reaches_validation():
    responses, _ = ask(lambda call: Reply('{"items": [{"question": "What', finish_reason="length"), [make_request()])
    assert responses["key0"].finish_reason == "length"
    assert parse_output(responses["key0"], TASK.validator)[1] == "truncated"


def test_server_refusing_every_response_format_ends_prompt_only():
    def script(call):
        if "response_format" in call.body:
            return Reply(status=400, error="response_format of type json_schema is not supported by this server")
        return Reply(good_json(call))

    responses, server = ask(script, [make_request(i) for i in range(5)], concurrency=1)
    assert all(r.error is None for r in responses.values())
    assert [b["response_format"]["type"] for b in server.bodies if "response_format" in b] == ["json_schema", "json_object", "json_object"]
    assert len(server.bodies) == 3 + 5  # three refusals, once each, then remembered for the run


def test_concurrency_is_bounded_and_spread_over_urls():
    slow = lambda call: Reply(good_json(call), delay=0.05)  # noqa: E731
    with FakeOpenAI(slow) as one, FakeOpenAI(slow) as two:
        teacher = OpenAITeacher(config(one.url, base_url=[one.url, two.url], concurrency=4))
        try:
            responses = list(teacher.generate([make_request(i) for i in range(8)]))
        finally:
            teacher.close()
    assert len(responses) == 8 and all(r.error is None for r in responses)
    assert sum(one.calls.values()) >= 2 and sum(two.calls.values()) >= 2
    assert one.peak + two.peak <= 4 and max(one.peak, two.peak) == 2


def test_rejected_key_fails_fast_without_showing_it(monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-wrong-0123456789")
    with FakeOpenAI(api_key="sk-right") as server:
        with pytest.raises(UserError) as err:
            OpenAITeacher(config(server.url, api_key_env="DISTILL_TEST_KEY"))
        assert not server.bodies  # nothing was sent
    message = str(err.value)
    assert "$DISTILL_TEST_KEY" in message and "401" in message and "sk-wrong" not in message and "\n" not in message


def test_accepted_key_is_sent_and_scrubbed_from_errors(monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-right-0123456789")
    script = lambda call: Reply(status=400, error="bad request for key sk-right-0123456789")  # noqa: E731
    with FakeOpenAI(script, api_key="sk-right-0123456789") as server:
        teacher = OpenAITeacher(config(server.url, api_key_env="DISTILL_TEST_KEY"))
        try:
            (response,) = list(teacher.generate([make_request()]))
        finally:
            teacher.close()
    assert "sk-right" not in response.error and "***" in response.error


def test_unreachable_server_fails_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        started = time.monotonic()
        with pytest.raises(UserError, match="cannot reach the teacher at http://127.0.0.1"):
            OpenAITeacher(config(f"http://127.0.0.1:{port}/v1"))
    assert time.monotonic() - started < 5


def test_hosted_api_without_key_is_a_user_error(monkeypatch):
    monkeypatch.delenv("DISTILL_TEST_KEY", raising=False)
    with pytest.raises(UserError, match=r"\$DISTILL_TEST_KEY is not set"):
        OpenAITeacher(TeacherConfig(backend="openai", model="gpt-4.1-mini", api_key_env="DISTILL_TEST_KEY"))


def test_ctrl_c_stops_sending_and_closes_at_once():
    slow = lambda call: Reply(good_json(call), delay=0.3)  # noqa: E731
    with FakeOpenAI(slow) as server:
        teacher = OpenAITeacher(config(server.url, concurrency=2))
        got = []
        with pytest.raises(KeyboardInterrupt):  # where Ctrl-C surfaces: in the loop consuming the answers
            for response in teacher.generate([make_request(i % 8) for i in range(40)]):
                got.append(response)
                if len(got) == 2:
                    raise KeyboardInterrupt
        started = time.monotonic()
        teacher.close()
        assert time.monotonic() - started < 1
        time.sleep(0.4)
        assert 1 <= len(got) <= 4 and sum(server.calls.values()) <= 6  # nothing sent after the interrupt
