"""What every registry of the suite (method kinds, architectures) does to find a name it lacks: import
the module a config names, and load the entry points of its group. One place, so each registry only says
what it accepts."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator

from adalora.trust import import_named_module


def entry_point_objects(group: str) -> Iterator[object]:
    """The objects of the installed entry points in ``group``; a broken one names itself.

    Called whenever a name is not (yet) registered, so a package installed after the first lookup is found
    too; an entry point already imported costs a dictionary lookup (``sys.modules``).
    """
    for entry in importlib.metadata.entry_points(group=group):
        try:
            yield entry.load()
        except Exception as err:  # noqa: BLE001 - a broken plug-in must name itself, not break the lookup
            raise ImportError(f"entry point {entry.name!r} = {entry.value!r} (group {group}) "
                              f"failed to load: {type(err).__name__}: {err}") from err


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
