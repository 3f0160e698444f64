"""Parameter budgets: the paper's budget levels as data, its way of counting, and the count rule.

A budget level is a parameter count: :func:`budget_target` is LoRA at the level's ``lora_r`` on
the six weight types of the actual backbone. A method reaches it through its own size knob
(:func:`closest_knob`: the knob value whose count is closest, ties to the smaller). The paper's
methods keep the paper's knob values where the paper states them (the columns of
:class:`BudgetLevel`); docs/methods.md lists where those differ from the count rule.

The paper reports *adapter* parameters only: the task head (pooler + classifier, or the QA
head) is trained by every method but never counted, full fine-tuning counts the whole
model, and AdaLoRA counts the triplets it keeps at the end. ``count_parameters`` does this
once for every method, so the comparisons at "equal budget" share one accounting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from adalora.architectures import architecture_of, target_width

# The largest knob value the count rule tries before it gives up (a knob that never reaches the target).
MAX_KNOB = 4096


@dataclass(frozen=True)
class BudgetLevel:
    """One column of the paper's tables: the knob each method uses to meet it.

    ``None`` marks a method the paper never runs at that level (e.g. adapters on NLG).
    """

    name: str
    family: str
    label: str
    lora_r: int
    adalora_target_r: int
    adalora_init_r: int
    houlsby_bottleneck: int | None
    pfeiffer_bottleneck: int | None


def _levels(family: str, rows: Iterable[tuple]) -> dict[str, BudgetLevel]:
    return {row[0]: BudgetLevel(row[0], family, *row[1:]) for row in rows}


# GLUE (Table 1 + App. C.1: r̄(T) 2/4/8 with r_init 4/6/12; Table 7 adapter sizes).
# SQuAD (Table 9) and the GLUE ablations of Tables 4/5 use the "% of full FT" levels.
# NLG: Table 12 is a verbatim copy of Table 9 and does not fit BART-large's 192 matrices,
# so the ranks are derived from Table 3's percentages (reference notes §2.4): LoRA r
# 1/2/8/16; AdaLoRA r_init follows the official scripts where one exists (CNN/DM 4→2,
# XSum 12→8) and the paper's b(0) = 1.5·b(T) rule (rounded up) elsewhere.
BUDGET_LEVELS: dict[str, BudgetLevel] = {
    **_levels(
        "glue",
        [
            ("glue_0.3m", "0.3M", 2, 2, 4, 8, 16),
            ("glue_0.6m", "0.6M", 4, 4, 6, 16, 32),
            ("glue_1.2m", "1.2M", 8, 8, 12, 32, 64),
        ],
    ),
    **_levels(
        "qa",
        [
            ("qa_0.08", "0.08%", 1, 1, 2, 4, 8),
            ("qa_0.16", "0.16%", 2, 2, 4, 8, 16),
            ("qa_0.32", "0.32%", 4, 4, 6, 16, 32),
            ("qa_0.65", "0.65%", 8, 8, 12, 32, 64),
        ],
    ),
    **_levels(
        "nlg",
        [
            ("nlg_0.13", "0.13%", 1, 1, 2, None, None),
            ("nlg_0.26", "0.26%", 2, 2, 4, None, None),
            ("nlg_1.10", "1.10%", 8, 8, 12, None, None),
            ("nlg_2.20", "2.20%", 16, 16, 24, None, None),
        ],
    ),
}


def get_budget(name: str) -> BudgetLevel:
    try:
        return BUDGET_LEVELS[name]
    except KeyError:
        raise ValueError(f"unknown budget level {name!r}; known: {sorted(BUDGET_LEVELS)}") from None


def budget_target(model: nn.Module, level: BudgetLevel) -> int:
    """The level's trainable-parameter target on ``model``: LoRA at rank ``level.lora_r`` on the
    backbone's full target set (the paper's six weight types on its backbones), ``lora_r · Σ (d_in + d_out)``. Call it on the model before a method is applied."""
    arch = architecture_of(model)
    return level.lora_r * target_width(model, arch, arch.weight_types)


def closest_knob(count: Callable[[int], int], target: int, limit: int = MAX_KNOB) -> int:
    """The knob value 1, 2, ... whose ``count`` is closest to ``target``, ties to the smaller count.

    ``count`` must grow with the knob (a rank, a bottleneck width); the search stops at the first
    value past the target.
    """
    best: tuple[int, int, int] | None = None  # (distance, count, knob)
    for knob in range(1, limit + 1):
        c = count(knob)
        if best is None or (abs(c - target), c) < best[:2]:
            best = (abs(c - target), c, knob)
        if c >= target:
            return best[2]
    raise ValueError(f"no knob value up to {limit} reaches the budget target of {target} parameters")


def count_parameters(model: nn.Module, head_prefixes: Iterable[str]) -> dict[str, int]:
    """Trainable parameters the paper's way, plus the raw counts for reference.

    ``trainable_paper`` = trainable parameters outside the task head. A kind that keeps fewer
    ranks than it trains (AdaLoRA's pruned triplets) subtracts them through its own
    ``MethodHandle.pruned_parameters()`` hook: this function knows no kind.
    """
    heads = tuple(head_prefixes)
    total = trainable = head = 0
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # tied weights (BART's lm_head) count once
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            if name.startswith(heads):
                head += param.numel()
    return {"trainable_paper": trainable - head, "trainable_total": trainable, "head": head, "total": total}
