"""The paths the run commands (``experiments.evaluate``, ``experiments.export``) take and write.

- :func:`find_run`: the run a user means by a directory. A run directory is one with a
  ``result.json``; a directory above exactly one run (``outputs/adhoc/glue_rte``, a sweep
  with one job) means that run, and one above several is an error that lists them, so a
  mistyped path never reads as "status: None".
- :func:`staged_output`: a command writes its output folder beside ``--out`` and moves it in
  when complete, so a failure leaves nothing half-written; an ``--out`` that exists and is not
  an empty directory is refused (``overwrite`` replaces it), an existing file is an error, and
  the files get the umask's permissions (``adalora.atomic.apply_umask``); an ``--out`` that is a
  symlink or lies inside a run directory is refused, and a full disk is one line naming file and disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adalora.atomic import apply_umask, is_disk_full, no_space_left
from experiments.results import RESULT_FILE

_LISTED = 20


class RunPathError(ValueError):
    """A path does not name one run, or an output folder cannot be written; the message says why."""


def find_run(path: str | os.PathLike) -> Path:
    """``path`` if it holds a ``result.json``, else the one run directory below it."""
    path = Path(path)
    if not path.exists():
        raise RunPathError(f"{path} does not exist")
    if (path / RESULT_FILE).is_file():
        return path
    if not path.is_dir():
        raise RunPathError(f"{path} is a file; give a run directory (one holding {RESULT_FILE})")
    runs = sorted(p.parent for p in path.rglob(RESULT_FILE))
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise RunPathError(f"{path} holds no run: no {RESULT_FILE} in it or below it")
    shown = "\n  ".join(str(r) for r in runs[:_LISTED])
    more = f"\n  ... and {len(runs) - _LISTED} more" if len(runs) > _LISTED else ""
    raise RunPathError(f"{path} holds {len(runs)} runs; give one of them:\n  {shown}{more}")


def run_holding(path: Path) -> Path | None:
    """The run directory ``path`` is in or is (a folder up from it holding a ``result.json``), if any."""
    path = Path(os.path.abspath(path))
    return next((p for p in (path, *path.parents) if (p / RESULT_FILE).is_file()), None)


def check_output(out: Path, overwrite: bool, keep: Path | None = None) -> None:
    """Refuse an ``out`` that is a symlink, a file, inside a run directory, a non-empty directory (unless
    ``overwrite``), or holds ``keep``: replacing ``out`` must never delete a run or write through a link."""
    if out.is_symlink():
        raise RunPathError(f"--out {out} is a symlink (to {os.readlink(out)}); give the real directory path, "
                           "an export never writes through a link")
    inside = run_holding(out.resolve())
    if inside is not None:
        raise RunPathError(f"--out {out} is inside the run directory {inside}; a run directory holds only what "
                           "its run wrote: give a folder outside it")
    if out.exists() and not out.is_dir():
        raise RunPathError(f"--out {out} is an existing file; give a directory path (it is created)")
    if keep is not None and out.exists() and keep.resolve().is_relative_to(out.resolve()):
        raise RunPathError(f"--out {out} contains the run {keep}; writing there would replace it")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RunPathError(f"--out {out} exists and is not empty; choose a new directory, or pass --overwrite "
                           "to replace its contents")


@contextlib.contextmanager
def staged_output(out: str | os.PathLike, overwrite: bool = False, keep: Path | None = None) -> Iterator[Path]:
    """A fresh folder beside ``out`` to write into; on success it replaces ``out``, on failure it is removed.

    ``keep`` (the run being exported) must not be inside ``out``: replacing ``out`` would delete it.
    """
    out = Path(out)
    check_output(out, overwrite, keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield stage
        apply_umask(stage)
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    except BaseException as err:
        shutil.rmtree(stage, ignore_errors=True)
        if is_disk_full(err):
            raise no_space_left(_final_path(getattr(err, "filename", None), stage, out), err) from err
        raise


def _final_path(written: str | None, stage: Path, out: Path) -> Path:
    """Where a file being written in ``stage`` would have ended up (``out`` when the error names none)."""
    if not written:
        return out
    written = Path(os.fsdecode(written))
    return out / written.relative_to(stage) if written.is_relative_to(stage) else written


LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path, enabled: bool = True) -> Iterator[bool]:
    """An exclusive, non-blocking lock on ``run_dir/.lock``; yields whether it was acquired.

    Parallel launchers may start the same run twice (a sweep relaunched while the first is still running);
    the second job must not train into the same directory. The kernel drops the lock when its holder dies,
    so a killed job never leaves a stale lock. ``enabled=False`` (ranks other than 0) yields True.
    """
    import fcntl

    if not enabled:
        yield True
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
