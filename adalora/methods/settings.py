"""Typed, eager validation of a method's settings dataclass.

A Hydra config or a hand-written dict arrives untyped: ``init_r=4.5`` or ``init_r=abc`` would
otherwise reach a layer constructor (or worse, train with a silently truncated rank). Every
kind's settings are a dataclass whose annotations are the contract; :func:`build_settings` checks
each value against its annotation and names the key in the error, before any layer is built.
Ranges are each kind's own business (its ``__post_init__``), with :func:`require` for the message.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any


class MethodConfigError(ValueError):
    """A method config that cannot be applied; the message names the key and what it must be."""


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an int", float: "a number", str: "a string", bool: "true/false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits ``tp``, the value to store); lists become tuples, nothing else changes."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:  # bool is an int subclass: `r: true` is a mistake, not rank 1
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, Sequence):
            return False, value
        item_tp = typing.get_args(tp)[0]
        items = [_coerce(v, item_tp) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    return isinstance(value, tp), value


def build_settings(settings_cls: type, values: Mapping[str, Any], label: str) -> Any:
    """``settings_cls(**values)`` with every value checked against its annotation.

    ``label`` names the method in messages (``method 'lora' (lora)``). Unknown keys, missing
    required keys and values of the wrong type are :class:`MethodConfigError` naming the key.
    """
    hints = typing.get_type_hints(settings_cls)
    declared = {f.name: f for f in fields(settings_cls)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise MethodConfigError(f"{label} has unknown key(s) {unknown}; allowed: {sorted(declared)}")
    missing = sorted(n for n, f in declared.items()
                     if n not in values and f.default is MISSING and f.default_factory is MISSING)
    if missing:
        raise MethodConfigError(f"{label} is missing required key(s) {missing} (set them in the method config, "
                                "or run with a budget level that sets the size knob)")
    checked = {}
    for key, value in values.items():
        ok, out = _coerce(value, hints[key])
        if not ok:
            raise MethodConfigError(f"method.{key} must be {_type_name(hints[key])}, got {value!r} "
                                    f"({type(value).__name__}) for {label}")
        checked[key] = out
    return settings_cls(**checked)


def require(condition: bool, key: str, what: str, value: Any) -> None:
    """Raise the range error of a settings field: ``method.<key> must be <what>, got <value>``."""
    if not condition:
        raise MethodConfigError(f"method.{key} must be {what}, got {value!r}")
