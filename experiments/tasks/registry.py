"""Where task families are registered, and ``build_task``, the one way a task config becomes a Task.

A family comes from three places, as method kinds do (``adalora.methods.registry``), none of which
needs an edit of the suite: the built-in modules of this package (glue, squad, summarization), a
task config's ``module:`` (imported through :func:`adalora.trust.import_named_module` before the
lookup, so a file on ``PYTHONPATH`` that calls :func:`register_task_family` registers its family),
and installed packages exposing an entry point in the group ``adalora.task_families`` (loaded the
first time a name is not found). docs/tasks.md walks through one complete example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from adalora.plugins import entry_point_objects, import_config_module
from experiments.tasks.config import TaskConfigError

if TYPE_CHECKING:
    from experiments.tasks.base import Task

ENTRY_POINT_GROUP = "adalora.task_families"
DOCS = "docs/tasks.md"

_FAMILIES: dict[str, type[Task]] = {}

F = TypeVar("F", bound="type[Task]")


def register_task_family(cls: F) -> F:
    """Class decorator: register a :class:`~experiments.tasks.base.Task` subclass under ``cls.family``.
    Registering the same class twice is harmless; another class under a taken name is an error."""
    from experiments.tasks.base import Task

    if not (isinstance(cls, type) and issubclass(cls, Task)) or not getattr(cls, "family", None):
        raise TypeError(f"{cls!r} must be a Task subclass with a non-empty `family`")
    missing = [a for a in ("head", "budget_families", "peft_task_type") if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"task family {cls.family!r} ({cls.__module__}.{cls.__qualname__}) must set {missing}; "
                        f"see {DOCS}")
    known = _FAMILIES.get(cls.family)
    if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"task family {cls.family!r} is already registered by {known.__module__}.{known.__qualname__}")
    _FAMILIES[cls.family] = cls
    return cls


def _load_entry_points() -> None:
    """Import the ``adalora.task_families`` entry points; one that returns a family class registers it."""
    from experiments.tasks.base import Task

    for loaded in entry_point_objects(ENTRY_POINT_GROUP):
        if isinstance(loaded, type) and issubclass(loaded, Task):
            register_task_family(loaded)


def registered_families() -> list[str]:
    """Names of the registered families (entry points included), sorted."""
    _load_entry_points()
    return sorted(_FAMILIES)


def import_family_module(module: str | None) -> None:
    """Import a task config's ``module:`` so that the families it registers are known."""
    import_config_module(None if module is None else str(module), "task.module", TaskConfigError)


def get_family(name: str, module: str | None = None) -> type[Task]:
    """The registered family class (after importing ``module``, a task config's ``module:``); an
    unknown name is an error listing the registered ones and saying how to add one."""
    import_family_module(module)
    if name not in _FAMILIES:
        _load_entry_points()
    if name not in _FAMILIES:
        raise TaskConfigError(f"task.family {name!r} is not registered; registered families: "
                              f"{registered_families()} (a family of your own: task.module=<your module>, or an "
                              f"entry point in group {ENTRY_POINT_GROUP!r}; see {DOCS})")
    return _FAMILIES[name]


def family_of(task_cfg: Mapping[str, Any]) -> type[Task]:
    """The family class a task config selects (its ``family:``, after its ``module:``)."""
    return get_family(str(task_cfg.get("family")), task_cfg.get("module"))


def build_task(task_cfg: Mapping[str, Any]) -> Task:
    """The ``Task`` of a task config, its typed config checked (``experiments.tasks.config``)."""
    return family_of(task_cfg)(task_cfg)


def peft_task_type_for_head(head: str) -> str:
    """PEFT's ``task_type`` of an adapter on a model with ``head``: what the families training that
    head declare (``Task.peft_task_type``); the exporter of a run knows its head, not its family."""
    registered_families()
    types = {cls.peft_task_type for cls in _FAMILIES.values() if cls.head == head}
    if len(types) != 1:
        raise TaskConfigError(f"no single PEFT task type for head {head!r}: the registered families declare "
                              f"{sorted(types) or 'none'}")
    return types.pop()
