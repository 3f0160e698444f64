"""AdaLoRA's rank allocator: importance scores, cubic budget schedule, global masking.

This follows the official ``RankAllocator`` (loralib ``adalora.py``), which produced the
paper's numbers, wherever the paper's text differs:

* schedule numerator ``t - t_i`` (Eq. 14 prints ``t - t_i - t_f``), ``int()`` floor;
* ``update_and_mask`` runs *after* ``optimizer.step()``, so the sensitivity is
  ``|p_{t+1} · g_t|``; scores freeze from step ``T - t_f`` on;
* one global ``kthvalue`` threshold over all triplets of all matrices, ties pruned;
* only Λ (``lora_E``) is zeroed, in place; A, B and the optimiser state are kept, so a
  pruned triplet can come back between two masking events of the decrease phase.

Modules whose ``lora_E`` is frozen (``SVDLinear(train_lambda=False)``: LoRA doublets behind a
fixed gate, the "Prune LoRA" ablation) take the same path: E has no gradient, so its
importance stays 0 and S_i = mean_j s(A_ij) + mean_j s(B_ji); a mask sets the gate to 1 for
kept and 0 for pruned doublets, so the gate can reopen exactly as a pruned λ can regrow.

The EMAs of one kind (A, Λ or B) of all matrices of one shape are one stacked tensor, so a step
stacks the parameters and gradients of each such group and updates every EMA with eight
multi-tensor ``torch._foreach_*`` calls over a handful of tensors: on a GPU the host work per
call no longer grows with the number of matrices (it was three tensors per matrix, and measured
proportional to them), and every element sees the same arithmetic as before, so the EMAs are
bit-identical. A mask
(every ΔT steps) is the triplet scores per shape group, one ``cat``, one global ``kthvalue``, one comparison
and one multi-tensor multiply of every λ by its 0/1 keep factors (in the final phase, which masks
every step with a frozen pattern, only that multiply). Nothing synchronises host and device, and the EMAs follow the
parameters when the model is moved after the allocator was built (``accelerate.prepare``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adalora.grouping import group_by

IMPORTANCE_METRICS = ("sensitivity_uncertainty", "sensitivity", "magnitude")
_KINDS = ("lora_A", "lora_E", "lora_B")


class RankAllocator:
    """Allocates a global rank budget across AdaLoRA's ``SVDLinear`` modules.

    :param modules: name → module with ``lora_A`` (r×d_in), ``lora_E`` (r×1), ``lora_B`` (d_out×r).
    :param target_r: average final rank r̄(T); the final budget is ``b(T) = target_r · n``.
    :param init_warmup: t_i, steps trained at the full budget b(0) before pruning starts.
    :param final_warmup: t_f, steps trained at the final budget with a frozen pattern.
    :param mask_interval: ΔT, mask every ΔT steps during the budget decrease.
    :param importance: ``sensitivity_uncertainty`` (the paper, s = Ī·Ū), ``sensitivity``
        (s = Ī, Table 4 ablation) or ``magnitude`` (S_i = |λ_i|, Table 4 ablation).
    :param total_step: T, the number of optimiser steps; may be set later with
        :meth:`set_total_step` once the data loader is known.
    :param target_total_rank: b(T) directly, overriding ``target_r · n`` (official option).
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        target_r: int,
        init_warmup: int,
        final_warmup: int,
        mask_interval: int,
        beta1: float = 0.85,
        beta2: float = 0.85,
        importance: str = "sensitivity_uncertainty",
        total_step: int | None = None,
        target_total_rank: int | None = None,
    ):
        if not modules:
            raise ValueError("RankAllocator needs at least one SVDLinear module")
        for key, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 < beta < 1.0:
                raise ValueError(f"{key} must lie in (0, 1), got {beta}")
        if importance not in IMPORTANCE_METRICS:
            raise ValueError(f"importance must be one of {IMPORTANCE_METRICS}, got {importance!r}")
        if mask_interval < 1:
            raise ValueError(f"mask_interval (deltaT) must be >= 1, got {mask_interval}")
        if init_warmup < 0 or final_warmup < 0:
            raise ValueError(f"tinit and tfinal must be >= 0, got tinit={init_warmup}, tfinal={final_warmup}")
        self.names = sorted(modules)
        self.modules = [modules[n] for n in self.names]
        if importance == "magnitude" and any(not m.lora_E.requires_grad for m in self.modules):
            raise ValueError("importance='magnitude' ranks by |λ|, which needs a trained λ (lora_E), not a fixed gate")
        init_ranks = [m.lora_E.shape[0] for m in self.modules]
        if target_total_rank is None and any(target_r > r for r in init_ranks):
            raise ValueError(f"target_r ({target_r}) must be <= init_r ({min(init_ranks)})")
        self.init_budget = sum(init_ranks)
        self.target_budget = target_total_rank if target_total_rank is not None else target_r * len(self.modules)
        if not 0 <= self.target_budget <= self.init_budget:
            raise ValueError(f"target budget {self.target_budget} must lie in [0, b(0)={self.init_budget}]")
        self.init_warmup = init_warmup
        self.final_warmup = final_warmup
        self.mask_interval = mask_interval
        self.beta1 = beta1
        self.beta2 = beta2
        self.importance = importance
        self.total_step: int | None = None
        self.runs = 0  # update_and_mask calls: the record's proof that allocation ran
        if total_step is not None:
            self.set_total_step(total_step)
        self._ranks = init_ranks
        self._final_mask: list[torch.Tensor] | None = None
        self._final_keep: list[torch.Tensor] | None = None  # the final mask as 0/1 factors (see _apply)
        self._last_mask: list[torch.Tensor] | None = None
        self._pattern_of: list[torch.Tensor] | None = None  # the mask that self._pattern counts
        self._pattern: dict[str, int] = {}
        self._segments: torch.Tensor | None = None  # module index of every triplet, for _kept_counts
        self._group_by_shape()
        # The EMAs of one kind (A, Λ or B) of one shape group are one stacked tensor ("slot"), so a
        # step's update is a few multi-tensor calls over a handful of tensors, not three per matrix;
        # _ema_ipt / _ema_unc are per-matrix views of them, in module order (A, Λ, B per module).
        self._slots = [[getattr(self.modules[i], kind) for i in idx] for idx in self._groups for kind in _KINDS]
        self._ipt_stacks = [torch.zeros(len(slot), *slot[0].shape, dtype=slot[0].dtype, device=slot[0].device)
                            for slot in self._slots]
        self._unc_stacks = [torch.zeros_like(t) for t in self._ipt_stacks]
        self._make_views()

    @classmethod
    def from_model(cls, model: nn.Module, **kwargs: Any) -> RankAllocator:
        """Collect every module that carries ``lora_E`` (an ``SVDLinear``) in ``model``."""
        modules = {name: mod for name, mod in model.named_modules() if isinstance(getattr(mod, "lora_E", None), nn.Parameter)}
        return cls(modules, **kwargs)

    # ------------------------------------------------------------------ schedule
    def set_total_step(self, total_step: int) -> None:
        """Fix T; a schedule without a budget-decrease phase is a configuration error."""
        if total_step <= self.init_warmup + self.final_warmup:
            raise ValueError(
                f"total_step T={total_step} must exceed tinit + tfinal = {self.init_warmup} + {self.final_warmup}"
                " (AdaLoRA needs a budget-decrease phase); lower tinit / tfinal or train longer"
            )
        self.total_step = total_step

    def budget_schedule(self, step: int) -> tuple[int, bool]:
        """b(t) and whether to mask at ``step`` (official three-phase cubic schedule)."""
        total = self._require_total_step()
        if step <= self.init_warmup:
            return self.init_budget, False
        if step > total - self.final_warmup:
            return self.target_budget, True
        progress = (step - self.init_warmup) / (total - self.final_warmup - self.init_warmup)
        budget = int((self.init_budget - self.target_budget) * (1 - progress) ** 3 + self.target_budget)
        return budget, step % self.mask_interval == 0

    def _follow_params(self) -> None:
        """Keep the EMAs on the parameters' device: the model may move after the allocator is built."""
        device = self._slots[0][0].device
        if self._ipt_stacks[0].device != device:
            self._ipt_stacks = [t.to(device) for t in self._ipt_stacks]
            self._unc_stacks = [t.to(device) for t in self._unc_stacks]
            self._make_views()

    def _make_views(self) -> None:
        where = {(i, k): (g * len(_KINDS) + k, j) for g, idx in enumerate(self._groups) for j, i in enumerate(idx)
                 for k in range(len(_KINDS))}
        order = [where[(i, k)] for i in range(len(self.modules)) for k in range(len(_KINDS))]
        self._ema_ipt = [self._ipt_stacks[slot][j] for slot, j in order]
        self._ema_unc = [self._unc_stacks[slot][j] for slot, j in order]

    def _require_total_step(self) -> int:
        if self.total_step is None:
            raise RuntimeError("RankAllocator.set_total_step(T) must be called before training")
        return self.total_step

    # ------------------------------------------------------------------ per step
    @torch.no_grad()
    def update_and_mask(self, global_step: int) -> int:
        """Call once per optimiser step, after ``optimizer.step()`` and before ``zero_grad``.

        ``global_step`` counts optimiser steps from 0. Returns the budget b(t).
        """
        total = self._require_total_step()
        self._follow_params()
        self.runs += 1
        if global_step < total - self.final_warmup:
            self._update_importance()
        budget, mask_now = self.budget_schedule(global_step)
        if mask_now:
            self._mask(budget, final=global_step > total - self.final_warmup)
        return budget

    def _update_importance(self) -> None:
        if self.importance == "magnitude":
            return
        params, grads, ema_ipt, ema_unc = [], [], [], []
        for slot, ipt_stack, unc_stack in zip(self._slots, self._ipt_stacks, self._unc_stacks):
            if not slot[0].requires_grad:  # frozen gates (Prune LoRA): importance stays 0
                continue
            slot_grads = [p.grad for p in slot]
            if any(g is None for g in slot_grads):
                missing = [n for n, m in zip(self.names, self.modules)
                           if any(p.requires_grad and p.grad is None for p in (m.lora_A, m.lora_E, m.lora_B))]
                raise RuntimeError(
                    f"AdaLoRA parameters without a gradient (module not in the forward graph?): {missing[:5]}"
                )
            params.append(torch.stack(slot))
            grads.append(torch.stack(slot_grads))
            ema_ipt.append(ipt_stack)
            ema_unc.append(unc_stack)
        if not params:
            return
        ipt = torch._foreach_mul(params, grads)
        torch._foreach_abs_(ipt)
        torch._foreach_mul_(ema_ipt, self.beta1)
        torch._foreach_add_(ema_ipt, ipt, alpha=1 - self.beta1)
        if self.importance == "sensitivity":
            return
        torch._foreach_sub_(ipt, ema_ipt)
        torch._foreach_abs_(ipt)
        torch._foreach_mul_(ema_unc, self.beta2)
        torch._foreach_add_(ema_unc, ipt, alpha=1 - self.beta2)

    def triplet_scores(self) -> list[torch.Tensor]:
        """S_i per module: s(λ_i) + mean_j s(A_ij) + mean_j s(B_ji) (or |λ_i|)."""
        return list(self._all_scores().split(self._ranks))

    def _all_scores(self) -> torch.Tensor:
        """Every module's S_i, concatenated in module order.

        Modules of the same shapes are stacked, so a masking step costs a few kernels per shape
        group rather than four per matrix; the row means of a stack equal the per-matrix means bit
        for bit (each output element reduces the same contiguous row).
        """
        if self.importance == "magnitude":
            return torch.cat([m.lora_E.detach().abs().view(-1) for m in self.modules])
        if self.importance == "sensitivity":
            elem = self._ipt_stacks
        else:
            elem = torch._foreach_mul(self._ipt_stacks, self._unc_stacks)
        parts = []
        for g in range(len(self._groups)):
            a, e, b = elem[3 * g:3 * g + 3]
            parts.append((e.flatten(1) + (a.mean(dim=2) + b.mean(dim=1))).view(-1))
        grouped = torch.cat(parts)
        if self._order is None:
            return grouped
        if self._order.device != grouped.device:
            self._order = self._order.to(grouped.device)
        return grouped[self._order]

    def _group_by_shape(self) -> None:
        """Module indices grouped by (A, Λ, B) shape, and the permutation back to module order
        (None when the groups already follow module order)."""
        def shapes(i: int) -> tuple:  # trained and frozen apart (fixed gates): a slot is one or the other
            return tuple((getattr(self.modules[i], kind).shape, getattr(self.modules[i], kind).requires_grad)
                         for kind in _KINDS)

        self._groups = group_by(range(len(self.modules)), shapes)
        starts = [0]
        for r in self._ranks:
            starts.append(starts[-1] + r)
        grouped_pos = [p for idx in self._groups for i in idx for p in range(starts[i], starts[i + 1])]
        order = [0] * len(grouped_pos)
        for k, p in enumerate(grouped_pos):
            order[p] = k
        self._order = None if order == sorted(order) else torch.tensor(order)

    @torch.no_grad()
    def _mask(self, budget: int, final: bool) -> None:
        if final and self._final_mask is not None:
            masks = self._final_mask  # scores are frozen, so the final pattern never changes
            if self._final_keep is None:  # e.g. right after load_state_dict
                self._final_keep = self._keep_factors(masks)
            keep = self._final_keep
        else:
            masks = self._compute_masks(budget)
            if masks is None:
                return
            keep = self._keep_factors(masks)
            if final:
                self._final_mask, self._final_keep = masks, keep
        self._last_mask = masks
        self._apply(keep)

    def _keep_factors(self, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per module an (r, 1) tensor, 1 for kept and 0 for pruned triplets: three kernels in all."""
        lam = self.modules[0].lora_E  # masks restored from a checkpoint may sit on the CPU
        return list((~torch.cat(masks)).to(device=lam.device, dtype=lam.dtype).unsqueeze(1).split(self._ranks))

    def _apply(self, keep: list[torch.Tensor]) -> None:
        """Zero the pruned λ of every module in one multi-tensor kernel (not one per matrix).

        ``λ · 0`` is ``-0.0`` for a negative λ where ``masked_fill_`` wrote ``+0.0``; the two
        compare equal and every later use of λ (ΔW, its gradient, AdamW, |λ|) is the same.
        """
        lam = [m.lora_E for m in self.modules]
        trained = [i for i, e in enumerate(lam) if e.requires_grad]
        if len(trained) == len(lam):
            torch._foreach_mul_(lam, keep)
            return
        gates = [i for i, e in enumerate(lam) if not e.requires_grad]  # fixed gates: 1 kept, 0 pruned
        if trained:
            torch._foreach_mul_([lam[i] for i in trained], [keep[i] for i in trained])
        torch._foreach_copy_([lam[i] for i in gates], [keep[i] for i in gates])

    def _compute_masks(self, budget: int) -> list[torch.Tensor] | None:
        k = self.init_budget - budget
        if k <= 0:
            return None
        scores = self._all_scores()
        threshold = torch.kthvalue(scores, k).values  # one global threshold, ties pruned
        return list((scores <= threshold).split(self._ranks))

    # ------------------------------------------------------------------ reporting
    def rank_pattern(self) -> dict[str, int]:
        """Kept triplets per matrix after the latest mask (all of them before the first one).

        After the final phase, which masks every step, this is the count of non-zero λ, the
        paper's final rank (rank 0 allowed). Counting the mask rather than λ ≠ 0 keeps the
        count meaningful at step 0, where every λ is still 0 by initialisation.
        """
        if self._last_mask is None:
            return {n: m.lora_E.shape[0] for n, m in zip(self.names, self.modules)}
        if self._pattern_of is not self._last_mask:  # the final phase reuses one mask: count it once
            self._pattern = dict(zip(self.names, self._kept_counts(self._last_mask)))
            self._pattern_of = self._last_mask
        return dict(self._pattern)

    def _kept_counts(self, masks: list[torch.Tensor]) -> list[int]:
        """Kept triplets per module in a few kernels and one host read (training records the pattern
        after every mask, and ΔT may be 1)."""
        pruned = torch.cat(masks)
        if self._segments is None or self._segments.device != pruned.device:
            self._segments = torch.repeat_interleave(torch.arange(len(self._ranks)),
                                                     torch.tensor(self._ranks)).to(pruned.device)
        kept = torch.zeros(len(self._ranks), dtype=torch.long, device=pruned.device)
        return kept.index_add_(0, self._segments, (~pruned).long()).tolist()

    def state_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "total_step": self.total_step,
            "ema_ipt": [t.clone() for t in self._ema_ipt],
            "ema_unc": [t.clone() for t in self._ema_unc],
            "final_mask": _clone_all(self._final_mask),
            "last_mask": _clone_all(self._last_mask),
            "runs": self.runs,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise ValueError("allocator state was saved for a different set of adapted matrices")
        if state["total_step"] is not None:
            self.set_total_step(state["total_step"])
        for dst, src in zip(self._ema_ipt + self._ema_unc, list(state["ema_ipt"]) + list(state["ema_unc"])):
            dst.copy_(src)
        self._final_mask = _clone_all(state["final_mask"])
        self._final_keep = None
        self._last_mask = _clone_all(state["last_mask"])
        self.runs = int(state.get("runs", 0))  # checkpoints written before the count: from 0


class AllocationNotRun(RuntimeError):
    """A rank-adaptive run whose schedule says its ranks must have changed, and whose ranks did not:
    the result would be a fixed-rank adapter recorded as an adaptive one."""


@dataclass(frozen=True)
class Allocation:
    """What a rank-adaptive kind says about its allocator (``MethodHandle.allocation()``)."""

    runs: int  # how many times the allocator ran
    must_change: bool  # the schedule lowers the budget within T: at T the ranks differ from the start
    likely_cause: str  # what to tell the user when they did not (the kind knows its usual mistake)


def allocation_proof(method: str, allocation: Allocation, initial: Mapping[str, int] | None,
                     history: Sequence[Mapping[str, Any]], final: Mapping[str, int] | None) -> dict[str, Any]:
    """The record's proof that allocation ran, from a finished run: how often the allocator ran, the
    steps at which the ranks changed (``history`` entries ``{"step", "ranks", ...}``) and the final
    pattern. Raises :class:`AllocationNotRun` naming the likely cause where the schedule says the ranks
    must have changed (``initial`` → ``final``) and they did not. Shared by the suite's loop and the
    Trainer callback, so both judge the same way."""
    changes, previous = [], dict(initial or {})
    for entry in history:
        if dict(entry["ranks"]) != previous:
            changes.append(entry["step"])
            previous = dict(entry["ranks"])
    proof = {"allocator_runs": allocation.runs, "rank_changes": changes, "final_pattern": dict(final or {}),
             "ranks_must_change": allocation.must_change}
    if allocation.must_change and dict(final or {}) == dict(initial or {}):
        raise AllocationNotRun(
            f"method {method!r}: its budget schedule must have changed the ranks by the last step, but they are "
            f"still the initial ones ({sum((initial or {}).values())} in all, allocator runs: {allocation.runs}): "
            f"{allocation.likely_cause}")
    return proof


def _clone_all(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
    return None if tensors is None else [t.clone() for t in tensors]
