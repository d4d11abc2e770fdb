"""The layers of DESIGN.md, enforced on every import (top-level and lazy ones inside functions):

    schemas  <-  common  <-  {generate, train, evaluation}  <-  distill (the commands and the pipeline)

- a package imports only the packages below it (the three stages never import each other);
- nothing below the CLI imports the CLI (`distill.cli`, `distill.cmd_*`);
- `unsloth` is imported in exactly one module, `train/unsloth_adapter.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "schemas": set(),
    "common": {"schemas"},
    "generate": {"schemas", "common"},
    "train": {"schemas", "common"},
    "evaluation": {"schemas", "common"},
    "distill": {"schemas", "common", "generate", "train", "evaluation"},
}
CLI_MODULES = ("distill.cli", "distill.cmd_")
UNSLOTH_HOME = "train/unsloth_adapter.py"


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, wherever it stands (lazy imports included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(where: str, source: str) -> list[str]:
    """What breaks the rules in the file at `where` (a path relative to the repository root)."""
    package = where.split("/")[0]
    module_name = where.removesuffix(".py").replace("/", ".")
    problems = []
    for line, module in imported_modules(source):
        top = module.split(".")[0]
        if top == "unsloth" and where != UNSLOTH_HOME:
            problems.append(f"{where}:{line} imports unsloth (only {UNSLOTH_HOME} may)")
        if top in ALLOWED and top != package and top not in ALLOWED[package]:
            problems.append(f"{where}:{line} imports {module}: {package} may import only {sorted(ALLOWED[package]) or 'no project package'}")
        if module.startswith(CLI_MODULES) and not module_name.startswith(CLI_MODULES) and module_name != "distill.__main__":
            problems.append(f"{where}:{line} imports the CLI ({module}) from below it")
    return problems


def test_every_package_is_checked():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "bench", "examples", "docs")}
    assert on_disk == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_layers(package):
    files = sorted((ROOT / package).rglob("*.py"))
    problems = [problem for path in files for problem in violations(path.relative_to(ROOT).as_posix(), path.read_text())]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_stage_importing_the_cli():
    """The rules fire on planted sources: a stage importing the CLI (lazily), unsloth, the other stage."""
    problems = violations("train/planted.py", "def f():\n    from distill.cli import main\n    import unsloth\n    from generate import stage\n")
    assert any("imports the CLI" in p for p in problems)
    assert any("imports unsloth" in p for p in problems)
    assert any("imports generate" in p for p in problems)
    assert any("may import only" in p and "distill.cli" in p for p in problems)
    assert violations("evaluation/stage.py", "from distill import cmd_gen\n")  # a submodule named in from-import
    assert violations("evaluation/stage.py", "from distill.cmd_gen import gen\n")
    assert violations("distill/cmd_run.py", "from distill.cmd_eval import print_summary\n") == []
    assert violations("common/io.py", "import schemas\nimport json\n") == []


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (packages by their __init__)."""
    found = {}
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            name = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (lazy imports included; `from a import b` names a.b where b is a module)."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = {module for _, module in imported_modules(path.read_text())}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}  # a package's own __init__ is no edge
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph` (one path per cycle found by depth-first search)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles():
    """No module reaches itself through imports (a factory beside the types its products import was one)."""
    assert not cycles(import_graph()), cycles(import_graph())


def test_the_cycle_check_finds_a_planted_cycle():
    graph = {"common.teacher.backends": {"common.teacher.backend_local"}, "common.teacher.backend_local": {"common.teacher.backends"}}
    assert cycles(graph) == [["common.teacher.backend_local", "common.teacher.backends", "common.teacher.backend_local"]]


def test_the_two_recipes_import_neither_each_other():
    """SFT and GRPO are peers: what they share lives in train/recipe.py (and the loaders), not in either."""
    graph = import_graph()
    assert not {m for m in graph["train.grpo"] if m.startswith("train.sft")}
    assert not {m for m in graph["train.sft"] if m.startswith("train.grpo")}
