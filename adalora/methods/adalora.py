"""AdaLoRA (Zhang et al., ICLR 2023): SVD-form updates with importance-based rank allocation.

Its ablations are configs of this kind: ``adalora_sensitivity`` / ``adalora_magnitude`` (Table 4's
importance scores), ``adalora_no_orth`` (γ = 0), ``svd_lora`` (no allocation, Table 5) and
``prune_lora`` (LoRA doublets behind fixed gates, pruned by the allocator, Table 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adalora.allocator import IMPORTANCE_METRICS, Allocation, RankAllocator
from adalora.architectures import ENCODER_WEIGHT_TYPES
from adalora.budget import BudgetLevel
from adalora.fused import BatchedProducts
from adalora.layers import SVDLinear
from adalora.methods.base import PEFT_PREFIX, MethodHandle
from adalora.methods.lora import orthogonal_penalty
from adalora.methods.registry import register_kind, register_variant
from adalora.methods.settings import MethodConfigError, require
from adalora.regularizers import ORTH_REG_FORMS


@dataclass
class AdaLoRASettings:
    """The paper's knobs (App. C tables) under the official code's names."""

    init_r: int
    target_r: int
    tinit: int
    tfinal: int
    deltaT: int
    alpha: float = 16.0
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.1
    orth_reg: str = "official"
    importance: str = "sensitivity_uncertainty"
    allocate: bool = True
    train_lambda: bool = True  # False: LoRA doublets behind a fixed 0/1 gate (prune_lora)
    targets: tuple[str, ...] = ENCODER_WEIGHT_TYPES
    # PEFT's exact roundings (True) or the fused forms (False); None: exact on a CPU, fused on a
    # GPU (adalora.layers.exact_rounding_on). Same mathematics, rounding differs.
    exact_rounding: bool | None = None

    def __post_init__(self) -> None:
        require(self.init_r >= 1, "init_r", "a positive rank", self.init_r)
        require(self.target_r >= 1, "target_r", "a positive rank", self.target_r)
        require(self.tinit >= 0, "tinit", ">= 0 optimiser steps", self.tinit)
        require(self.tfinal >= 0, "tfinal", ">= 0 optimiser steps", self.tfinal)
        require(self.deltaT >= 1, "deltaT", ">= 1 optimiser step", self.deltaT)
        require(0 <= self.beta1 < 1, "beta1", "in [0, 1)", self.beta1)
        require(0 <= self.beta2 < 1, "beta2", "in [0, 1)", self.beta2)
        require(self.orth_reg_weight >= 0, "orth_reg_weight", ">= 0", self.orth_reg_weight)
        require(self.orth_reg in ORTH_REG_FORMS, "orth_reg", f"one of {ORTH_REG_FORMS}", self.orth_reg)
        require(self.importance in IMPORTANCE_METRICS, "importance", f"one of {IMPORTANCE_METRICS}", self.importance)
        if self.target_r > self.init_r:
            raise MethodConfigError(f"method.target_r ({self.target_r}) must be <= method.init_r ({self.init_r})")
        if not self.train_lambda and self.importance == "magnitude":
            raise MethodConfigError("method.importance=magnitude ranks by |λ| and needs method.train_lambda=true")


@register_kind
class AdaLoRA(MethodHandle):
    """``W x + P Λ Q x`` per target matrix; the allocator prunes triplets from b(0) = Σ init_r to
    b(T) = Σ target_r. The size knob is ``target_r`` (the final budget); a budget level sets the
    paper's r̄(T) = LoRA's r and its r_init (App. C), or r_init = r̄(T) without allocation."""

    kind = "adalora"
    settings_cls = AdaLoRASettings
    size_knob = "target_r"
    export_formats = ("peft", "merged")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.allocator: RankAllocator | None = None
        self._loaded_ranks: dict[str, int] | None = None  # λ ≠ 0 of loaded weights, until the allocator masks

    @classmethod
    def budget_knobs(cls, level: BudgetLevel, values: Mapping[str, Any], model: nn.Module | None) -> dict[str, Any]:
        if not values.get("allocate", True):  # no allocation (svd_lora): r̄(T) per matrix from the start
            return {"init_r": level.adalora_target_r, "target_r": level.adalora_target_r}
        return {"init_r": level.adalora_init_r, "target_r": level.adalora_target_r}

    @property
    def svd_modules(self) -> dict[str, SVDLinear]:
        return {n: m for n, m in self.adapted.items() if isinstance(m, SVDLinear)}

    def insert_layers(self) -> None:
        s = self.settings
        self.wrap_linears(s.targets, lambda lin: SVDLinear(lin, s.init_r, s.alpha, train_lambda=s.train_lambda,
                                                           exact_rounding=s.exact_rounding))
        BatchedProducts(list(self.svd_modules.values())).attach(self.model)
        if s.allocate:
            self.allocator = RankAllocator(self.adapted, target_r=s.target_r, init_warmup=s.tinit,
                                           final_warmup=s.tfinal, mask_interval=s.deltaT, beta1=s.beta1,
                                           beta2=s.beta2, importance=s.importance)

    def mark_trainable(self) -> None:
        super().mark_trainable()
        for module in self.svd_modules.values():  # fixed gates of LoRA doublets (train_lambda=False)
            if not module.train_lambda:
                module.lora_E.requires_grad_(False)

    def set_total_steps(self, total_steps: int) -> None:
        super().set_total_steps(total_steps)
        if self.allocator is not None:
            self.allocator.set_total_step(total_steps)

    def regularization_loss(self) -> torch.Tensor:
        return orthogonal_penalty(self)

    def step(self, global_step: int) -> int | None:
        if self.allocator is None:
            return None
        self._loaded_ranks = None
        return self.allocator.update_and_mask(global_step)

    def masks_at(self, global_step: int) -> bool:
        return self.allocator is not None and self.allocator.budget_schedule(global_step)[1]

    def allocation(self) -> Allocation | None:
        """The allocator's runs; the ranks must change when b(T) < b(0) (None without allocation: svd_lora)."""
        if self.allocator is None:
            return None
        runs = self.allocator.runs
        cause = ("the allocator never ran: call handle.step(global_step) after every optimizer.step()" if runs == 0
                 else f"the allocator ran {runs} times without pruning: is T (handle.set_total_steps) the number "
                      "of optimiser steps the run really took?")
        return Allocation(runs, self.allocator.init_budget > self.allocator.target_budget, cause)

    def rank_pattern(self) -> dict[str, int]:
        """Kept triplets per SVD matrix (init_r everywhere when nothing is allocated)."""
        if self.allocator is None:
            return {n: m.r for n, m in self.svd_modules.items()}
        if self._loaded_ranks is not None:
            return dict(self._loaded_ranks)
        return self.allocator.rank_pattern()

    def load_trained_state(self, tensors: Mapping[str, torch.Tensor], fingerprint: str | None, source: str) -> None:
        """Loaded weights carry their pruning in λ (0 = pruned), which a fresh allocator has not seen:
        the rank pattern counts λ ≠ 0 until the allocator masks again."""
        super().load_trained_state(tensors, fingerprint, source)
        self._loaded_ranks = {n: m.rank() for n, m in self.svd_modules.items()}

    def pruned_parameters(self) -> int:
        """AdaLoRA counts the triplets it keeps (the paper's way), not the r_init it trains: each pruned
        triplet is ``d_in + d_out + 1`` parameters (``d_in + d_out`` for a fixed gate, Prune LoRA)."""
        ranks = self.rank_pattern()
        return sum((module.lora_E.shape[0] - ranks[name])
                   * (module.in_features + module.out_features + int(module.lora_E.requires_grad))
                   for name, module in self.svd_modules.items())

    def update_scale(self) -> dict[str, Any]:
        """``alpha / init_r`` for the whole run (``ranknum`` is never updated, as in the official code)."""
        s = self.settings
        return {"value": s.alpha / s.init_r, "rule": "alpha/init_r", "alpha": s.alpha, "r": s.init_r}

    def state_dict(self) -> dict[str, Any]:
        return {} if self.allocator is None else {"allocator": self.allocator.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.allocator is not None:
            self.allocator.load_state_dict(state["allocator"])

    def peft_adapter(self, task_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """PEFT's AdaLoraConfig with ``rank_pattern`` (kept triplets, λ ≠ 0); A, E and B cut to them, as
        PEFT's own ``save_pretrained`` does. Needs ``total_steps`` (AdaLoraConfig.total_step)."""
        s = self.settings
        if not self.total_steps:
            raise MethodConfigError("AdaLoRA's PEFT export needs T (AdaLoraConfig.total_step): call "
                                    "handle.set_total_steps(T) first")
        heads = self.head_modules()
        tensors = self.head_tensors(heads)
        rank_pattern = {}
        for name, module in self.svd_modules.items():
            keep = module.lora_E.detach().view(-1) != 0
            rank_pattern[f"{name}.lora_E"] = keep.tolist()
            tensors[f"{PEFT_PREFIX}{name}.lora_A"] = module.lora_A.detach()[keep].clone()
            tensors[f"{PEFT_PREFIX}{name}.lora_E"] = module.lora_E.detach()[keep].clone()
            tensors[f"{PEFT_PREFIX}{name}.lora_B"] = module.lora_B.detach()[:, keep].clone()
        config = {**self.peft_base_config(task_type, heads), "peft_type": "ADALORA", "init_r": s.init_r,
                  "target_r": s.target_r, "tinit": s.tinit, "tfinal": s.tfinal, "deltaT": s.deltaT,
                  "beta1": s.beta1, "beta2": s.beta2, "orth_reg_weight": s.orth_reg_weight,
                  "total_step": self.total_steps, "rank_pattern": rank_pattern}
        return config, tensors


register_variant("adalora", "adalora")  # the paper's method: the kind as itself
register_variant("adalora_sensitivity", "adalora", importance="sensitivity")
register_variant("adalora_magnitude", "adalora", importance="magnitude")
register_variant("adalora_no_orth", "adalora", orth_reg_weight=0.0)
register_variant("svd_lora", "adalora", allocate=False)
register_variant("prune_lora", "adalora", train_lambda=False, orth_reg_weight=0.0)
