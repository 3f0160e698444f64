"""AdaLoRA's extra kernels per training step do not grow with the number of adapted matrices
(a behaviour test on op counts, never on time); and the hot-path rewrites change no number on a
CPU.
"""

from __future__ import annotations

from collections import Counter
from functools import cache

import torch
from torch import nn

from adalora.layers import SVDLinear
from adalora.optim import make_adamw
from benchmarks.op_count import PHASES, by_phase, count_step_ops

CPU = torch.device("cpu")


@cache
def _counts(model: str, method: str, mask: bool = False, precision: str = "fp32") -> Counter:
    return count_step_ops(model, method, CPU, mask=mask, precision=precision)


def _extra_by_phase(model: str, mask: bool = False, precision: str = "fp32") -> dict[str, int]:
    lora = by_phase(_counts(model, "lora", precision=precision))
    ada = by_phase(_counts(model, "adalora", mask, precision))
    return {p: ada[p] - lora[p] for p in PHASES}


def test_adalora_extra_kernels_do_not_grow_with_layers():
    """The fused form (what a GPU runs): every phase's extra kernels are a constant, and per added
    layer AdaLoRA launches no more kernels than LoRA in forward and backward."""
    two, four = _extra_by_phase("tiny"), _extra_by_phase("tiny4")  # 12 vs 24 adapted matrices
    for phase in ("penalty", "clip", "optimizer", "allocator", "zero_grad"):
        assert two[phase] == four[phase], (phase, two[phase], four[phase])
    assert two["optimizer"] == 0  # multi-tensor AdamW: Λ joins the same _foreach_ calls
    for phase in ("forward", "backward"):  # A⊙Λ batched per shape group; the scale folded into it
        assert four[phase] <= two[phase], (phase, two[phase], four[phase])
    # penalty 15 + allocator 26 (two stacks per shape group and kind, 8 multi-tensor EMA updates)
    # + the backward of the batched products and of the penalty, less LoRA's per-layer scaling
    assert sum(four.values()) <= sum(two.values()) <= 50, (two, four)
    assert two["allocator"] == 2 * 3 * 3 + 8  # tiny: 3 shape groups x (A, Λ, B)
    # a stack and a bmm per shape group of A or B (4 in tiny), then for all grams of one rank r:
    # one cat, eye, subtraction, norm and mean; and γ·R added to the loss
    assert two["penalty"] == 2 * 4 + 5 + 2


def test_bf16_products_are_cast_once_per_shape_group():
    """Under bf16 autocast the batched products are made in bf16 (one cast per shape group, forward
    and backward) instead of being cast at each layer call: AdaLoRA's forward and backward launch
    fewer kernels than LoRA's, more so with every layer (LoRA casts A and B per layer)."""
    two, four = _extra_by_phase("tiny", precision="bf16"), _extra_by_phase("tiny4", precision="bf16")
    fp32_two, fp32_four = _extra_by_phase("tiny"), _extra_by_phase("tiny4")
    for phase in ("forward", "backward"):
        assert four[phase] < two[phase] <= 0, (phase, two[phase], four[phase])
        # the per-layer casts a fp32 run does not have: fewer for AdaLoRA than for LoRA
        assert four[phase] - fp32_four[phase] < two[phase] - fp32_two[phase] <= 0, phase
    ada = _counts("tiny4", "adalora", precision="bf16")
    casts = sum(n for (phase, op), n in ada.items() if phase == "forward" and op == "_to_copy")
    lora_casts = sum(n for (phase, op), n in _counts("tiny4", "lora", precision="bf16").items()
                     if phase == "forward" and op == "_to_copy")
    # LoRA casts A per matrix (24; B both methods), AdaLoRA one product stack per shape of A (2: r x d, r x d_ff)
    assert lora_casts - casts == 24 - 2


def test_exact_form_keeps_its_per_layer_kernels():
    """The exact form (a CPU's default) launches per layer what PEFT's does: pinned so a change shows."""
    lora = by_phase(_counts("tiny4", "lora"))
    exact = by_phase(count_step_ops("tiny4", "adalora", CPU, exact_rounding=True))
    device = by_phase(count_step_ops("tiny4", "adalora", CPU, exact_rounding=None))
    assert exact == device  # a CPU runs the exact form
    assert exact["forward"] == lora["forward"] and 0 < exact["backward"] - lora["backward"] <= 10 * 24


def test_a_masking_step_costs_the_same_kernels_for_any_number_of_matrices():
    two, four = _extra_by_phase("tiny", mask=True), _extra_by_phase("tiny4", mask=True)

    def mask_ops(model: str) -> Counter:
        return Counter({op: n for (phase, op), n in _counts(model, "adalora", True).items() if phase == "allocator"})

    assert mask_ops("tiny")["masked_fill_"] == 0 and mask_ops("tiny")["_foreach_mul_"] == mask_ops("tiny4")["_foreach_mul_"]
    assert four["allocator"] == two["allocator"]  # triplet scores stacked per shape group, not per matrix


def test_foreach_adamw_is_bit_identical_to_the_per_tensor_loop_on_cpu():
    torch.manual_seed(0)
    shapes = [(12, 40), (12, 1), (40, 12), (7,)]
    ps = [torch.randn(s, requires_grad=True) for s in shapes]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    groups = lambda t: [{"params": t[:3], "weight_decay": 0.01}, {"params": t[3:], "weight_decay": 0.0}]  # noqa: E731
    loop = torch.optim.AdamW(groups(ps), lr=5e-3, foreach=False)
    ours = make_adamw(groups(qs), lr=5e-3)
    assert ours.defaults["foreach"] is True
    for _ in range(20):
        for p, q in zip(ps, qs):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        loop.step()
        ours.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))


def test_cached_scale_denominator_follows_a_loaded_ranknum():
    layer = SVDLinear(nn.Linear(6, 5), r=4, alpha=8.0)
    assert layer.scale_denominator.item() == (layer.ranknum + 1e-5).item()
    state = layer.state_dict()
    assert "scale_denominator" not in state and {"lora_A", "lora_E", "lora_B", "ranknum"} <= set(state)
    state["ranknum"] = torch.tensor([2.0])
    layer.load_state_dict(state)
    assert layer.scale_denominator.item() == torch.tensor(2.0 + 1e-5).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the 0-dim denominator keeps bf16 outputs bf16
        assert layer(torch.randn(3, 6)).dtype == torch.bfloat16
