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
