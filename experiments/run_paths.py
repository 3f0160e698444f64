"""The paths the run commands (``experiments.evaluate``, ``experiments.export``) take and write.

- :func:`find_run`: the run a user means by a directory. A run directory is one with a
  ``result.json``; a directory above exactly one run (``outputs/adhoc/glue_rte``, a sweep
  with one job) means that run, and one above several is an error that lists them, so a
  mistyped path never reads as "status: None".
- :func:`staged_output`: a command writes its output folder beside ``--out`` and moves it in
  when complete, so a failure leaves nothing half-written; an ``--out`` that exists and is not
  an empty directory is refused (``overwrite`` replaces it), an existing file is an error, and
  the files get the umask's permissions (``safetensors`` and ``mkdtemp`` create 0600/0700).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adalora.atomic import current_umask
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


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything in it the permissions a plain ``open``/``mkdir`` would."""
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(folder) / name, 0o666 & ~mask)


def check_output(out: Path, overwrite: bool, keep: Path | None = None) -> None:
    """Refuse an ``out`` that is a file, a non-empty directory (unless ``overwrite``), or holds ``keep``."""
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
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


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
