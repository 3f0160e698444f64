"""What every registry of the suite (method kinds, architectures) does to find a name it lacks: import
the module a config names, and load the entry points of its group. One place, so each registry only says
what it accepts."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Iterator

from adalora.trust import import_named_module


def entry_point_objects(group: str) -> Iterator[object]:
    """The objects of the installed entry points in ``group``; a broken one names itself.

    Called whenever a name is not (yet) registered, so a package installed after the first lookup is found
    too; an entry point already imported costs a dictionary lookup (``sys.modules``).
    """
    for entry in _installed_entry_points(group):
        try:
            yield entry.load()
        except Exception as err:  # noqa: BLE001 - a broken plug-in must name itself, not break the lookup
            raise ImportError(f"entry point {entry.name!r} = {entry.value!r} (group {group}) "
                              f"failed to load: {type(err).__name__}: {err}") from err


_SCANNED: dict[str, tuple[tuple, tuple[importlib.metadata.EntryPoint, ...]]] = {}


def _installed_entry_points(group: str) -> tuple[importlib.metadata.EntryPoint, ...]:
    """``importlib.metadata.entry_points(group=group)``, read again whenever ``sys.path`` or a directory on it
    changed (installing or removing a package changes its directory): the rule Python's own import caches
    follow. Reading every installed distribution's metadata costs ~7 ms, and a yaml-only method row (a PEFT
    row: its name is not registered, its config's ``kind`` is) asked for it on every lookup by name, e.g.
    ``${selected_lr:...}`` on each job of a sweep."""
    stamp = tuple((path, _mtime(path)) for path in map(os.path.abspath, sys.path))  # '' is the cwd
    scanned = _SCANNED.get(group)
    if scanned is None or scanned[0] != stamp:
        scanned = _SCANNED[group] = (stamp, tuple(importlib.metadata.entry_points(group=group)))
    return scanned[1]


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def import_config_module(module: str | None, field: str, error: type[Exception]) -> None:
    """Import the user module a config's ``field`` names (through :mod:`adalora.trust`), so that what it
    registers is known; one that cannot be imported is an ``error`` saying how to make it importable."""
    if not module:
        return
    try:
        import_named_module(module, field)
    except ImportError as err:
        raise error(f"{field} {module!r} cannot be imported ({err}); put it on PYTHONPATH or install the package "
                    "that provides it") from err
