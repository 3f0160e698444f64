"""RankAllocator: schedule, thresholding, masking semantics, validation and resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from adalora import RankAllocator, SVDLinear
from adalora.grouping import group_by


def _modules(n: int = 3, r: int = 4, seed: int = 0) -> dict[str, SVDLinear]:
    torch.manual_seed(seed)
    return {f"m{i}": SVDLinear(nn.Linear(6, 5), r=r, alpha=8) for i in range(n)}


def _allocator(mods, **kw) -> RankAllocator:
    args = {"target_r": 2, "init_warmup": 10, "final_warmup": 20, "mask_interval": 5, "total_step": 100}
    args.update(kw)
    return RankAllocator(mods, **args)


def test_schedule_at_phase_boundaries():
    alloc = _allocator(_modules())  # b(0) = 12, b(T) = 6, decrease over T - t_i - t_f = 70 steps
    assert alloc.budget_schedule(0) == (12, False)
    assert alloc.budget_schedule(10) == (12, False)  # step <= t_i: warm-up
    # t = 11: 6 + 6 * (1 - 1/70)^3 = 11.746... -> int 11; 11 % 5 != 0 -> no mask
    assert alloc.budget_schedule(11) == (11, False)
    # t = 45: progress 35/70 = 0.5 -> 6 + 6 * 0.125 = 6.75 -> 6; 45 % 5 == 0 -> mask
    assert alloc.budget_schedule(45) == (6, True)
    # t = 20: progress 10/70 -> 6 + 6 * (6/7)^3 = 9.778 -> 9, mask (20 % 5 == 0)
    assert alloc.budget_schedule(20) == (9, True)
    assert alloc.budget_schedule(80) == (6, True)  # t = T - t_f: end of the decrease, 80 % 5 == 0
    assert alloc.budget_schedule(81) == (6, True)  # final phase masks every step
    assert alloc.budget_schedule(99) == (6, True)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"beta1": 1.0}, "beta1"),
        ({"beta2": 0.0}, "beta2"),
        ({"target_r": 5}, "target_r"),
        ({"total_step": 30}, "total_step"),
        ({"importance": "bogus"}, "importance"),
        ({"mask_interval": 0}, "mask_interval"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        _allocator(_modules(), **kwargs)


def test_update_before_total_step_is_an_error():
    alloc = RankAllocator(_modules(), target_r=2, init_warmup=1, final_warmup=1, mask_interval=1)
    with pytest.raises(RuntimeError, match="set_total_step"):
        alloc.update_and_mask(0)


def _set_scores(alloc: RankAllocator, triplet_scores: list[list[float]]) -> None:
    """Give every triplet a known score through E alone (A and B scores zero)."""
    for i, scores in enumerate(triplet_scores):
        alloc._ema_ipt[3 * i + 1].copy_(torch.tensor(scores).view(-1, 1))
        alloc._ema_unc[3 * i + 1].fill_(1.0)
        alloc._ema_ipt[3 * i].zero_()
        alloc._ema_ipt[3 * i + 2].zero_()


def test_global_threshold_prunes_ties_and_lowest_scores():
    mods = _modules()
    alloc = _allocator(mods)
    for m in mods.values():
        m.lora_E.data.fill_(1.0)
    # 12 triplets; budget 9 -> k = 3 -> threshold = 3rd smallest = 0.2; ties at 0.2 pruned too
    _set_scores(alloc, [[0.1, 0.9, 0.8, 0.7], [0.2, 0.2, 0.6, 0.5], [0.95, 0.85, 0.75, 0.65]])
    alloc._mask(9, final=False)
    kept = {n: (m.lora_E.view(-1) != 0).tolist() for n, m in mods.items()}
    assert kept == {
        "m0": [False, True, True, True],
        "m1": [False, False, True, True],
        "m2": [True, True, True, True],
    }
    assert alloc.rank_pattern() == {"m0": 3, "m1": 2, "m2": 4}


def test_triplet_score_combines_e_and_row_col_means():
    mods = _modules(n=1, r=2)
    alloc = _allocator(mods, target_r=1)
    for t in alloc._ema_ipt:  # per-matrix views of the allocator's stacked EMAs: written in place
        t.fill_(1.0)
    # s(A) = 2 in row 0, 4 in row 1 -> row means 2, 4; s(B) col 0 = 1, col 1 = 3; s(E) = 0.5, 0.25
    alloc._ema_unc[0].copy_(torch.tensor([[2.0] * 6, [4.0] * 6]))
    alloc._ema_unc[1].copy_(torch.tensor([[0.5], [0.25]]))
    alloc._ema_unc[2].copy_(torch.tensor([[1.0, 3.0]] * 5))
    (score,) = alloc.triplet_scores()
    torch.testing.assert_close(score, torch.tensor([2 + 1 + 0.5, 4 + 3 + 0.25]))


def _train(alloc_mods, alloc, steps, start=0, seed=0):
    """Toy regression so every parameter has a gradient; returns λ history."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for m in alloc_mods.values() for p in m.parameters() if p.requires_grad]
    for p in [m.base_layer.weight for m in alloc_mods.values()] + [m.base_layer.bias for m in alloc_mods.values()]:
        p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in params if p.requires_grad], lr=0.05)
    xs = [torch.randn(8, 6, generator=gen) for _ in range(start + steps)]
    history = []
    for step in range(start, start + steps):
        x = xs[step]
        loss = sum((m(x) - x[:, :5].flip(1)).pow(2).mean() for m in alloc_mods.values())
        loss.backward()
        opt.step()
        alloc.update_and_mask(step)
        opt.zero_grad()
        history.append([m.lora_E.detach().clone() for m in alloc_mods.values()])
    return history, opt


