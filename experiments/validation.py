"""Trainer settings checked before any model is built, each problem naming its ``trainer.*`` key.

Without these checks a bad value fails late and obscurely, or worse, not at all:
``max_steps=0`` silently fell back to epochs, ``epochs=0`` trained one step and reported
success, ``batch_size=0`` ended in a ZeroDivisionError after the model was loaded.
"""

from __future__ import annotations

import math
from pathlib import Path
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


SEED_MAX = 2**32 - 1  # numpy's seeds: np.random.seed rejects anything outside 0..2**32-1
# The configuration values that name a directory of the run path (config.yaml's run_dir).
PATH_KEYS = ("sweep_name", "task.name", "method.name", "budget.name")


_NAME_MAX = 255  # bytes in one directory name (ext4, xfs, apfs)


def _path_component_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if value in (".", "..") or any(c in value for c in "/\\\0"):
        return "must be one directory name (no '/', '\\', NUL, '.' or '..'), as it names a directory under output_root"
    if len(value.encode()) > _NAME_MAX:
        return f"is longer than {_NAME_MAX} bytes, the longest directory name file systems allow; shorten it"
    return None


def run_input_problems(cfg: Any) -> list[str]:
    """Every problem of the run's seed and run-path names, each as ``<key>=<value>: <what it must be>``.

    Checked before anything is created: a ``seed=abc`` must not leave a ``seed=abc/`` directory,
    and ``sweep_name=../../x`` must not write outside ``output_root``.
    """
    problems = []
    seed = cfg.get("seed")
    if not (_is_int(seed) and 0 <= seed <= SEED_MAX):
        problems.append(f"seed={seed!r}: must be an integer in 0..{SEED_MAX} (numpy's seed range)")
    for key in PATH_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = cfg.get(parent) if parent else cfg
        value = node.get(leaf) if node is not None else None
        problem = _path_component_problem(value)
        if problem:
            problems.append(f"{key}={value!r}: {problem}")
    if not problems:
        root, run_dir = Path(str(cfg.output_root)).resolve(), Path(str(cfg.run_dir)).resolve()
        if not run_dir.is_relative_to(root):
            problems.append(f"run_dir={str(cfg.run_dir)!r}: must lie under output_root={str(cfg.output_root)!r}")
        long = [p for p in run_dir.parts if len(p.encode()) > _NAME_MAX]
        if long:
            problems.append(f"run_dir: the directory name {long[0][:60]!r}... is longer than {_NAME_MAX} bytes; "
                            "shorten the overrides or values that name it")
    return problems
