"""Where the analysis reads runs from and writes to, whatever the working directory.

Jupyter starts a notebook's kernel in ``analysis/notebooks/``, so a relative ``outputs``
there found nothing and wrote a stray ``analysis/notebooks/outputs/figures``. Relative paths
are therefore taken against the repository root; ``ADALORA_RESULTS_ROOT`` and
``ADALORA_FIGURES_DIR`` set the notebooks' defaults without editing them. A results root that
is missing or holds no run is an error that says what to do, never an empty report.
"""

from __future__ import annotations

import os
from pathlib import Path

from analysis.collect import find_run_dirs, print_once

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_ENV = "ADALORA_RESULTS_ROOT"
FIGURES_ENV = "ADALORA_FIGURES_DIR"


class NoRuns(FileNotFoundError):
    """The results root does not exist or holds no run directory."""


def default_results_root() -> str:
    return os.environ.get(RESULTS_ENV, "outputs")


def default_out_dir() -> str:
    return os.environ.get(FIGURES_ENV, str(Path(default_results_root()) / "figures"))


def in_repo(path: str | Path) -> Path:
    """``path`` itself if absolute, else relative to the repository root (not the working directory)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def require_runs(results_root: str | Path) -> Path:
    """The absolute results root; raises ``NoRuns`` naming the fix if it is missing or empty."""
    root = in_repo(results_root)
    if not root.is_dir():
        raise NoRuns(f"results root {root} does not exist: run a sweep first (e.g. `make smoke`), or point "
                     f"`make figures OUT=<dir>` / --results-root / ${RESULTS_ENV} at the folder holding your runs")
    if not find_run_dirs(root):
        raise NoRuns(f"results root {root} holds no run (no <sweep>/<task>/<method>/<budget>/seed=<s>/ directory): "
                     "point it at the output_root of a sweep")
    return root


def read_output(path: Path) -> str | None:
    """A text file the notebooks wrote, read as UTF-8 (what they write, whatever the locale). One that is
    not UTF-8 is not theirs (a user's Latin-1 notes): it is named on stderr in one line and skipped, and
    the report is built without it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        print_once(f"[report page] left out {path}: not UTF-8 ({err.reason} at byte {err.start}); the notebooks "
                   "write UTF-8, so it is not one of theirs")
        return None