def test_pruned_triplets_can_return_in_decrease_phase_but_not_final():
    mods = _modules(seed=3)
    alloc = _allocator(mods, init_warmup=5, final_warmup=20, mask_interval=5, total_step=60)
    history, _ = _train(mods, alloc, 60)
    came_back = False
    for step in range(6, 40):  # decrease phase: between masks an E can regrow from 0
        before, after = history[step - 1], history[step]
        if any(((b == 0) & (a != 0)).any() for b, a in zip(before, after)):
            came_back = True
    assert came_back
    final_zero = [e == 0 for e in history[41]]
    for step in range(41, 60):  # final phase: the pattern is frozen and re-applied every step
        assert all(torch.equal(z, e == 0) for z, e in zip(final_zero, history[step]))
    assert sum(alloc.rank_pattern().values()) == 6
    assert alloc.rank_pattern() == {n: m.rank() for n, m in mods.items()}


def test_masked_lambdas_are_zero_in_forward():
    (mod,) = _modules(n=1).values()
    mod.lora_E.data = torch.tensor([[1.0], [0.0], [2.0], [0.0]])
    x = torch.randn(3, 6)
    keep = [0, 2]
    expected = mod.base_layer(x) + (
        x @ (mod.lora_A[keep] * mod.lora_E[keep]).T @ mod.lora_B[:, keep].T
    ) * 8 / (4 + 1e-5)
    torch.testing.assert_close(mod(x), expected)


