"""The validation split that ``protocol=heldout`` carves from a task's training split.

Choosing the checkpoint on the split one reports inflates the reported number (Chen et al.,
EMNLP 2022); the held-out protocol therefore selects on rows taken out of the training data
and reports the dev split once. The rows it takes are a pure function of the training rows and
the task's ``heldout:`` block, never of the run's seed, method or budget: every run of a task
selects on the same rows and trains on the same rest, so their numbers stay comparable.

Rows that belong together (SQuAD's questions on one article) are held out together
(``group_column``): otherwise the validation split would share contexts with the training rows
and score memorised passages.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import datasets

# The carved split's name in ``Task.load()``; no hub or fixture data set has a split of this name.
HELDOUT_SPLIT = "heldout_validation"
_KEYS = ("fraction", "max_examples", "seed")


@dataclass(frozen=True)
class HeldoutSpec:
    """How much of the training split to hold out: ``fraction`` of its rows, at most ``max_examples``
    (None: no cap), drawn with ``seed`` (fixed per task, independent of the run's seed)."""

    fraction: float
    max_examples: int | None = None
    seed: int = 0

    @classmethod
    def from_config(cls, value: object, task_name: str) -> HeldoutSpec:
        """The spec from a task config's ``heldout:`` block; a bad block names the key and the fix."""
        where = f"task {task_name!r}: task.heldout"
        if value is None:
            raise ValueError(f"{where} is not set, and protocol=heldout needs it: add e.g. "
                             "`heldout: {fraction: 0.1, max_examples: 2000}` to the task config")
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping like {{fraction: 0.1, max_examples: 2000}}, got {value!r}")
        unknown = sorted(set(value) - set(_KEYS))
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}; known: {list(_KEYS)}")
        fraction, max_examples, seed = value.get("fraction"), value.get("max_examples"), value.get("seed", 0)
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
            raise ValueError(f"{where}.fraction must be a number in (0, 1), got {fraction!r}")
        if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                         or max_examples < 1):
            raise ValueError(f"{where}.max_examples must be a positive integer or null, got {max_examples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{where}.seed must be an integer, got {seed!r}")
        return cls(float(fraction), max_examples, seed)

    def size(self, n_rows: int) -> int:
        """Rows to hold out of ``n_rows``: at least one, ``fraction`` of them, at most ``max_examples``."""
        target = max(1, math.floor(self.fraction * n_rows))
        return target if self.max_examples is None else min(target, self.max_examples)


def heldout_rows(groups: Sequence[Hashable], spec: HeldoutSpec) -> list[int]:
    """Sorted indices of the held-out rows, given each row's group (its own index when rows stand alone).

    Groups are shuffled with ``spec.seed`` and taken whole until the held-out rows reach
    :meth:`HeldoutSpec.size`; at least one group is left to train on.
    """
    n_rows = len(groups)
    members: dict[Hashable, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(group, []).append(row)
    if len(members) < 2:
        raise ValueError(f"cannot hold out rows of a training split with {len(members)} group(s) of rows: "
                         "at least one must stay for training")
    order = list(members)
    target = spec.size(n_rows)
    taken: list[int] = []
    for index in np.random.default_rng(spec.seed).permutation(len(order))[:-1]:
        taken += members[order[index]]
        if len(taken) >= target:
            break
    return sorted(taken)


def carve(
    train: datasets.Dataset, spec: HeldoutSpec, group_column: str | None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(the rows left to train on, the held-out validation rows), both in the training split's order."""
    if group_column is None:
        groups: Sequence[Hashable] = range(len(train))
    elif group_column not in train.column_names:
        raise ValueError(f"protocol=heldout holds out whole '{group_column}' groups, but the training split "
                         f"has no '{group_column}' column (columns: {train.column_names}); add it to the data")
    else:
        groups = train[group_column]
    held = heldout_rows(groups, spec)
    held_set = set(held)
    rest = [row for row in range(len(train)) if row not in held_set]
    return train.select(rest), train.select(held)
