"""AdaLoRA's fused path: every layer's ``A ⊙ Λ · scale`` of a forward pass in a few kernels.

On a GPU a training step of AdaLoRA is bound by the host launching small kernels one at a time
(benchmarks/README.md). Per adapted matrix and forward, ``A ⊙ Λ`` is one tiny kernel and its
backward three more (``g ⊙ Λ``, ``g ⊙ A``, a row sum), launched once per layer call: 384 launches
per step on DeBERTaV3-base, 768 on BART-large, each costing launch latency, not arithmetic.
:class:`BatchedProducts` computes the products of all matrices of one shape at the start of the
model's forward (a forward pre-hook) with one stacked multiply, hands each layer its slice, and
drops them when the forward ends; the backward of a shape group is a handful of kernels too. A
layer called outside the model's forward (an encoder run on its own by ``generate``, activation
checkpointing's recomputation) computes its own product, the same numbers, so results never
depend on the hook having run. Used only where ``SVDLinear`` takes the fused form (see
``adalora.layers``): the exact form on a CPU keeps PEFT's per-layer roundings.

Under mixed precision the products are made in the autocast dtype, one cast per shape group:
otherwise every layer call's ``F.linear`` casts its fp32 product (autocast caches the casts of
leaf parameters such as LoRA's A, not of computed tensors), one kernel per call forward and one
back. The pre-hook runs before the forward's autocast starts (accelerate applies autocast inside
``model.forward``), so it only marks the products as pending, and the first adapted layer called
in the forward makes all of them, under the autocast state the layers run in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from adalora.grouping import group_by
from adalora.layers import SVDLinear


class _ScaledProducts(torch.autograd.Function):
    """``A_i ⊙ (Λ_i · s)`` for n same-shape triplets, in ``dtype`` (None: A's); one (r, d_in) tensor per triplet."""

    @staticmethod
    def forward(ctx, scale: float, dtype: torch.dtype | None, count: int, *tensors: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        a = torch.stack(tensors[:count])
        e_scaled = torch.stack(tensors[count:]) * scale
        ctx.save_for_backward(a, e_scaled)
        ctx.scale, ctx.count = scale, count
        products = a * e_scaled
        return (products if dtype is None else products.to(dtype)).unbind(0)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        a, e_scaled = ctx.saved_tensors
        present = next(g for g in grads if g is not None)
        g = torch.stack([present.new_zeros(present.shape) if grad is None else grad for grad in grads]).to(a.dtype)
        need_a = any(ctx.needs_input_grad[3:3 + ctx.count])
        need_e = any(ctx.needs_input_grad[3 + ctx.count:])
        grad_a = (g * e_scaled).unbind(0) if need_a else (None,) * ctx.count
        grad_e = ((g * a).sum(dim=-1, keepdim=True) * ctx.scale).unbind(0) if need_e else (None,) * ctx.count
        return (None, None, None, *grad_a, *grad_e)


class BatchedProducts:
    """Makes ``SVDLinear.batched_product`` for one forward pass of the model it is attached to."""

    def __init__(self, modules: Sequence[SVDLinear]):
        self.modules = list(modules)
        self._group()

    def _group(self) -> None:
        """Same shapes and the same scale (a loaded ``ranknum`` may change a module's scale)."""
        self.groups = group_by(self.modules, lambda m: (tuple(m.lora_A.shape), tuple(m.lora_E.shape), m.scale))
        self._scales = [m.scale for m in self.modules]

    def attach(self, model: nn.Module) -> None:
        model.register_forward_pre_hook(self.mark_pending)
        model.register_forward_hook(self.clear, always_call=True)

    def mark_pending(self, *_: Any) -> None:
        """At the model's forward pre-hook: the first adapted layer called makes every product."""
        if [m.scale for m in self.modules] != self._scales:
            self._group()
        for module in self.modules:
            module.__dict__["batched_product"] = self  # nn.Module.__setattr__ costs µs per call

    def product_for(self, module: SVDLinear) -> torch.Tensor:
        """Every fused layer's product, in the autocast dtype if autocast is on; ``module``'s back."""
        device_type = module.lora_A.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        for group in self.groups:
            first = group[0]
            if first.uses_exact_rounding(first.lora_A):
                continue
            products = _ScaledProducts.apply(first.scale, dtype, len(group), *(m.lora_A for m in group),
                                             *(m.lora_E for m in group))
            for member, product in zip(group, products):
                member.__dict__["batched_product"] = product
        return module.__dict__["batched_product"]

    def clear(self, *_: Any) -> None:
        for module in self.modules:
            module.__dict__["batched_product"] = None
