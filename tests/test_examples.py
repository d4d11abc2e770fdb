"""Every YAML file under examples/ parses into its stage's config model.

A stage config file (e.g. examples/gen.yaml) holds one stage's keys; a pipeline file holds
sections named after stages (gen:, train:, eval:). SECTIONS must name every stage of the
pipeline (a test checks it against distill.pipeline.STAGES): the test then parses that section
of every pipeline file and every examples/<stage>*.yaml file.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from common.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SECTIONS = {
    "gen": "generate.config:GenConfig",
    "train": "train.config:TrainConfig",
    "grpo": "train.grpo_config:GRPOConfig",
    "eval": "evaluation.config:EvalConfig",
}
STAGES = tuple(SECTIONS)  # sections a pipeline file (distill run) may hold


def config_class(section: str):
    module, name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module), name)


def yaml_files() -> list[Path]:
    return sorted([*EXAMPLES.rglob("*.yaml"), *EXAMPLES.rglob("*.yml")])


def test_every_pipeline_stage_is_checked():
    from distill.pipeline import STAGES as PIPELINE_STAGES

    assert set(SECTIONS) == set(PIPELINE_STAGES)


def test_there_are_examples():
    assert (EXAMPLES / "gen.yaml") in yaml_files()
    assert (EXAMPLES / "quickstart.yaml") in yaml_files()


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_parses_into_its_config(path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data, f"{path} must hold a mapping"
    stage = path.stem.split("_")[0].split("-")[0]
    if stage in STAGES:  # a stage config file: examples/gen.yaml, examples/train-lora.yaml, ...
        config = load_config(config_class(stage), path)
        assert config.model_dump(exclude_unset=True), f"{path} sets no key"
        return
    sections = [section for section in STAGES if section in data]
    assert sections, f"{path} is neither a stage config (named after {STAGES}) nor a pipeline file with such sections"
    # a pipeline file: the pipeline wires stages together (gen.out -> train.data, eval.data, ...)
    from distill.pipeline import load_sections, resolve

    configs = resolve(load_sections(path))
    assert set(configs) == set(sections)
    if "eval" in configs and "gen" in configs:
        assert configs["eval"].data == configs["gen"].out


def test_gen_example_documents_every_key():
    """Every GenConfig field appears in examples/gen.yaml, set or commented out (`# name: value`)."""
    from generate.config import GenConfig

    text = (EXAMPLES / "gen.yaml").read_text()
    mentioned = set(re.findall(r"^\s*#?\s*(\w+):", text, re.M))
    teacher = GenConfig.model_fields["teacher"].annotation
    missing = (set(GenConfig.model_fields) | set(teacher.model_fields)) - mentioned
    assert not missing, f"examples/gen.yaml does not mention {sorted(missing)}"
    config = load_config(GenConfig, EXAMPLES / "gen.yaml")
    assert config.max_chunks == 12 and config.export == ["sharegpt"] and config.teacher.model == "embedded"
