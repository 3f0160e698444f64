"""A task family's typed config: the task yaml checked against a dataclass before anything loads.

A task config arrives untyped from Hydra or a hand-written dict; a misspelt key
(``max_seq_lenght: 256``) would otherwise be ignored and the run would train with the default.
Every family declares its keys as a dataclass (``Task.config_cls``, a subclass of
:class:`TaskConfig`); :func:`parse_task_config` refuses an unknown key naming the nearest valid
one, and a value of the wrong type naming the key, with the method settings' type rules
(``adalora.methods.settings``: ints are not bools, lists become tuples).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from adalora.methods.settings import _coerce, _type_name, type_hints


class TaskConfigError(ValueError):
    """A task config that cannot be used; the message names the key and the fix."""


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The keys every family's config has (``conf/task/*.yaml``).

    ``hparams`` (per-method training hyperparameters) and ``budget_families`` (which budget
    families the task takes, narrowing or widening the family's own) are read by the harness;
    ``module`` names the user module that registers the family (``task.module``).
    """

    family: str
    name: str | None = None
    module: str | None = None
    dataset: Mapping | None = None
    train_split: str = "train"
    eval_splits: tuple[str, ...] | None = None
    main_metric: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    heldout: Mapping | None = None
    budget_families: tuple[str, ...] | None = None
    hparams: Mapping | None = None

    def __post_init__(self) -> None:
        """Ranges where the fields are declared: every integer key of a task config, this class's and each
        family's, is a count or a length (samples, labels, tokens, beams), so it must be positive."""
        hints = type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if int in _types(hints[field.name]) and value is not None and not value >= 1:
                raise TaskConfigError(f"task.{field.name} must be a positive integer, got {value!r}")


def _types(hint: Any) -> tuple[Any, ...]:
    """The types a hint allows (``int | None`` -> (int, NoneType))."""
    return typing.get_args(hint) or (hint,)


def parse_task_config(config_cls: type[TaskConfig], cfg: Mapping[str, Any], family: str) -> TaskConfig:
    """``config_cls`` from the task config ``cfg``, every key known and of its declared type."""
    hints = type_hints(config_cls)
    known = [f.name for f in dataclasses.fields(config_cls)]
    values: dict[str, Any] = {}
    for key, value in cfg.items():
        if key not in hints:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean task.{near[0]}?)" if near else ""
            raise TaskConfigError(f"task.{key} is not a valid key of task family {family!r}{hint}; "
                                  f"valid keys: {sorted(known)}")
        ok, out = _coerce(value, hints[key])
        if not ok:
            raise TaskConfigError(f"task.{key} must be {_type_name(hints[key])}, got {value!r} "
                                  f"({type(value).__name__}) (family {family!r})")
        values[key] = out
    try:
        return config_cls(**values)
    except TypeError as err:  # a required key of the family is missing
        raise TaskConfigError(f"task (family {family!r}): {err}; set it in the task config") from err