def test_state_dict_round_trip_resumes_exactly():
    mods_a = _modules(seed=5)
    alloc_a = _allocator(mods_a, init_warmup=5, final_warmup=10, mask_interval=3, total_step=40)
    full, _ = _train(mods_a, alloc_a, 40)

    mods_b = _modules(seed=5)
    alloc_b = _allocator(mods_b, init_warmup=5, final_warmup=10, mask_interval=3, total_step=40)
    _, opt_b = _train(mods_b, alloc_b, 17)
    saved_mods, saved_alloc, saved_opt = copy.deepcopy(mods_b), alloc_b.state_dict(), copy.deepcopy(opt_b.state_dict())

    mods_c = saved_mods
    alloc_c = _allocator(mods_c, init_warmup=5, final_warmup=10, mask_interval=3, total_step=40)
    alloc_c.load_state_dict(saved_alloc)
    assert saved_opt["state"] == {}  # plain SGD: nothing to restore beyond parameters
    resumed, _ = _train(mods_c, alloc_c, 23, start=17)
    for a, b in zip(full[-1], resumed[-1]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert alloc_c.rank_pattern() == alloc_a.rank_pattern()


def test_missing_gradient_is_reported():
    mods = _modules()
    alloc = _allocator(mods)
    with pytest.raises(RuntimeError, match="without a gradient"):
        alloc.update_and_mask(0)


def test_magnitude_importance_ranks_by_abs_lambda():
    mods = _modules(n=2, r=3)
    alloc = _allocator(mods, target_r=1, importance="magnitude")
    mods["m0"].lora_E.data = torch.tensor([[0.5], [-3.0], [0.1]])
    mods["m1"].lora_E.data = torch.tensor([[-2.0], [0.05], [1.0]])
    alloc._mask(2, final=False)  # keep the 2 largest |λ|: -3.0 and -2.0
    assert alloc.rank_pattern() == {"m0": 1, "m1": 1}
    assert mods["m0"].lora_E.view(-1).tolist() == [0.0, -3.0, 0.0]


def test_rank_pattern_counts_unequal_ranks_and_is_counted_once_per_mask():
    """Training records the pattern after every mask (every step of the final phase): one count per
    new mask, none for the final phase's re-applied pattern, and a copy the caller may change."""
    from benchmarks.op_count import OpCounter

    torch.manual_seed(0)
    mods = {"a": SVDLinear(nn.Linear(6, 5), r=3, alpha=8), "b": SVDLinear(nn.Linear(6, 5), r=5, alpha=8),
            "c": SVDLinear(nn.Linear(6, 5), r=2, alpha=8)}
    alloc = RankAllocator(mods, target_r=1, init_warmup=1, final_warmup=3, mask_interval=1, total_step=10,
                          target_total_rank=4)
    history, _ = _train(mods, alloc, 10)
    pattern = alloc.rank_pattern()
    assert pattern == {n: int((m.lora_E != 0).sum()) for n, m in mods.items()} and sum(pattern.values()) == 4
    pattern["a"] = 99  # the caller's copy
    counter = OpCounter()
    with counter:
        again = alloc.rank_pattern()
    assert again == {n: int((m.lora_E != 0).sum()) for n, m in mods.items()}
    assert sum(counter.counts.values()) == 0  # the final pattern was counted already
    alloc.update_and_mask(9)  # the final phase re-applies the same mask: still nothing to count
    with counter:
        alloc.rank_pattern()
    assert sum(counter.counts.values()) == 0


def test_emas_are_stacked_per_shape_group_with_per_matrix_views():
    """One stacked EMA per shape group and kind (A, Λ, B), whatever the number of matrices; the
    per-matrix views (state_dict, tests) read and write the stacks."""
    mods = {**_modules(n=3), "wide": SVDLinear(nn.Linear(9, 5), r=4, alpha=8)}
    alloc = _allocator(mods)
    assert [tuple(t.shape) for t in alloc._ipt_stacks] == [(3, 4, 6), (3, 4, 1), (3, 5, 4), (1, 4, 9), (1, 4, 1), (1, 5, 4)]
    assert len(alloc._ema_ipt) == len(alloc._ema_unc) == 3 * len(mods)
    alloc._ema_unc[3 * 3].fill_(2.0)  # the "wide" module's A, module order: m0 m1 m2 wide
    assert alloc._unc_stacks[3].eq(2.0).all() and alloc._unc_stacks[0].eq(0.0).all()
    for view in alloc._ema_ipt + alloc._ema_unc:
        assert any(view._base is stack for stack in alloc._ipt_stacks + alloc._unc_stacks)


def test_group_by_keeps_first_seen_group_order_and_input_order():
    """Stacking a group and splitting it back rely on this order (allocator, penalty, fused products)."""
    words = ["bb", "a", "cc", "d", "eee", "ff"]
    assert group_by(words, len) == [["bb", "cc", "ff"], ["a", "d"], ["eee"]]
    assert group_by([], len) == []
