"""Method kinds defined outside the suite, as a user would write them, for the contract tests.

* ``test_proximal_gates``: SoRA-like. A gate vector per adapted matrix (``ΔW = B diag(g) A``) that the
  optimiser never sees: the kind updates it itself in ``step()`` with a proximal (soft-threshold)
  step, so ranks shrink without a budget schedule (``step()`` returns None). It reports its ranks
  (non-zero gates) and counts the parameters it keeps through ``pruned_parameters``.
* ``test_nan_last_step``: LoRA whose own update writes a NaN into a parameter at the last step (a
  kind's in-place update gone wrong): only a check after the last step can see it.
* ``test_adalora_no_allocator`` / ``test_peft_adalora_no_allocate``: AdaLoRA (ours, PEFT's) in a loop
  that never runs the allocator, the mistake of a wrapper that forgets ``update_and_allocate``.
* ``test_lora_family``: a LoRA variant that declares which task hparams blocks it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adalora.methods import AdaLoRA, LoRA, MethodHandle, register_kind, require
from adalora.methods.peft_kind import PeftMethod


class GatedLowRank(nn.Module):
    """``W x + B diag(g) A x``: A ~ N(0, 0.02), B = 0, gates g = 1."""

    def __init__(self, base_layer: nn.Linear, r: int):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.Parameter(torch.randn(r, base_layer.in_features) * 0.02)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, r))
        self.gate = nn.Parameter(torch.ones(r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + ((x @ self.lora_A.T) * self.gate) @ self.lora_B.T


@dataclass
class GateSettings:
    r: int = 2
    shrink: float = 0.4  # the proximal step's soft threshold per optimiser step

    def __post_init__(self) -> None:
        require(self.r >= 1, "r", "a positive rank", self.r)


@register_kind
class ProximalGates(MethodHandle):
    kind = "test_proximal_gates"
    settings_cls = GateSettings

    def insert_layers(self) -> None:
        self.wrap_linears(("W_q", "W_v"), lambda lin: GatedLowRank(lin, self.settings.r))

    def gates(self) -> list[nn.Parameter]:
        return [layer.gate for layer in self.adapted.values()]

    def optimizer_param_groups(self, weight_decay: float, lr: float) -> list[dict[str, Any]]:
        gates = {id(g) for g in self.gates()}
        return [{**group, "params": [p for p in group["params"] if id(p) not in gates]}
                for group in super().optimizer_param_groups(weight_decay, lr)]

    @torch.no_grad()
    def step(self, global_step: int) -> None:
        """g ← soft(g − ∇g, shrink): the gradient must be this step's alone (the loop clears it)."""
        for gate in self.gates():
            moved = gate - gate.grad
            gate.copy_(torch.sign(moved) * torch.clamp(moved.abs() - self.settings.shrink, min=0.0))

    def rank_pattern(self) -> dict[str, int]:
        return {name: int(torch.count_nonzero(layer.gate)) for name, layer in self.adapted.items()}

    def pruned_parameters(self) -> int:
        ranks = self.rank_pattern()
        return sum((self.settings.r - ranks[n]) * (m.base_layer.in_features + m.base_layer.out_features + 1)
                   for n, m in self.adapted.items())


@register_kind
class NanAtLastStep(LoRA):
    kind = "test_nan_last_step"

    @torch.no_grad()
    def step(self, global_step: int) -> None:
        if global_step == self.total_steps - 1:
            next(iter(self.adapted.values())).lora_A[0, 0] = float("nan")


@register_kind
class AdaLoRANoAllocator(AdaLoRA):
    kind = "test_adalora_no_allocator"

    def step(self, global_step: int) -> None:
        return None


@register_kind
class PeftAdaLoRANoAllocate(PeftMethod):
    kind = "test_peft_adalora_no_allocate"

    def step(self, global_step: int) -> None:
        return None


@register_kind
class LoRAFamilyRow(LoRA):
    """A user's LoRA variant that stands beside LoRA in the tables: it reads the task's ``lora`` block
    (LoRA's alpha and epochs, and the lr through ``${selected_lr:...}`` under its own method name)."""

    kind = "test_lora_family"

    @classmethod
    def hparams_blocks(cls, values: Any) -> tuple[str, ...]:
        return ("lora", cls.kind)
