"""Typed, eager validation of a method's settings dataclass.

A Hydra config or a hand-written dict arrives untyped: ``init_r=4.5`` or ``init_r=abc`` would
otherwise reach a layer constructor (or worse, train with a silently truncated rank). Every
kind's settings are a dataclass whose annotations are the contract; :func:`build_settings` checks
each value against its annotation and names the key in the error, before any layer is built.
Ranges are each kind's own business (its ``__post_init__``), with :func:`require` for the message.
"""

from __future__ import annotations

import difflib
import functools
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


@functools.cache
def type_hints(settings_cls: type) -> Mapping[str, Any]:
    """``typing.get_type_hints`` of a settings or config dataclass, evaluated once per class (read-only): it
    evaluates every annotation string again on each call, and a decoder task checks its config and each eval
    set's every time a run or a sweep job is resolved (a third of resolving a commonsense job)."""
    return types.MappingProxyType(typing.get_type_hints(settings_cls))


def nearest_key(key: str, valid: Any, prefix: str) -> str:
    """`` (<prefix>.<key>: did you mean <prefix>.<nearest>?)`` for the closest valid key, else empty:
    a typo names its fix."""
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f" ({prefix}.{key}: did you mean {prefix}.{close[0]}?)" if close else ""


def checked_values(settings_cls: type, values: Mapping[str, Any], label: str, prefix: str = "method") -> dict[str, Any]:
    """``values`` with each checked against its annotation (unknown keys and wrong types are
    :class:`MethodConfigError` naming the key as ``<prefix>.<key>`` and, for a typo, the nearest valid
    one); required keys may still be missing, so a config can be checked before a budget level has set
    its size knob from the model. Task, model and trainer configs go through it too
    (``experiments/spec.py``)."""
    hints = type_hints(settings_cls)
    declared = {f.name for f in fields(settings_cls)}
    unknown = sorted(set(values) - declared)
    if unknown:
        hint = nearest_key(unknown[0], declared, prefix)
        raise MethodConfigError(f"{label} has unknown key(s) {unknown}{hint}; "
                                f"allowed: {sorted(declared)}")
    checked = {}
    for key, value in values.items():
        ok, out = _coerce(value, hints[key])
        if not ok:
            raise MethodConfigError(f"{prefix}.{key} must be {_type_name(hints[key])}, got {value!r} "
                                    f"({type(value).__name__}) for {label}")
        checked[key] = out
    return checked


def missing_keys(settings_cls: type, values: Mapping[str, Any]) -> list[str]:
    """The required fields of ``settings_cls`` that ``values`` leaves unset."""
    return sorted(f.name for f in fields(settings_cls)
                  if f.name not in values and f.default is MISSING and f.default_factory is MISSING)


def build_settings(settings_cls: type, values: Mapping[str, Any], label: str) -> Any:
    """``settings_cls(**values)`` with every value checked against its annotation.

    ``label`` names the method in messages (``method 'lora' (lora)``). Unknown keys, missing
    required keys and values of the wrong type are :class:`MethodConfigError` naming the key.
    """
    checked = checked_values(settings_cls, values, label)
    missing = missing_keys(settings_cls, values)
    if missing:
        raise MethodConfigError(f"{label} is missing required key(s) {missing} (set them in the method config, "
                                "or run with a budget level that sets the size knob)")
    return settings_cls(**checked)


def require(condition: bool, key: str, what: str, value: Any) -> None:
    """Raise the range error of a settings field: ``method.<key> must be <what>, got <value>``."""
    if not condition:
        raise MethodConfigError(f"method.{key} must be {what}, got {value!r}")
