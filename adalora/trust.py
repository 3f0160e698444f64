"""The trust boundary: the one place where a name in a config becomes imported code.

Code is imported only from what the user states: the command line, their own config, installed
entry points. A config that was *read from disk* (a ``result.json``, the ``spec`` in a weights
file, a saved adapter's metadata, a Trainer checkpoint, a selection file) is data: a module it
names is imported only if it is already imported (the user imported or registered it in this
process), registered as named by the user's own configuration (:func:`register`: the harness
registers what its shipped ``conf/`` names), or the user allowed it explicitly with
``ADALORA_TRUST_MODULES=mod1,mod2``.

Readers of files mark what they read with :func:`reading` (a context manager); every import of a
name taken from a config goes through :func:`import_named_module`, which refuses inside such a
context. Tests plant a payload module and assert its marker file is never written.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

TRUST_ENV = "ADALORA_TRUST_MODULES"

_registered: set[str] = set()
_source: contextvars.ContextVar[str | None] = contextvars.ContextVar("adalora_untrusted_source", default=None)


class UntrustedCode(RuntimeError):
    """A file read from disk names code that the user has not allowed; nothing was imported."""


@contextlib.contextmanager
def reading(source: str) -> Iterator[None]:
    """Everything resolved inside this block comes from ``source`` (a file path, said in errors)."""
    token = _source.set(str(source))
    try:
        yield
    finally:
        _source.reset(token)


def untrusted_source() -> str | None:
    """The file being read, when the current resolution comes from disk; None for the user's own config."""
    return _source.get()


def register(*modules: str) -> None:
    """Trust ``modules`` as the user's own: names their configuration states (not a file read from a run)."""
    _registered.update(modules)


def allowed_modules() -> set[str]:
    """Modules the user allowed: registered (:func:`register`) or explicitly (``ADALORA_TRUST_MODULES``)."""
    return _registered | {m.strip() for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip()}


def import_named_module(module: str, what: str) -> ModuleType:
    """Import ``module`` named by a config's ``what`` (e.g. ``method.module``), unless the config came
    from disk and the user has not allowed it. ``ImportError`` propagates for the caller to word."""
    source = untrusted_source()
    if source is not None and module not in sys.modules and module not in allowed_modules():
        raise UntrustedCode(
            f"{source} names {what}={module!r}, which is not imported in this process; reading a file never "
            f"imports code. If you trust it: import {module} yourself first, or set {TRUST_ENV}={module}"
        )
    return importlib.import_module(module)
