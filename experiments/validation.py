"""The run's seed and run-path names, checked before anything is created on disk, each problem naming its key.

(The trainer's ranges are declared on the ``TrainSettings`` fields themselves: ``experiments.training``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.training import is_int

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
    if not (is_int(seed) and 0 <= seed <= SEED_MAX):
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
