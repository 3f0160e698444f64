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

A build is staged: the notebooks and the page write into a fresh ``<out-dir>/.build-*`` folder, and
only when all of it succeeded are its files moved into ``<out-dir>``, the page last, and the files
the previous build wrote and this one did not (the figures of a task no longer in the results
root) removed. The files a build wrote are listed in ``<out-dir>/.make-figures-files``; nothing else
in the folder (a user's own ``notes.md``) is read, shown on the page, or removed. A failed build
leaves the previous one as it was. ``--only`` rebuilds some notebooks and keeps the others' files.
Kernels run in Python's UTF-8 mode (``PYTHONUTF8=1``), so every file a notebook writes is UTF-8
whatever the locale.

A results root that is missing or holds no run is an error (exit status 1) with a message,
checked before any kernel starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from analysis.collect import collect, collected_once
from analysis.index_page import INDEX, write_index
from analysis.paths import NoRuns, require_runs
from analysis.run_summary import RunSummary, summarize
from analysis.stats import REFERENCE
from analysis.tables import UnknownReference, check_reference

NOTEBOOK_DIR = Path(__file__).resolve().parent / "notebooks"
REPO_ROOT = NOTEBOOK_DIR.parents[1]
PARAMETERS_TAG = "parameters"
MANIFEST = ".make-figures-files"  # the files the last build wrote, relative to the figures folder
_STAGING_PREFIX = ".build-"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks; a terminal log should not


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook and carries the cell's error."""


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.py"))


def inject_parameters(notebook: nbformat.NotebookNode, parameters: dict[str, object]) -> nbformat.NotebookNode:
    """Insert ``name = value`` assignments after the cell tagged ``parameters``; returns the new cell."""
    index = next((i for i, cell in enumerate(notebook.cells)
                  if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError(f"no cell tagged {PARAMETERS_TAG!r}")
    cell = nbformat.v4.new_code_cell(_assignments(parameters), metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)
    return cell


def _assignments(parameters: dict[str, object]) -> str:
    return "\n".join(f"{name} = {value!r}" for name, value in parameters.items())


async def run_notebook(path: Path, parameters: dict[str, object], keep_dir: Path, timeout: int = 600,
                       shown: dict[str, object] | None = None) -> Path:
    """Execute one notebook; returns the executed ``.ipynb`` (written even when a cell fails).

    ``shown``: the parameters the kept ``.ipynb`` states (the figures folder the files end up in,
    not the staging folder the kernel wrote them to); by default ``parameters``.
    """
    notebook = jupytext.read(path)
    injected = inject_parameters(notebook, parameters)
    client = NotebookClient(notebook, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(REPO_ROOT)}})
    executed = keep_dir / f"{path.stem}.ipynb"
    keep_dir.mkdir(parents=True, exist_ok=True)
    kernel_env = {**os.environ, "PYTHONUTF8": "1"}  # a notebook's open() writes UTF-8 under any locale
    with (keep_dir / f"{path.stem}.log").open("w", encoding="utf-8") as log:
        try:
            await client.async_execute(stdout=log, stderr=log, env=kernel_env)
        except CellExecutionError as err:
            raise NotebookFailed(f"notebook {path.name} failed:\n{_ANSI.sub('', str(err))}") from err
        finally:
            injected.source = _assignments(shown or parameters)
            nbformat.write(notebook, executed)
    return executed


def run_all(results_root: str | Path, out_dir: str | Path, only: list[str] | None = None,
            reference: str = REFERENCE, shown_out_dir: str | Path | None = None) -> list[Path]:
    """Run every notebook (or those named in ``only``) concurrently, one kernel each.

    The notebooks are independent and mostly wait on imports, so running them side by side
    takes about as long as the slowest one. Every failure is reported, not just the first.
    ``reference`` is the method the tables' paired comparisons are made against. ``shown_out_dir``:
    where the files will live once a staged build is swapped in (what the kept notebooks say).
    """
    out_dir = Path(out_dir).resolve()
    parameters = {"results_root": str(Path(results_root).resolve()), "out_dir": str(out_dir), "reference": reference}
    shown = {**parameters, "out_dir": str(Path(shown_out_dir or out_dir).resolve())}
    paths = [p for p in notebook_paths() if not only or p.stem in only]

    async def run() -> list[Path | BaseException]:
        jobs = (run_notebook(path, parameters, out_dir / "notebooks", shown=shown) for path in paths)
        return await asyncio.gather(*jobs, return_exceptions=True)

    with collected_once(results_root):  # the kernels inherit the snapshot's environment variable
        outcomes = asyncio.run(run())
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise NotebookFailed("\n\n".join(map(str, failures)))
    return outcomes


# ---------------------------------------------------------------------------- staged builds
def previous_build(out_dir: Path) -> list[Path]:
    """The files the last build wrote (its manifest), as paths inside ``out_dir``.

    The manifest lies in a folder anyone may have copied from elsewhere, so it is data: an entry
    that is absolute, climbs out (``..``) or names a link is ignored, never deleted or copied.
    """
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        return []
    real = out_dir.resolve()
    inside = []
    for line in manifest.read_text(encoding="utf-8", errors="replace").splitlines():
        path = out_dir / line
        if line and not Path(line).is_absolute() and not path.is_symlink() and path.resolve().is_relative_to(real):
            inside.append(path)
    return inside


@contextmanager
def staged_build(out_dir: Path) -> Iterator[tuple[Path, list[Path]]]:
    """(staging folder, the files written): build into the staging folder; when the block succeeds its
    files replace the previous build's in ``out_dir`` (:func:`swap_in`) and the list is filled. When it
    fails (a notebook raised, Ctrl-C) the staging folder goes and ``out_dir`` is as it was."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out_dir))
    written: list[Path] = []
    try:
        yield staging, written
        written += swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def carry_over(out_dir: Path, staging: Path) -> None:
    """Copy the previous build's files that this build did not write into the staging folder, so a
    partial rebuild (``--only``) keeps the other notebooks' files and the page still shows them."""
    for path in previous_build(out_dir):
        target = staging / path.relative_to(out_dir)
        if path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def swap_in(staging: Path, out_dir: Path) -> list[Path]:
    """Move the staged files into ``out_dir`` (the page last), remove the previous build's files
    this build did not write, and record the new manifest; returns the files written there."""
    new = sorted((p.relative_to(staging) for p in staging.rglob("*") if p.is_file()), key=lambda r: r == Path(INDEX))
    old = previous_build(out_dir)
    for relative in new:
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)
    kept = {out_dir / relative for relative in new}
    for path in old:
        if path not in kept:
            path.unlink(missing_ok=True)
    manifest = out_dir / MANIFEST
    tmp = manifest.with_name(f"{MANIFEST}.tmp")
    tmp.write_text("".join(f"{relative.as_posix()}\n" for relative in new), encoding="utf-8")
    tmp.replace(manifest)
    return [*sorted(kept), manifest]


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
    root = Path(args.results_root).resolve()
    with collected_once(root):
        try:  # a reference asked for must have runs (checked before anything is written); where the
            # default has none, nothing is paired (noted)
            if args.reference != REFERENCE:
                check_reference(collect(root), args.reference)
        except UnknownReference as err:
            print(f"make figures: {err}", file=sys.stderr)
            sys.exit(2)
        with staged_build(out_dir) as (staging, written):
            try:
                run_all(root, staging, args.only, args.reference, shown_out_dir=out_dir)
            except NotebookFailed as err:
                sys.exit(str(err))
            if args.only:
                carry_over(out_dir, staging)
            write_index(root, staging)
            summary = summarize(root, staging)
    print("\n".join(_shown(p) for p in written))
    print_summary(summary, out_dir / INDEX)


def print_summary(summary: RunSummary, index: Path) -> None:
    """After the file list: how many runs ended how, what the page warns about, where it is."""
    print(f"\nruns: {summary.status_text()}")
    print(f"warnings: {summary.warning_count}" + "".join(f"\n  {len(lines)} {category.lower()}"
                                                       for category, lines in summary.warnings.items()))
    print(f"report page: {_shown(index)}")


if __name__ == "__main__":
    main()
