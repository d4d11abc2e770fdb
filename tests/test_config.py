"""Config loading: defaults < YAML < flags < key=value; unknown keys and bad values are one-line UserErrors."""

from __future__ import annotations

import pytest
import yaml

from common.config import load_config, parse_overrides, redact
from common.errors import UserError
from distill.options import split_args
from generate.config import GenConfig, TeacherConfig


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_without_any_source():
    cfg = load_config(GenConfig)
    assert cfg.task == "qa" and cfg.split_by == "item" and cfg.teacher.backend == "local"
    assert cfg.teacher.model == "embedded" and cfg.export == []


def test_precedence_yaml_then_flags_then_overrides(tmp_path):
    path = write_yaml(tmp_path / "gen.yaml", {"pairs_per_chunk": 3, "seed": 5, "test_fraction": 0.3, "task": "reasoning"})
    cfg = load_config(
        GenConfig,
        path,
        flags={"pairs_per_chunk": 4, "seed": 6, "task": None, "max_chunks": None},
        overrides=["seed=7"],
    )
    assert cfg.task == "reasoning"  # only YAML sets it (a None flag is "not given")
    assert cfg.test_fraction == 0.3  # only YAML
    assert cfg.pairs_per_chunk == 4  # flag beats YAML
    assert cfg.seed == 7  # key=value beats flag and YAML
    assert cfg.max_chunks is None


def test_nested_teacher_keys_merge_across_sources(tmp_path):
    path = write_yaml(tmp_path / "gen.yaml", {"teacher": {"temperature": 0.2, "batch_size": 3, "model": "org/a"}})
    cfg = load_config(
        GenConfig,
        path,
        flags={"teacher.model": "org/b", "teacher.backend": None},
        overrides=["teacher.batch_size=9", "teacher.base_url=[http://a:1/v1, http://b:2/v1]", "teacher.seed=null"],
    )
    assert cfg.teacher.temperature == 0.2  # kept from YAML: nested mappings merge, not replace
    assert cfg.teacher.model == "org/b"
    assert cfg.teacher.batch_size == 9
    assert cfg.teacher.base_url == ["http://a:1/v1", "http://b:2/v1"]
    assert cfg.teacher.seed is None
    assert cfg.teacher.backend == "local"


def test_override_values_are_yaml_scalars():
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=text", "e=", "f.g=[1, 2]"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "text",
        "e": "",
        "f": {"g": [1, 2]},
    }


@pytest.mark.parametrize(
    "overrides, named, listed",
    [
        (["chunk_size=3"], "chunk_size", "chunk_tokens"),
        (["teacher.temprature=0.1"], "teacher.temprature", "temperature"),
    ],
)
def test_unknown_keys_are_rejected_with_the_valid_ones(overrides, named, listed):
    with pytest.raises(UserError) as err:
        load_config(GenConfig, overrides=overrides)
    message = str(err.value)
    assert f"'{named}'" in message and listed in message
    assert "\n" not in message


def test_unknown_key_in_yaml_lists_every_valid_key(tmp_path):
    path = write_yaml(tmp_path / "gen.yaml", {"teacher": {"modle": "x"}})
    with pytest.raises(UserError) as err:
        load_config(GenConfig, path)
    for name in TeacherConfig.model_fields:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "override, where",
    [
        ("test_fraction=1.5", "test_fraction"),
        ("split_by=chapter", "split_by"),
        ("pairs_per_chunk=0", "pairs_per_chunk"),
        ("teacher.temperature=-1", "teacher.temperature"),
        ("teacher.backend=ollama", "teacher.backend"),
        ("chunk_tokens=many", "chunk_tokens"),
        ("export=[csv]", "export"),
    ],
)
def test_bad_values_are_one_line_user_errors(override, where):
    with pytest.raises(UserError) as err:
        load_config(GenConfig, overrides=[override])
    assert f"'{where}" in str(err.value) and "invalid" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content, words",
    [
        ("- a\n- b\n", "mapping"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_yaml_files(tmp_path, content, words):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(UserError, match=words):
        load_config(GenConfig, str(path))


def test_missing_yaml_and_malformed_override(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(GenConfig, str(tmp_path / "nope.yaml"))
    with pytest.raises(UserError, match="key=value"):
        load_config(GenConfig, overrides=["=3"])


def test_redact_removes_secrets_but_keeps_env_names():
    data = {"teacher": {"api_key": "sk-123", "api_key_env": "MY_KEY", "model": "m"}, "hf_token": "hf_abc", "list": [{"password": "p"}]}
    clean = redact(data)
    assert clean["teacher"] == {"api_key": "***", "api_key_env": "MY_KEY", "model": "m"}
    assert clean["hf_token"] == "***" and clean["list"] == [{"password": "***"}]
    assert redact({"max_new_tokens": 64, "max_batch_tokens": 8}) == {"max_new_tokens": 64, "max_batch_tokens": 8}  # counts of tokens are no secret
    assert "sk-123" not in str(clean) and "hf_abc" not in str(clean)


def test_cli_words_split_into_paths_and_overrides(tmp_path):
    odd = tmp_path / "a=b.txt"
    odd.write_text("x")
    paths, overrides = split_args(("docs/", str(odd), "seed=3", "teacher.max_new_tokens=64", "notes/*.md"))
    assert paths == ["docs/", str(odd), "notes/*.md"]
    assert overrides == ["seed=3", "teacher.max_new_tokens=64"]
