"""Every schema distill sends a teacher (each built-in task, the judges), in its gbnf rendering,
goes through the schema-to-grammar converters that ship as Python packages, and the grammar stays
small (issue 27):

- xgrammar (a dependency: the default run);
- outlines-core, where importable or where $DISTILL_OUTLINES_PYTHON names a python that has it;
- llama.cpp's (llama-cpp-python: its converter, then llama.cpp's own grammar parser, as its server
  calls them), where llama_cpp is importable or $DISTILL_LLAMA_PYTHON names a python that has it:
  the `slow` tier, as llama-cpp-python compiles llama.cpp at install (about 12 minutes on 2 cores).

The other pythons run tests/grammar_probe.py (their own venvs: neither package is a dependency).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_renderings import builtin_schemas

from common import graders
from common.models import embedded_gguf
from common.teacher.dialects import render
from generate.curate import JUDGE_SCHEMA

LLAMA_MISSING = "no llama-cpp-python here; set DISTILL_LLAMA_PYTHON to a python with 'llama-cpp-python[server]'"
PROBE = Path(__file__).with_name("grammar_probe.py")
JUDGES = {"curation judge": JUDGE_SCHEMA, "eval judge": graders.JUDGE_SCHEMA, "eval pairwise": graders.PAIRWISE_SCHEMA}
SCHEMAS = {**builtin_schemas(), **JUDGES}
GBNF = {name: render(schema, "gbnf") for name, schema in SCHEMAS.items()}
FULL = "qa k=1"  # the schema that took llama-cpp-python's server down (issue 27), for comparison
ITEMS = 4  # items per reply in builtin_schemas
# bounds on top of what an enum of quotes needs (quoted(schema): its characters); measured 2026-12-04
XGRAMMAR_MAX_CHARS = 4_000  # 3,342 at most without quotes; a quotes pattern ~3.6 characters a quoted one
OUTLINES_MAX_STATES = 2_000  # 949 at most without quotes (ITEMS x the quotes: one copy per item); the full qa: 11,041
LLAMA_MAX_CHARS = 12_000  # 10,474 at most beside the quotes (spans up to 400); the full qa: 14,197, unparsed


def other_python(env: str, module: str) -> str | None:
    """A python that has `module`: $env, else this one where it can import it."""
    if os.environ.get(env):
        return os.environ[env]
    return sys.executable if importlib.util.find_spec(module) else None


def quoted(schema) -> int:
    """Characters of the enum values of a schema (the evidence quotes): a grammar must spell them out."""
    if isinstance(schema, dict):
        own = sum(len(json.dumps(v)) for v in schema.get("enum", []) if isinstance(v, str))
        return own + sum(quoted(v) for k, v in schema.items() if k != "enum")
    return sum(quoted(v) for v in schema) if isinstance(schema, list) else 0


def probe(python: str, *args: str, schemas: dict) -> dict:
    command = [python, str(PROBE), *args]
    done = subprocess.run(command, check=False, input=json.dumps(schemas), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_xgrammar_converts_every_schema_in_its_gbnf_rendering():
    import xgrammar

    for name, schema in GBNF.items():
        grammar = str(xgrammar.Grammar.from_json_schema(json.dumps(schema)))
        assert "root ::=" in grammar and len(grammar) <= XGRAMMAR_MAX_CHARS + 4 * quoted(SCHEMAS[name]), name


def test_outlines_core_converts_every_schema_in_its_gbnf_rendering():
    python = other_python("DISTILL_OUTLINES_PYTHON", "outlines_core")
    if python is None:
        pytest.skip("no outlines-core here; set DISTILL_OUTLINES_PYTHON to a python with outlines-core")
    found = probe(python, "outlines-core", schemas={**GBNF, "full": SCHEMAS[FULL]})
    full = found.pop("full")
    assert {name: got["error"] for name, got in found.items()} == dict.fromkeys(GBNF)
    assert all(got["size"] <= OUTLINES_MAX_STATES + ITEMS * quoted(SCHEMAS[name]) for name, got in found.items())
    assert full["size"] > 5 * OUTLINES_MAX_STATES  # the full schema's bounded strings, spelled out state by state


@pytest.mark.slow
def test_llama_cpp_converts_and_parses_every_schema_in_its_gbnf_rendering():
    python = other_python("DISTILL_LLAMA_PYTHON", "llama_cpp")
    if python is None:
        pytest.skip(LLAMA_MISSING)
    found = probe(python, "llama.cpp", str(embedded_gguf()), schemas={**GBNF, "full": SCHEMAS[FULL]})
    full = found.pop("full")
    assert {name: got["error"] for name, got in found.items()} == dict.fromkeys(GBNF)
    assert all(got["size"] <= LLAMA_MAX_CHARS + quoted(SCHEMAS[name]) for name, got in found.items())
    assert full["error"] == "failed to parse grammar" and full["size"] > LLAMA_MAX_CHARS  # what killed the server
