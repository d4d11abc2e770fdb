"""Every YAML file under examples/ parses into its stage's config model.

A stage config file (e.g. examples/gen.yaml) holds one stage's keys; a pipeline file holds
sections named after stages (gen:, train:, eval:). To check a new stage, add its section
name and config class to SECTIONS: the test then parses that section of every pipeline file
and every examples/<stage>*.yaml file.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from distill.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SECTIONS = {
    "gen": "generate.config:GenConfig",
    # "train": "train.config:TrainConfig",   # extension point: add stages as their configs land
    # "eval": "distill.eval_config:EvalConfig",
}
PIPELINE_KEYS = {"gen", "train", "eval", "run", "name", "out", "seed"}  # sections and top-level pipeline settings


def config_class(section: str):
    module, name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module), name)


def yaml_files() -> list[Path]:
    return sorted([*EXAMPLES.rglob("*.yaml"), *EXAMPLES.rglob("*.yml")])


def test_there_are_examples():
    assert (EXAMPLES / "gen.yaml") in yaml_files()


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_parses_into_its_config(path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data, f"{path} must hold a mapping"
    stage = path.stem.split("_")[0].split("-")[0]
    if stage in SECTIONS:  # a stage config file
        config = load_config(config_class(stage), path)
        assert config.model_dump(exclude_unset=True), f"{path} sets no key"
        return
    assert set(data) <= PIPELINE_KEYS | set(SECTIONS), f"{path}: not a stage config and has unknown sections {set(data) - PIPELINE_KEYS}"
    checked = [section for section in SECTIONS if section in data]
    assert checked, f"{path} has none of the sections {sorted(SECTIONS)}"
    for section in checked:
        load_config(config_class(section), path, section=section)


def test_gen_example_sets_every_key_it_documents():
    from generate.config import GenConfig

    data = yaml.safe_load((EXAMPLES / "gen.yaml").read_text())
    assert set(data) == set(GenConfig.model_fields)
    assert set(data["teacher"]) == set(GenConfig.model_fields["teacher"].annotation.model_fields)
    config = load_config(GenConfig, EXAMPLES / "gen.yaml")
    assert config.max_chunks == 12 and config.export == ["sharegpt"] and config.teacher.model == "embedded"
