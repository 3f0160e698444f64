"""One ``make figures`` over the committed fixture runs, built once per test run and read by every test that
only reads it (``tests/test_report_page.py``, ``tests/test_reliability_analysis_page.py``).

A build runs four notebook kernels and costs about a minute of CPU; the report-page tests (what it prints,
the page in a browser) and the Latin-1 rebuild test (which copies it and builds again with a task removed)
all start from the same build of the same runs, so it is made once, shared by the xdist workers
(``shared_tmp`` + ``built_once``), and never written into. It runs in a locale whose default encoding is
not UTF-8, so every test that reads it also shows that ``make figures`` writes UTF-8 and prints nothing on
stderr there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from analysis.paths import REPO_ROOT
from tests.conftest import built_once, shared_tmp

RUNS = Path(__file__).parent / "fixtures" / "runs"
LATIN1_ENV = {"LC_ALL": "C.ISO-8859-1", "PYTHONUTF8": "0", "PYTHONIOENCODING": "latin-1"}


@dataclass(frozen=True)
class FiguresBuild:
    """What one ``make figures`` left: the results root it read, its figures folder and the process's outcome."""

    root: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> Path:
        return self.root / "figures"


def make_figures(root: Path) -> subprocess.CompletedProcess:
    """``make -s figures OUT=root`` in the Latin-1 locale (the command a user types, its own process)."""
    return subprocess.run(["make", "-s", "figures", f"OUT={root}", f"PYTHON={sys.executable}"], cwd=REPO_ROOT,
                          env={**os.environ, **LATIN1_ENV}, capture_output=True, text=True, encoding="latin-1",
                          timeout=900)


def fixture_runs_figures(tmp_path_factory: pytest.TempPathFactory) -> FiguresBuild:
    """``make figures`` over a copy of ``tests/fixtures/runs``, built on first use in this test run; the
    process's outcome is kept beside it, so a worker that did not build it reads the same stdout and stderr."""
    folder = shared_tmp(tmp_path_factory, "fixture_runs_figures")
    outcome = folder / "make_figures.json"
    with built_once(folder) as needed:
        if needed:
            shutil.rmtree(folder / "runs", ignore_errors=True)
            shutil.copytree(RUNS, folder / "runs")
            done = make_figures(folder / "runs")
            outcome.write_text(json.dumps({"returncode": done.returncode, "stdout": done.stdout,
                                           "stderr": done.stderr}), encoding="utf-8")
    return FiguresBuild(root=folder / "runs", **json.loads(outcome.read_text(encoding="utf-8")))
