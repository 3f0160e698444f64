"""Adapter layers: LoRA, AdaLoRA's SVD-form update, and bottleneck adapters.

Every layer *wraps* an existing ``nn.Linear`` or transformers ``Conv1D`` (kept as ``base_layer``,
frozen by the method that applies it) instead of copying its weight, so a pretrained model is
adapted in place without doubling its memory. The adapter's own factors are the same for both
(A is r×d_in, B is d_out×r, as PEFT stores them); only ``delta_weight`` follows the base layer's
layout, (in, out) for ``Conv1D`` (``fan_in_fan_out``), so that merging adds it to the weight as is.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from adalora.architectures import fan_in_fan_out, layer_dims

# The official code divides by ``ranknum + 1e-5``; kept so results match it (and PEFT) exactly.
_RANKNUM_EPS = 1e-5
_INIT_STD = 0.02


class ProductSource(Protocol):
    """What makes the fused products of a forward pass on demand (``adalora.fused.BatchedProducts``)."""

    def product_for(self, module: SVDLinear) -> torch.Tensor: ...


def exact_rounding_on(device: torch.device, setting: bool | None) -> bool:
    """Whether AdaLoRA computes with PEFT's exact roundings on ``device``: ``setting`` when set, else
    by device.

    On a CPU yes: runs there are bit-identical to PEFT's and to this suite's earlier results.
    On an accelerator the step is bound by launching kernels from the host, and the fused forms
    (``SVDLinear``, the orthogonality penalty) save most of AdaLoRA's extra launches; CUDA kernels
    round differently from CPU ones anyway.
    """
    return device.type == "cpu" if setting is None else setting


class WrappedLayer(nn.Module):
    """A layer that wraps ``base_layer`` and stands in for it where the model reads its weight (T5's FFN
    checks ``wo.weight.dtype`` in its forward), as PEFT's tuner layers do."""

    base_layer: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight


