"""Trainer settings checked before any model is built, each problem naming its ``trainer.*`` key.

Without these checks a bad value fails late and obscurely, or worse, not at all:
``max_steps=0`` silently fell back to epochs, ``epochs=0`` trained one step and reported
success, ``batch_size=0`` ended in a ZeroDivisionError after the model was loaded.
"""

from __future__ import annotations

import math
from typing import Any

from experiments.training import TrainSettings

_POSITIVE_INTS = ("batch_size", "eval_batch_size", "grad_accum", "log_every")
_OPTIONAL_POSITIVE_INTS = ("max_steps", "eval_every", "checkpoint_every")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def train_settings_problems(settings: TrainSettings) -> list[str]:
    """Every problem of ``settings`` as ``trainer.<key>=<value>: <what it must be>``; empty when valid."""
    s = settings
    problems = []

    def bad(key: str, expected: str) -> None:
        problems.append(f"trainer.{key}={getattr(s, key)!r}: {expected}")

    for key in _POSITIVE_INTS:
        if not (_is_int(getattr(s, key)) and getattr(s, key) >= 1):
            bad(key, "must be a positive integer")
    for key in _OPTIONAL_POSITIVE_INTS:
        value = getattr(s, key)
        if value is not None and not (_is_int(value) and value >= 1):
            hint = " (null trains for trainer.epochs instead)" if key == "max_steps" else " or null"
            bad(key, f"must be a positive integer{hint}")
    if s.max_steps is None and not (_is_number(s.epochs) and s.epochs > 0):
        bad("epochs", "must be a number > 0 (or set trainer.max_steps)")
    if not (_is_number(s.lr) and s.lr > 0):
        bad("lr", "must be a finite number > 0")
    if not (_is_int(s.warmup_steps) and s.warmup_steps >= 0):
        bad("warmup_steps", "must be an integer >= 0")
    if not (_is_number(s.warmup_ratio) and 0 <= s.warmup_ratio < 1):
        bad("warmup_ratio", "must be a number in [0, 1)")
    if not (_is_number(s.weight_decay) and s.weight_decay >= 0):
        bad("weight_decay", "must be a number >= 0")
    if s.max_grad_norm is not None and not (_is_number(s.max_grad_norm) and s.max_grad_norm >= 0):
        bad("max_grad_norm", "must be a number >= 0 (0 or null: no clipping)")
    if not (_is_number(s.adam_eps) and s.adam_eps > 0):
        bad("adam_eps", "must be a number > 0")
    return problems
