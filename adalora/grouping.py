"""Grouping by a key, the step behind every batched computation of AdaLoRA.

The fused products (``adalora.fused``), the penalty (``adalora.regularizers``) and the allocator
(``adalora.allocator``) each stack the tensors of one shape to launch one kernel per group instead
of one per matrix; they differ only in what makes two matrices stackable.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")


def group_by(items: Iterable[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """``items`` grouped by ``key``: groups in the order their first item appears, items in input
    order within a group, so that stacking a group and splitting it back are both deterministic."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())
