"""What the suite's loop does for a rank-changing kind it has never heard of (tests/contract_kinds.py).

The kind keeps its gates out of the optimiser and updates them itself, reports ranks without a
budget schedule and counts only the ranks it keeps. The loop must clear the gates' gradients, record
the rank history, and the record must count what the kind keeps.
"""

from __future__ import annotations

import pytest
import torch
from transformers import default_data_collator

from adalora.methods import apply_method
from experiments.training import Trainer, TrainSettings
from tests import contract_kinds  # noqa: F401 - registers the test kinds
from tests.tiny import VOCAB, tiny_deberta

N, BATCH = 16, 4


def examples() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"input_ids": (ids := torch.randint(5, VOCAB, (12,), generator=gen)), "attention_mask": torch.ones_like(ids),
             "labels": torch.tensor(i % 2)} for i in range(N)]


def accuracy(model: torch.nn.Module) -> dict[str, float]:
    batch = default_data_collator(examples())
    with torch.no_grad():
        logits = model(**batch).logits
    return {"accuracy": float((logits.argmax(-1) == batch["labels"]).float().mean())}


def trainer_for(handle, steps: int, **settings) -> Trainer:
    """The suite's loop on the tiny DeBERTa, 16 fixed examples, no checkpoints."""
    train = TrainSettings(lr=5e-3, batch_size=BATCH, max_steps=steps, progress=False, save_model=False,
                          warmup_steps=0, **settings)
    return Trainer(handle.model, handle, examples(), default_data_collator, train, seed=0, evaluate=accuracy,
                   main_metric="accuracy")


@pytest.fixture(scope="module")
def gated():
    """(handle, trainer, state) of a 6-step run of the gated kind, shared by the tests that read it."""
    handle = apply_method(tiny_deberta(seed=0), {"name": "test_proximal_gates"})
    trainer = trainer_for(handle, 6)
    return handle, trainer, trainer.train()


def test_parameters_kept_out_of_the_optimiser_have_their_gradients_cleared_by_the_loop(gated):
    handle, trainer, _ = gated
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert handle.gates() and not any(id(g) in held for g in handle.gates())
    assert all(g.grad is None for g in handle.gates())  # optimizer.zero_grad() alone leaves them set


def test_rank_history_is_recorded_for_a_kind_that_reports_ranks_without_a_budget(gated):
    handle, _, state = gated
    history = state.rank_history
    assert history[0] == {"step": 1, "budget": None, "ranks": dict.fromkeys(handle.adapted, 2)}
    assert history[-1]["ranks"] == handle.rank_pattern() != history[0]["ranks"]  # the proximal step pruned
    assert len(history) >= 2 and all(e["budget"] is None for e in history)


def test_a_rank_shrinking_kind_counts_the_parameters_it_keeps_through_its_hook(gated):
    handle, _, _ = gated
    counts = handle.parameter_counts()
    widths = {n: m.base_layer.in_features + m.base_layer.out_features + 1 for n, m in handle.adapted.items()}
    kept = sum(rank * widths[n] for n, rank in handle.rank_pattern().items())
    assert counts["trainable_paper"] == kept < handle.trainable_paper_start == 2 * sum(widths.values())
    assert counts["trainable_total"] - counts["head"] == handle.trainable_paper_start  # still trains them all
