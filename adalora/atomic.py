"""Atomic file writes, shared by the method library (``MethodHandle.save``) and the harness (run records,
checkpoints, weights, PEFT adapter folders, exports), so every file either is complete or is not there,
a full disk is named, and what is written gets the permissions of the umask (a teammate on a shared
cluster must be able to read a run: ``mkstemp``/``mkdtemp`` and safetensors create 0600/0700).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_ENOSPC_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"
TEMP_SUFFIX = ".tmp"  # every temp file is ``.<name>.<random>.tmp`` beside its target (see :func:`replacing`)


class NoSpaceLeft(OSError):
    """A write hit a full disk; the message says so and names the file that could not be written."""


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(root: str | os.PathLike) -> None:
    """Give ``root`` (a file, or a folder and everything in it) the permissions a plain ``open``/``mkdir``
    would: writers that create 0600/0700 (``mkdtemp``, safetensors, ``save_pretrained``) are corrected here."""
    mask = current_umask()
    root = Path(root)
    if not root.is_dir():
        os.chmod(root, 0o666 & ~mask)
        return
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(folder) / name, 0o666 & ~mask)


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the disk ``path`` is (or would be) on: what a "disk full" message names."""
    path = Path(os.path.abspath(path))
    while not path.exists() or not os.path.ismount(path):
        if path.parent == path:
            break
        path = path.parent
    return path


def no_space_left(path: str | os.PathLike, err: BaseException) -> NoSpaceLeft:
    """The :class:`NoSpaceLeft` for ``err`` (ENOSPC) while writing ``path``: names the file and the disk."""
    return NoSpaceLeft(errno.ENOSPC, f"no space left on device while writing {path} (the disk mounted at "
                                     f"{mount_point(path)}): free space there, or write somewhere else")


def is_disk_full(err: BaseException) -> bool:
    """A full disk not yet worded as :class:`NoSpaceLeft` (so that wrapping happens once): an ENOSPC
    ``OSError``, or a writer's own error that only says so in its text (safetensors raises
    ``SafetensorError: ... No space left on device (os error 28)``)."""
    if isinstance(err, NoSpaceLeft):
        return False
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno == errno.ENOSPC
    return isinstance(err, Exception) and _ENOSPC_TEXT in str(err)



@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file beside ``path`` to write into; it replaces ``path`` when the block succeeds.

    Readers see the old file or the complete new one, never a truncated one. On any error
    (Ctrl-C included) the temp file is removed first: on a full disk that frees the space a
    failure record needs, and the error is re-raised as :class:`NoSpaceLeft` naming ``path``.
    The file gets the umask's permissions (``mkstemp`` makes 0600, and a writer that recreates
    the file, as safetensors does, makes 0600 again: the mode is set after the block).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.close(fd)
        yield Path(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise no_space_left(path, err) from err
        raise
