"""Execute the analysis notebooks headless: ``python -m analysis.run_notebooks --results-root R --out-dir O``.

Each jupytext py:percent notebook in ``analysis/notebooks`` is converted in memory, gets its
parameters as a cell injected right after the cell tagged ``parameters`` (papermill's
convention, so the notebook's own defaults stay visible), and runs in a fresh ``python3``
kernel started in the repository root; the notebooks run concurrently. The records are read once
(``analysis.collect.collected_once``): every notebook's ``collect``/``run_status`` and the report
page get that one snapshot instead of each reading every ``result.json`` again. The executed ``.ipynb`` is kept in
``<out-dir>/notebooks`` for inspection, beside ``<name>.log``, which takes what the kernel
prints outside the cells (its TCP warning, absl INFO lines) so the terminal stays quiet. A
failing cell stops the run with the notebook's name and the cell's error. Then
``<out-dir>/index.html`` (``analysis.index_page``) gathers every table and figure on one page,
and the command prints the files it wrote, one per line, then a blank line and a short summary:
the runs by status, the warnings by category (``analysis.run_summary``) and the page's path.

A results root that is missing or holds no run is an error (exit status 1) with a message,
checked before any kernel starts.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from analysis.collect import collect, collected_once
from analysis.index_page import write_index
from analysis.paths import NoRuns, require_runs
from analysis.run_summary import RunSummary, summarize
from analysis.stats import REFERENCE
from analysis.tables import UnknownReference, check_reference

NOTEBOOK_DIR = Path(__file__).resolve().parent / "notebooks"
REPO_ROOT = NOTEBOOK_DIR.parents[1]
PARAMETERS_TAG = "parameters"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks; a terminal log should not


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook and carries the cell's error."""


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.py"))


def inject_parameters(notebook: nbformat.NotebookNode, parameters: dict[str, object]) -> None:
    """Insert ``name = value`` assignments after the cell tagged ``parameters``."""
    index = next((i for i, cell in enumerate(notebook.cells)
                  if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError(f"no cell tagged {PARAMETERS_TAG!r}")
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)


async def run_notebook(path: Path, parameters: dict[str, object], keep_dir: Path, timeout: int = 600) -> Path:
    """Execute one notebook; returns the executed ``.ipynb`` (written even when a cell fails)."""
    notebook = jupytext.read(path)
    inject_parameters(notebook, parameters)
    client = NotebookClient(notebook, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(REPO_ROOT)}})
    executed = keep_dir / f"{path.stem}.ipynb"
    keep_dir.mkdir(parents=True, exist_ok=True)
    with (keep_dir / f"{path.stem}.log").open("w") as log:
        try:
            await client.async_execute(stdout=log, stderr=log)
        except CellExecutionError as err:
            raise NotebookFailed(f"notebook {path.name} failed:\n{_ANSI.sub('', str(err))}") from err
        finally:
            nbformat.write(notebook, executed)
    return executed


def run_all(results_root: str | Path, out_dir: str | Path, only: list[str] | None = None,
            reference: str = REFERENCE) -> list[Path]:
    """Run every notebook (or those named in ``only``) concurrently, one kernel each.

    The notebooks are independent and mostly wait on imports, so running them side by side
    takes about as long as the slowest one. Every failure is reported, not just the first.
    ``reference`` is the method the tables' paired comparisons are made against.
    """
    out_dir = Path(out_dir).resolve()
    parameters = {"results_root": str(Path(results_root).resolve()), "out_dir": str(out_dir), "reference": reference}
    paths = [p for p in notebook_paths() if not only or p.stem in only]

    async def run() -> list[Path | BaseException]:
        jobs = (run_notebook(path, parameters, out_dir / "notebooks") for path in paths)
        return await asyncio.gather(*jobs, return_exceptions=True)

    with collected_once(results_root):  # the kernels inherit the snapshot's environment variable
        outcomes = asyncio.run(run())
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise NotebookFailed("\n\n".join(map(str, failures)))
    return outcomes


def _snapshot(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def _shown(path: Path) -> str:
    """A path relative to the working directory where possible (what a user typed), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-root", default="outputs")
    parser.add_argument("--out-dir", default=None, help="default: <results-root>/figures")
    parser.add_argument("--only", nargs="*", help="notebook names (without .py) to run")
    parser.add_argument("--reference", default=REFERENCE,
                        help=f"method the paired comparisons are made against (default: {REFERENCE})")
    args = parser.parse_args(argv)
    try:
        require_runs(Path(args.results_root).resolve())
    except NoRuns as err:
        sys.exit(f"make figures: {err}")
    out_dir = Path(args.out_dir or Path(args.results_root) / "figures").resolve()
    before = _snapshot(out_dir)
    root = Path(args.results_root).resolve()
    with collected_once(root):
        try:  # a reference asked for must have runs; where the default has none, nothing is paired (noted)
            if args.reference != REFERENCE:
                check_reference(collect(root), args.reference)
        except UnknownReference as err:
            print(f"make figures: {err}", file=sys.stderr)
            sys.exit(2)
        try:
            run_all(root, out_dir, args.only, args.reference)
        except NotebookFailed as err:
            sys.exit(str(err))
        index = write_index(root, out_dir)
        summary = summarize(root, out_dir)
    written = sorted(p for p, mtime in _snapshot(out_dir).items() if before.get(p) != mtime)
    print("\n".join(_shown(p) for p in written))
    print_summary(summary, index)


def print_summary(summary: RunSummary, index: Path) -> None:
    """After the file list: how many runs ended how, what the page warns about, where it is."""
    print(f"\nruns: {summary.status_text()}")
    print(f"warnings: {summary.warning_count}" + "".join(f"\n  {len(lines)} {category.lower()}"
                                                       for category, lines in summary.warnings.items()))
    print(f"report page: {_shown(index)}")


if __name__ == "__main__":
    main()