class LoRALinear(WrappedLayer):
    """``y = W x + b + (alpha / r) * B A x`` (Hu et al.), A ~ N(0, 0.02), B = 0.

    A is drawn from N(0, 0.02) rather than loralib's Kaiming default because the paper's
    DeBERTa fork re-initialises it that way; ΔW = 0 at the start either way since B = 0.
    """

    def __init__(self, base_layer: nn.Module, r: int, alpha: float):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {r}")
        self.base_layer = base_layer
        self.r = r
        self.scaling = alpha / r
        self.in_features, self.out_features = layer_dims(base_layer)
        self.fan_in_fan_out = fan_in_fan_out(base_layer)
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))
        nn.init.normal_(self.lora_A, std=_INIT_STD)

    def delta_weight(self) -> torch.Tensor:
        """ΔW in the base layer's weight layout."""
        return _in_layout(self, (self.lora_B @ self.lora_A) * self.scaling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling


class _AddScaled(torch.autograd.Function):
    """``result + y * numerator / denominator`` as one kernel instead of three.

    On CPU ``addcdiv`` computes ``result + (numerator * y) / denominator``: the same two roundings
    as ``y * numerator / denominator`` and the same final add; the backward repeats autograd's
    ``grad / denominator * numerator``. So AdaLoRA stays bit-identical to PEFT's
    (tests/test_peft_equivalence.py, tests/test_benchmarks.py) while the forward saves two passes
    over the layer's output. (CUDA's addcdiv rounds ``numerator * (y / denominator)``: equal up to
    one rounding.) It writes into ``y``, a matmul output that backward does not need; writing into
    ``result``, as PEFT's ``result +=`` does, makes autograd rebuild the linear layer's output view
    in backward (CopySlices: a zero fill and a copy of the whole output).
    """

    @staticmethod
    def forward(ctx, result, y, denominator, numerator):
        ctx.save_for_backward(denominator)
        ctx.numerator = numerator
        ctx.mark_dirty(y)
        return torch.addcdiv(result, y, denominator, value=numerator, out=y)

    @staticmethod
    def backward(ctx, grad):
        (denominator,) = ctx.saved_tensors
        grad_y = grad / denominator * ctx.numerator if ctx.needs_input_grad[1] else None
        return grad, grad_y, None, None


class SVDLinear(WrappedLayer):
    """AdaLoRA's ``ΔW = P Λ Q`` stored as ``B (A ⊙ E)`` with constant scale ``alpha / r_init``.

    * ``lora_A`` (r×d_in) = Q, ``lora_E`` (r×1) = Λ, ``lora_B`` (d_out×r) = P.
    * E = 0 and A, B ~ N(0, 0.02) at init, so ΔW = 0 while every triplet already gets a
      gradient through E.
    * ``ranknum`` stays r_init for the whole run even after pruning: the author reports that
      rescaling by the surviving rank hurts (QingruZhang/AdaLoRA#12). Only E is ever masked,
      so a pruned triplet keeps A and B and can come back between masking events.
    * ``train_lambda=False`` turns the layer into LoRA doublets with a fixed 0/1 gate (the
      "Prune LoRA" ablation of Table 4): E = 1 and is not trained, B = 0 like LoRA, so
      ``ΔW = (alpha / r) Σ_i gate_i B[:, i] A[i, :]`` and the allocator prunes a whole doublet
      by setting its gate to 0.

    Two ways to compute the same forward, chosen by ``exact_rounding`` (``None``: by device):

    * exact (default on a CPU): PEFT's ``result + (x (A⊙E)ᵀ Bᵀ) · α / (ranknum + 1e-5)`` with its
      roundings, so a CPU run is bit-identical to PEFT's (tests/test_peft_equivalence.py).
    * fused (default on a GPU): the scale α / (ranknum + 1e-5), a constant, goes into the small
      ``A ⊙ (Λ · scale)`` (computed for all layers at once by ``adalora.fused.BatchedProducts``
      when the method attached it), then ``result + (x Pᵀ) Bᵀ``: one pass over the layer's output
      fewer than LoRA's ``(B A x) · scaling``, and only native autograd nodes. On a GPU
      the step is bound by the host launching kernels one by one (benchmarks/README.md), where the
      exact form's Python autograd Function costs more than LoRA's whole adapter. It differs from
      the exact form by rounding only, as CUDA kernels already differ from CPU ones.
    """

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, train_lambda: bool = True,
                 exact_rounding: bool | None = None):
        super().__init__()
        if r <= 0:
            raise ValueError(f"AdaLoRA init_r must be positive, got {r}")
        self.base_layer = base_layer
        self.r = r
        self.lora_alpha = alpha
        self.train_lambda = train_lambda
        self.in_features, self.out_features = layer_dims(base_layer)
        self.fan_in_fan_out = fan_in_fan_out(base_layer)
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        self.lora_E = nn.Parameter(torch.zeros(r, 1, **factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, r, **factory))
        nn.init.normal_(self.lora_A, std=_INIT_STD)
        nn.init.normal_(self.lora_B, std=_INIT_STD)
        if not train_lambda:  # LoRA doublets behind a fixed gate: ΔW = 0 through B = 0 instead
            nn.init.ones_(self.lora_E)
            nn.init.zeros_(self.lora_B)
            self.lora_E.requires_grad_(False)
        self.register_buffer("ranknum", torch.full((1,), float(r), **factory), persistent=True)
        self.scale_numerator = float(alpha if alpha > 0 else r)
        # ``ranknum + 1e-5`` computed once instead of in every forward (one kernel per layer and
        # step on a GPU); recomputed whenever ``ranknum`` is loaded. 0-dim, so that under bf16/fp16
        # autocast it takes the activations' dtype in ``addcdiv`` instead of promoting them to fp32.
        self.register_buffer("scale_denominator", self._denominator(), persistent=False)
        self.scale = self._scale()
        self.exact_rounding = exact_rounding
        # A ⊙ (Λ · scale) of this forward pass, if batched (adalora.fused): a tensor, or the batch that
        # makes it at the first layer call of the forward, or None (the layer makes its own)
        self.batched_product: torch.Tensor | ProductSource | None = None
        self.register_load_state_dict_post_hook(_refresh_denominator)

    def _denominator(self) -> torch.Tensor:
        return (self.ranknum + _RANKNUM_EPS).reshape(())

    def _scale(self) -> float:
        """α / (ranknum + 1e-5) as a Python number, so the fused form launches no kernel for it."""
        ranknum = float(self.r) if self.ranknum.is_meta else self.ranknum.item()
        return self.scale_numerator / (ranknum + _RANKNUM_EPS)

    def uses_exact_rounding(self, x: torch.Tensor) -> bool:
        return exact_rounding_on(x.device, self.exact_rounding)

    def rank(self) -> int:
        """Number of kept triplets: the paper's final rank of this incremental matrix."""
        return int(torch.count_nonzero(self.lora_E).item())

    def delta_weight(self) -> torch.Tensor:
        """ΔW in the base layer's weight layout."""
        return _in_layout(self, (self.lora_B @ (self.lora_A * self.lora_E)) * self.scale_numerator
                          / (self.ranknum + _RANKNUM_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The matmuls as in loralib/PEFT; their ``result += y * alpha / (ranknum + 1e-5)`` (three
        # activation-sized kernels) as one addcdiv with the same roundings.
        result = self.base_layer(x)
        if self.uses_exact_rounding(x):
            y = x @ (self.lora_A * self.lora_E).T @ self.lora_B.T
            return _AddScaled.apply(result, y, self.scale_denominator, self.scale_numerator)
        product = self.batched_product
        if product is None:
            product = self.lora_A * (self.lora_E * self.scale)
        elif not isinstance(product, torch.Tensor):
            product = product.product_for(self)
        if product.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            product = product.to(x.dtype)  # made under autocast, used outside it (a model that turns it off)
        return result + F.linear(F.linear(x, product), self.lora_B)


def _in_layout(layer: LoRALinear | SVDLinear, delta: torch.Tensor) -> torch.Tensor:
    """A (d_out, d_in) update in its base layer's layout: transposed for ``Conv1D``'s (in, out) weight."""
    return delta.T if layer.fan_in_fan_out else delta


def _refresh_denominator(module: SVDLinear, _incompatible_keys) -> None:
    with torch.no_grad():
        module.scale_denominator = module._denominator()
    module.scale = module._scale()


_ACTIVATIONS = {"swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}


ADAPTER_UP_INITS = ("normal", "zero")


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(h)))``: the Houlsby / Pfeiffer bottleneck.

    ``up_init="normal"`` (default) draws ``up`` like ``down`` from N(0, 0.02), biases 0: the
    official fork's ``_init_weights`` re-initialises every ``nn.Linear`` of the model that way,
    adapters included. ``up_init="zero"`` starts ``up`` at zero, so the adapted model equals the
    pretrained one at step 0 (the near-identity init both adapter papers describe; this suite's
    behaviour before it followed the fork).
    """

    def __init__(self, dim: int, bottleneck: int, activation: str, up_init: str = "normal"):
        super().__init__()
        if bottleneck <= 0:
            raise ValueError(f"adapter bottleneck must be positive, got {bottleneck}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"adapter activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if up_init not in ADAPTER_UP_INITS:
            raise ValueError(f"adapter up_init must be one of {ADAPTER_UP_INITS}, got {up_init!r}")
        self.down = nn.Linear(dim, bottleneck)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=_INIT_STD)
        nn.init.zeros_(self.down.bias)
        if up_init == "normal":
            nn.init.normal_(self.up.weight, std=_INIT_STD)
        else:
            nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class AdaptedOutput(WrappedLayer):
    """Applies a bottleneck adapter to the output of a sub-layer's output projection (W_o or W_f2).

    ``dropout=None``: ``adapter(W x)``, the adapter sits before the block's hidden dropout, then
    the residual add and LayerNorm (works for every block, BART's functional dropout included).
    ``dropout=<the block's nn.Dropout>``: ``adapter(dropout(W x))``, the official fork's order
    (``modeling_deberta_v2.py``: dense → dropout → adapter → LayerNorm(· + input)); the caller
    then replaces the block's own dropout by ``nn.Identity`` so it is applied exactly once.
    """

    def __init__(self, base_layer: nn.Module, bottleneck: int, activation: str, up_init: str = "normal",
                 dropout: nn.Module | None = None):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = BottleneckAdapter(layer_dims(base_layer)[1], bottleneck, activation, up_init)
        self.adapter.to(device=base_layer.weight.device, dtype=base_layer.weight.dtype)
        self.dropout = dropout if dropout is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.dropout(self.base_layer(x)))
