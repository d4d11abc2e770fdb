"""Tasks (prompt + schema + mapping) and the checks on teacher output."""

from __future__ import annotations

import json

import pytest

import schemas
from common.errors import UserError
from common.teacher.backends import Response
from generate.tasks import BUILTIN, load_task, quotable_sentences
from generate.validate import grounded, parse_output, question_key

CHUNK = (
    "# Tides\n\nThe tide rises twice a day on the Kessel coast.\n"
    "Fishermen leave at dawn.  Short.\n\n"
    "A spring tide follows each full moon! Does the neap tide follow the half moon? Yes."
)
ITEM = {"question": "How often does the tide rise?", "evidence": "The tide rises twice a day", "reasoning": "It says so.", "answer": "Twice a day"}


def response(text: str, finish: str = "stop", error: str | None = None) -> Response:
    return Response(key="k", text=text, finish_reason=finish, error=error)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_tasks_load(name):
    task = load_task(name)
    assert task.name == name and task.schema == schemas.load(name)
    messages = task.messages(CHUNK, 3)
    assert [m["role"] for m in messages] == ["system", "user"]
    prompt = messages[1]["content"]
    assert CHUNK in prompt and "pick 3 different" in prompt and "write 1 question(s)" in prompt
    assert "{chunk}" not in prompt and "{n}" not in prompt
    task.validator.validate({"items": [dict(ITEM, reasoning="r" * 60)]})


def test_prompt_fields_are_not_substituted_inside_the_chunk():
    chunk = 'In Python, f"{n} items" formats n; the {schema} placeholder and {chunk} are literal here.'
    prompt = load_task("qa").messages(chunk, 2)[1]["content"]
    assert chunk in prompt


def test_request_schema_asks_exactly_n_items_quoting_the_chunk():
    task = load_task("qa")
    schema = task.request_schema(4, CHUNK)
    items = schema["properties"]["items"]
    assert items["minItems"] == items["maxItems"] == 4
    evidence = items["items"]["properties"]["evidence"]
    assert evidence["enum"] == [
        "The tide rises twice a day on the Kessel coast.",
        "Fishermen leave at dawn.",
        "A spring tide follows each full moon!",
        "Does the neap tide follow the half moon?",
    ]
    assert "minLength" not in evidence and "maxLength" not in evidence
    assert task.schema["properties"]["items"]["minItems"] == 1  # the task's own schema is untouched
    assert "enum" not in task.schema["properties"]["items"]["items"]["properties"]["evidence"]
    unconstrained = task.request_schema(2)
    assert "enum" not in unconstrained["properties"]["items"]["items"]["properties"]["evidence"]


def test_quotable_sentences_are_verbatim_unique_and_bounded():
    chunk = "Same sentence repeated here. Same sentence repeated here. " + " ".join(f"Sentence number {i} is long enough." for i in range(60))
    quotes = quotable_sentences(chunk)
    assert quotes[0] == "Same sentence repeated here." and quotes.count(quotes[0]) == 1
    assert len(quotes) == 48
    assert all(q in chunk and 20 <= len(q) <= 400 for q in quotes)


def write(path, content) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def custom_schema() -> dict:
    return {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                    "required": ["question", "answer"],
                },
            }
        },
        "required": ["items"],
    }


def test_custom_task_from_prompt_and_schema_files(tmp_path):
    prompt = write(tmp_path / "p.txt", 'Ask {n} things about:\n{chunk}\nShape: {schema} like {"items": []}')
    schema = write(tmp_path / "s.json", custom_schema())
    task = load_task("trivia", prompt, schema)
    assert task.name == "trivia" and task.schema == custom_schema()
    text = task.messages("Some chunk.", 5)[1]["content"]
    assert text.startswith("Ask 5 things about:\nSome chunk.\nShape: {") and text.endswith('like {"items": []}')
    assert json.loads(text.split("Shape: ")[1].split(" like")[0]) == custom_schema()
    items = task.items({"items": [{"question": " Q? ", "answer": " A "}]})
    assert items == [{"question": "Q?", "reasoning": "", "answer": "A", "evidence": ""}]
    # a built-in name with a custom prompt keeps the built-in schema
    assert load_task("qa", prompt_file=prompt).schema == schemas.load("qa")


