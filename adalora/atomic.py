"""Atomic file writes, shared by the method library (``MethodHandle.save``) and the harness (run records,
checkpoints, weights), so every file either is complete or is not there, and a full disk is named.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"  # every temp file is ``.<name>.<random>.tmp`` beside its target (see :func:`replacing`)


class NoSpaceLeft(OSError):
    """A write hit a full disk; the message says so and names the file that could not be written."""


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file beside ``path`` to write into; it replaces ``path`` when the block succeeds.

    Readers see the old file or the complete new one, never a truncated one. On any error
    (Ctrl-C included) the temp file is removed first: on a full disk that frees the space a
    failure record needs, and the error is re-raised as :class:`NoSpaceLeft` naming ``path``.
    The file gets the umask's permissions (``mkstemp`` makes 0600; a shared cluster needs more).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC and not isinstance(err, NoSpaceLeft):
            raise NoSpaceLeft(errno.ENOSPC, f"no space left on device while writing {path}") from err
        raise
