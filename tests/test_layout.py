"""The layout's one rule: ``adalora/`` is the method library and depends on torch only;
``experiments/`` (the harness) and ``analysis/`` build on it, never the reverse.

Why a test: the core install (``pip install .``) ships only torch, so one stray import of the
harness from the method package would break every user who wants AdaLoRA in their own loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# transformers is allowed only where an architecture table needs its names; nothing imports it yet.
CORE_ALLOWED = {"torch", "adalora", "transformers"}
HARNESS_MODULES = ("experiments", "analysis", "hydra", "omegaconf", "datasets", "accelerate", "wandb", "pandas")


# Optional packages a function may import when it is called (never at module level, so ``import adalora``
# still needs torch only): safetensors for saved methods, peft for the `peft` kind (both in the
# `experiments` extra).
LAZY_OPTIONAL = {"safetensors", "peft"}


def _top_level_imports(path: Path, module_level_only: bool = False) -> set[str]:
    names: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in (tree.body if module_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_method_library_imports_only_torch_and_the_standard_library():
    offending = {}
    for path in sorted((ROOT / "adalora").rglob("*.py")):
        third_party = {
            name for name in _top_level_imports(path) if name not in sys.stdlib_module_names
        } - CORE_ALLOWED - LAZY_OPTIONAL
        third_party |= _top_level_imports(path, module_level_only=True) & LAZY_OPTIONAL
        if third_party:
            offending[str(path.relative_to(ROOT))] = sorted(third_party)
    assert offending == {}, f"adalora/ must import only torch (+ stdlib): {offending}"


@pytest.mark.slow
def test_importing_adalora_loads_no_harness_module():
    code = (
        "import sys, adalora; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HARNESS_MODULES!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_harness_and_analysis_use_the_method_library_not_the_reverse():
    users = [p for d in ("experiments", "analysis") for p in (ROOT / d).rglob("*.py")]
    assert any("adalora" in _top_level_imports(p) for p in users), "the harness should build on adalora/"
    for path in (ROOT / "adalora").rglob("*.py"):
        assert not _top_level_imports(path) & {"experiments", "analysis", "benchmarks"}, path


def test_core_install_needs_only_torch_and_the_extras_carry_the_rest():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [dep.split(">")[0] for dep in project["dependencies"]] == ["torch"]
    extras = project["optional-dependencies"]
    assert set(extras) == {"experiments", "analysis", "dev"}
    harness = {dep.split(">")[0] for dep in extras["experiments"]}
    assert {"transformers", "hydra-core", "datasets", "accelerate"} <= harness


# Import cycles another engineer is removing (training <-> weights: the "boundary" work on weights.py); each
# entry must still be a cycle, so the list shrinks as they go.
EXPECTED_CYCLES: set[frozenset[str]] = set()


def _experiments_imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports anywhere (a function-level import is still an edge);
    ``from package import submodule`` is an edge to the submodule."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("experiments"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if sub in modules else node.module)
    return names & modules


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_experiments_import_graph_has_no_cycle():
    paths = {_module_name(p): p for p in sorted((ROOT / "experiments").rglob("*.py"))}
    graph = {name: _experiments_imports(path, set(paths)) - {name} for name, path in paths.items()}
    cycles = _cycles(graph)
    assert cycles - EXPECTED_CYCLES == set(), f"import cycles in experiments/: {[sorted(c) for c in cycles]}"
    assert EXPECTED_CYCLES <= cycles, "a cycle listed as expected is gone: remove it from EXPECTED_CYCLES"