@pytest.mark.parametrize(
    "content, words",
    [
        ({"type": 12}, "not a valid JSON Schema"),
        ({"type": "object", "properties": {"items": {"type": "array", "minItems": "two"}}}, "not a valid JSON Schema"),
        ("{not json", "not valid JSON"),
        ({"type": "object", "properties": {"items": {"type": "array", "items": {"required": ["question"]}}}}, "requiring"),
        ({"type": "array"}, "requiring"),
    ],
)
def test_bad_schema_files_are_user_errors(tmp_path, content, words):
    prompt = write(tmp_path / "p.txt", "{chunk}")
    with pytest.raises(UserError, match=words) as err:
        load_task("custom", prompt, write(tmp_path / "s.json", content))
    assert "\n" not in str(err.value)


def test_unknown_task_and_missing_files(tmp_path):
    with pytest.raises(UserError, match="unknown task 'summaries'.*qa, reasoning"):
        load_task("summaries")
    with pytest.raises(UserError, match="does not exist"):
        load_task("qa", prompt_file=str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="does not exist"):
        load_task("qa", schema_file=str(tmp_path / "missing.json"))


@pytest.mark.parametrize(
    "resp, reason",
    [
        (response('{"items": ['), "invalid_json"),
        (response('{"items": [{"question": "How often', finish="length"), "truncated"),
        (response("Sure! Here is JSON: {}"), "invalid_json"),
        (response(json.dumps({"items": [{"question": "Why?"}]})), "schema"),
        (response(json.dumps({"items": []})), "schema"),
        (response("", error="HTTP 500 after 6 retries"), "failed_request"),
    ],
)
def test_parse_output_reasons(resp, reason):
    output, got, detail = parse_output(resp, load_task("qa").validator)
    assert output is None and got == reason and detail


def test_parse_output_schema_detail_names_the_place():
    bad = {"items": [dict(ITEM), {k: v for k, v in ITEM.items() if k != "answer"}]}
    _, reason, detail = parse_output(response(json.dumps(bad)), load_task("qa").validator)
    assert reason == "schema" and detail.startswith("items/1") and "answer" in detail


def test_parse_output_accepts_valid_output():
    output, reason, detail = parse_output(response(json.dumps({"items": [ITEM]})), load_task("qa").validator)
    assert output == {"items": [ITEM]} and reason == detail == ""


def test_grounding_is_whitespace_normalized():
    assert grounded("The tide   rises\ntwice a day", CHUNK)
    assert grounded("Fishermen leave at dawn. Short.", CHUNK)  # two spaces in the chunk
    assert not grounded("The tide rises three times a day", CHUNK)
    assert not grounded("the tide rises twice a day", CHUNK)  # case matters: it is a quote
    assert not grounded("   ", CHUNK)


def test_question_key_ignores_case_punctuation_spacing_and_width():
    assert question_key("What is the  Tide?") == question_key("what is the tide") == "what is the tide"
    assert question_key("ＷＨＡＴ is X?") == question_key("what is x")  # NFKC folds full-width letters
    assert question_key("What is X?") != question_key("What is Y?")


def test_raw_control_characters_inside_strings_are_read_as_spaces():
    """SmolLM2-135M under llama.cpp's grammar (which allows them) wrote raw line breaks inside strings."""
    raw = json.dumps({"items": [dict(ITEM, reasoning="It says so.\tTwice\na day.")]})
    raw = raw.replace("\\t", "\t").replace("\\n", "\n")
    output, reason, _ = parse_output(response(raw), load_task("qa").validator)
    assert reason == "" and output["items"][0]["reasoning"] == "It says so. Twice a day."
    escaped = {"items": [dict(ITEM, reasoning="Line one.\nLine two.")]}  # an escaped line break is the teacher's
    assert parse_output(response(json.dumps(escaped)), load_task("qa").validator)[0] == escaped
    assert parse_output(response('{"items": [\n{"question": "Why\n'), load_task("qa").validator)[1] == "invalid_json"
