"""AdaLoRA's fused form (the default on a GPU, ``exact_rounding=False``) computes what the exact
form computes, up to rounding: layer outputs and gradients, the batched A⊙Λ products, the penalty's
closed-form gradient, and a short training run with its masks. Run here on a CPU by forcing it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from adalora import apply_method, orthogonal_regularization
from adalora.layers import SVDLinear
from adalora.optim import make_adamw
from benchmarks.models import build_model, make_batches
from tests.ports import free_port

CPU = torch.device("cpu")
ADALORA = {"name": "adalora", "init_r": 4, "target_r": 2, "alpha": 8, "tinit": 4, "tfinal": 6, "deltaT": 3,
           "orth_reg_weight": 0.1}


def _nonzero_lambda(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SVDLinear):
                m.lora_E.copy_(torch.randn(m.lora_E.shape, generator=gen))


def _set_form(model: nn.Module, exact: bool) -> None:
    for m in model.modules():
        if isinstance(m, SVDLinear):
            m.exact_rounding = exact


def _fused_tiny(batch_size: int, length: int) -> tuple[nn.Module, list[SVDLinear], dict]:
    """The tiny model with AdaLoRA in the fused form, non-zero λ, and one batch."""
    torch.manual_seed(0)
    model = build_model("tiny", CPU)
    handle = apply_method(model, {**ADALORA, "exact_rounding": False})
    _nonzero_lambda(model)
    return model, list(handle.svd_modules.values()), make_batches(model, False, batch_size, length, CPU)[0]


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fused_layer_matches_the_exact_layer():
    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(24, 16), r=6, alpha=12.0)
    layer.base_layer.requires_grad_(False)
    with torch.no_grad():
        layer.lora_E.normal_()
    x = torch.randn(3, 5, 24)
    results = {}
    for exact in (True, False):
        layer.exact_rounding = exact
        xi = x.clone().requires_grad_()
        out = layer(xi)
        out.square().sum().backward()
        results[exact] = (out.detach(), xi.grad, layer.lora_A.grad, layer.lora_E.grad, layer.lora_B.grad)
        layer.zero_grad(set_to_none=True)
    for a, b in zip(results[True], results[False]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert results[False][2].abs().sum() > 0 and results[False][3].abs().sum() > 0


def test_batched_products_serve_the_forward_and_are_dropped_after_it():
    model, modules, batch = _fused_tiny(4, 12)
    seen = []
    modules[0].register_forward_pre_hook(lambda m, _args: seen.append(m.batched_product is not None))

    torch.manual_seed(2)  # the same dropout masks in both forwards
    model(**batch).loss.backward()
    fused = _grads(model)
    assert seen and all(seen) and all(m.batched_product is None for m in modules)

    model.zero_grad(set_to_none=True)
    _set_form(model, exact=True)
    torch.manual_seed(2)
    model(**batch).loss.backward()
    exact = _grads(model)
    assert set(fused) == set(exact)
    for name in exact:
        torch.testing.assert_close(fused[name], exact[name], rtol=1e-4, atol=1e-6, msg=name)

    # a layer called outside the model's forward computes its own product: the same numbers
    _set_form(model, exact=False)
    x = torch.randn(2, 3, modules[0].in_features)
    standalone = modules[0](x)
    _set_form(model, exact=True)
    torch.testing.assert_close(standalone, modules[0](x), rtol=1e-5, atol=1e-6)


def test_products_are_dropped_when_the_forward_fails():
    model = build_model("tiny", CPU)
    handle = apply_method(model, {**ADALORA, "exact_rounding": False})
    with pytest.raises(IndexError, match="index out of range"):
        model(input_ids=torch.full((2, 4), 10_000))  # token id outside the vocabulary
    assert all(m.batched_product is None for m in handle.svd_modules.values())


@pytest.mark.parametrize("form", ["official", "paper"])
@pytest.mark.parametrize("mixed_ranks", [False, True])
def test_closed_form_penalty_gradient_equals_autograd(form, mixed_ranks):
    """One rank r (AdaLoRA's case: all grams take one subtraction and one norm) or two (one each)."""
    torch.manual_seed(0)
    a = [torch.randn(4, 10, requires_grad=True) for _ in range(3)] + [torch.randn(4, 20, requires_grad=True)]
    b = [torch.randn(10, 4, requires_grad=True) for _ in range(2)] + [torch.randn(10, 4)]  # last one frozen
    if mixed_ranks:
        a.insert(1, torch.randn(6, 10, requires_grad=True))
        b.insert(0, torch.randn(20, 6, requires_grad=True))
    with torch.no_grad():  # orthonormal rows: G = 0 exactly, the norm's kink
        a[0].zero_()
        a[0][:, :4] = torch.eye(4)
    results = {}
    for exact in (True, False):
        for p in a + b[:-1]:
            p.grad = torch.ones_like(p)  # the task loss's gradient is already there
        for _ in range(2):  # gradient accumulation: two backward passes, each scaled like accelerate does
            value = orthogonal_regularization(a, b, form, exact_rounding=exact)
            (0.1 * value / 2).backward()
        results[exact] = (value.detach(), [p.grad.clone() for p in a + b[:-1]])
    assert b[-1].grad is None
    torch.testing.assert_close(results[False][0], results[True][0], rtol=1e-6, atol=0)
    for fused, exact in zip(results[False][1], results[True][1]):
        torch.testing.assert_close(fused, exact, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[False][1][0], torch.ones_like(a[0]))  # zero gradient at G = 0


def test_closed_form_penalty_sets_a_missing_gradient():
    a = [torch.randn(3, 8, requires_grad=True)]
    b = [torch.randn(8, 3, requires_grad=True)]
    orthogonal_regularization(a, b, exact_rounding=False).backward()
    expected = torch.autograd.grad(orthogonal_regularization(a, b, exact_rounding=True), a + b)
    for p, g in zip(a + b, expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_closed_form_penalty_is_one_graph_edge_whatever_the_number_of_matrices():
    """Autograd bookkeeping per matrix is host time on a GPU: the penalty's node has a single edge
    (a trained matrix, here not the first one), and the gradients of all matrices still arrive."""
    torch.manual_seed(0)
    a = [torch.randn(3, 8)] + [torch.randn(3, 8, requires_grad=True) for _ in range(5)]
    b = [torch.randn(8, 3, requires_grad=True) for _ in range(6)]
    value = orthogonal_regularization(a, b, exact_rounding=False)
    assert len(value.grad_fn.next_functions) == 1
    assert value.grad_fn.next_functions[0][0].variable is a[1]
    value.backward()
    expected = torch.autograd.grad(orthogonal_regularization(a, b, exact_rounding=True), a[1:] + b)
    assert a[0].grad is None
    for p, g in zip(a[1:] + b, expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def _train(model: nn.Module, handle, steps: int) -> tuple[list[float], list[dict[str, int]]]:
    handle.set_total_steps(steps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(params, lr=5e-3, weight_decay=0.01)
    batches = make_batches(model, False, 4, 12, CPU)
    losses, patterns = [], []
    for t in range(steps):
        loss = model(**batches[t % len(batches)]).loss + handle.regularization_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        handle.step(t)
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        patterns.append(handle.rank_pattern())
    return losses, patterns


def test_fused_training_follows_the_exact_trajectory():
    torch.manual_seed(0)
    base = build_model("tiny", CPU)
    runs = {}
    for exact in (True, False):
        model = copy.deepcopy(base)
        torch.manual_seed(1)
        handle = apply_method(model, {**ADALORA, "exact_rounding": exact})
        runs[exact] = _train(model, handle, 16)
    (loss_e, pat_e), (loss_f, pat_f) = runs[True], runs[False]
    torch.testing.assert_close(torch.tensor(loss_f), torch.tensor(loss_e), rtol=1e-4, atol=1e-6)
    assert pat_f == pat_e
    assert sum(pat_e[-1].values()) < sum(pat_e[0].values())  # the budget did decrease


def test_fused_form_under_bf16_autocast_and_with_fixed_gates():
    torch.manual_seed(0)
    model = build_model("tiny", CPU)
    handle = apply_method(model, {**ADALORA, "name": "prune_lora", "kind": "adalora", "train_lambda": False,
                                  "exact_rounding": False})
    batch = make_batches(model, False, 2, 8, CPU)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    (loss + handle.regularization_loss()).backward()
    mods = list(handle.svd_modules.values())
    assert all(m.lora_E.grad is None and m.lora_A.grad is not None for m in mods)


def test_products_take_the_forward_autocast_dtype_once_per_shape_group():
    """accelerate applies autocast inside ``model.forward``, after the pre-hook that marks the products
    pending: the first layer call makes them all, in bf16, and each layer's output is bit-identical
    to a layer that makes its own fp32 product and lets autocast cast it."""
    from experiments.precision import make_accelerator

    model, mods, batch = _fused_tiny(2, 8)
    seen: dict[SVDLinear, list] = {m: [] for m in mods}
    hooks = [m.register_forward_hook(lambda mod, args, out: seen[mod].append((mod.batched_product.dtype, args[0], out)))
             for m in mods]
    prepared = make_accelerator(grad_accum=1, precision="bf16", tf32=False).prepare(model)  # as a run does
    prepared(**batch).loss.backward()
    for hook in hooks:
        hook.remove()
    assert all(calls and all(dtype == torch.bfloat16 for dtype, _, _ in calls) for calls in seen.values())
    assert all(m.batched_product is None and m.lora_A.grad is not None and m.lora_E.grad is not None for m in mods)
    groups = {(tuple(m.lora_A.shape), m.scale) for m in mods}
    assert 1 < len(groups) < len(mods)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        for m in mods:  # the same inputs, each layer making its own product
            for _, x, out in seen[m]:
                assert torch.equal(m(x), out)
    plain = torch.randn(2, 3, mods[0].in_features)
    mods[0].__dict__["batched_product"] = mods[0].lora_A.new_ones(mods[0].lora_A.shape, dtype=torch.bfloat16)
    assert mods[0](plain).dtype == torch.float32  # a bf16 product used outside autocast follows the input
    mods[0].__dict__["batched_product"] = None


def test_exact_rounding_must_be_a_boolean_or_null():
    with pytest.raises(ValueError, match="method.exact_rounding must be true/false or null, got 'maybe'"):
        apply_method(build_model("tiny", CPU), {**ADALORA, "exact_rounding": "maybe"})


def test_fused_gradients_survive_data_parallel_reduction():
    """DDP writes its reduced gradient buckets back into .grad at the end of the backward, so the
    penalty's gradient must not be added after the backward there: with DDP (a one-process gloo
    group) every gradient equals the plain model's, the penalty's included."""
    import torch.distributed as dist

    models = []
    for _ in range(2):
        model = build_model("tiny", CPU)
        handle = apply_method(model, {**ADALORA, "exact_rounding": False})
        _nonzero_lambda(model)
        models.append((model, handle))
    batch = make_batches(models[0][0], False, 4, 8, CPU)[0]
    (plain, plain_handle), (wrapped, wrapped_handle) = models
    torch.manual_seed(1)  # the same dropout masks in both forwards
    (plain(**batch).loss + plain_handle.regularization_loss()).backward()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(wrapped)
        torch.manual_seed(1)
        (ddp(**batch).loss + wrapped_handle.regularization_loss()).backward()
    finally:
        dist.destroy_process_group()
    expected, got = _grads(plain), _grads(wrapped)
    assert expected.keys() == got.keys() and any(".lora_A" in n for n in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-8, msg=lambda m, name=name: f"{name}: {m}")
