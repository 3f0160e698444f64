"""LoRA (Hu et al.) and its variants: ``lora_qk`` (Table 14) and ``lora_regu`` (Table 5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adalora.architectures import ENCODER_WEIGHT_TYPES, target_width
from adalora.budget import BudgetLevel
from adalora.layers import LoRALinear
from adalora.methods.base import PEFT_PREFIX, ExportError, MethodHandle
from adalora.methods.registry import register_kind, register_variant
from adalora.methods.settings import require
from adalora.regularizers import ORTH_REG_FORMS, OrthogonalPenalty


@dataclass
class LoRASettings:
    """LoRA; ``orth_reg_weight`` > 0 adds a penalty on A and B (Table 5's LoRA_regu).

    ``budget_targets``: when set, ``r`` is the rank LoRA would have on *those* matrices, and the
    layers on ``targets`` get the rank with the same parameter count,
    ``round(r · Σ_budget_targets (d_in + d_out) / Σ_targets (d_in + d_out))`` (Table 14's LoRA on
    W_q, W_k at the 0.3M of LoRA r=2 on all six: r = 9 on DeBERTaV3-base).
    """

    r: int
    alpha: float = 16.0
    targets: tuple[str, ...] = ENCODER_WEIGHT_TYPES
    orth_reg_weight: float = 0.0
    orth_reg: str = "frd"
    budget_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require(self.r >= 1, "r", "a positive rank", self.r)
        require(self.orth_reg_weight >= 0, "orth_reg_weight", ">= 0", self.orth_reg_weight)
        require(self.orth_reg in ORTH_REG_FORMS, "orth_reg", f"one of {ORTH_REG_FORMS}", self.orth_reg)


def orthogonal_penalty(handle: MethodHandle) -> torch.Tensor:
    """γ·R(P, Q) over the handle's adapted layers (``lora_A``, ``lora_B``), or its zero tensor for γ = 0.

    Shared by the LoRA and AdaLoRA kinds; the penalty object is built once (it stacks the factors).
    """
    settings = handle.settings
    if settings.orth_reg_weight == 0.0:
        return MethodHandle.regularization_loss(handle)
    penalty = getattr(handle, "_penalty", None)
    if penalty is None:
        mods = list(handle.adapted.values())
        penalty = OrthogonalPenalty([m.lora_A for m in mods], [m.lora_B for m in mods], settings.orth_reg,
                                    getattr(settings, "exact_rounding", None))
        handle._penalty = penalty
    return settings.orth_reg_weight * penalty()


def matched_rank(model: nn.Module, handle: MethodHandle, settings: LoRASettings) -> int:
    """The rank on ``targets`` with the parameter count of rank ``r`` on ``budget_targets``."""
    budget_width = target_width(model, handle.arch, settings.budget_targets)
    return max(1, round(settings.r * budget_width / target_width(model, handle.arch, settings.targets)))


@register_kind
class LoRA(MethodHandle):
    """``W x + (α/r) B A x`` on the target matrices; the size knob is ``r``, and a budget level sets
    the paper's ``lora_r`` (the count rule's answer too: the target *is* LoRA at that rank)."""

    kind = "lora"
    settings_cls = LoRASettings
    size_knob = "r"
    export_formats = ("peft", "merged")

    @classmethod
    def budget_knobs(cls, level: BudgetLevel, values: Mapping[str, Any], model: nn.Module | None) -> dict[str, Any]:
        return {"r": level.lora_r}

    def insert_layers(self) -> None:
        s = self.settings
        r = matched_rank(self.model, self, s) if s.budget_targets else s.r
        self.wrap_linears(s.targets, lambda lin: LoRALinear(lin, r, s.alpha))

    def regularization_loss(self) -> torch.Tensor:
        return orthogonal_penalty(self)

    def update_scale(self) -> dict[str, Any]:
        """``alpha / r`` with the layers' own rank (``lora_qk``'s matched rank, not the budget's r)."""
        r = next((m.r for m in self.adapted.values()), self.settings.r)
        return {"value": self.settings.alpha / r, "rule": "alpha/r", "alpha": self.settings.alpha, "r": r}

    def peft_adapter(self, task_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        heads = self.head_modules()
        tensors = self.head_tensors(heads)
        ranks = {m.r for m in self.adapted.values()}
        if len(ranks) != 1:
            raise ExportError(f"LoRA layers with different ranks {sorted(ranks)}; LoraConfig needs rank_pattern")
        config = {**self.peft_base_config(task_type, heads), "peft_type": "LORA", "r": ranks.pop(), "use_rslora": False}
        for name, module in self.adapted.items():
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = module.lora_A.detach().clone()
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = module.lora_B.detach().clone()
        return config, tensors


register_variant("lora", "lora")  # the paper's method: the kind as itself
register_variant("lora_qk", "lora", targets=("W_q", "W_k"), budget_targets=ENCODER_WEIGHT_TYPES)
register_variant("lora_regu", "lora", orth_reg_weight=0.1, orth_reg="frd")
