"""Numerical failure never passes as success: divergence is judged after the last step too.

The loss of a step is computed before its update, so a check on the loss alone misses the last
update (issue 32: ``trainer.lr=1e30`` for two steps saved a model with NaN logits as ``success``),
and clipping turns an infinite gradient norm into zero updates (``method.alpha=1e30`` trained
nothing and recorded ``success``). Each case ends ``diverged``, naming what and at which step.
"""

from __future__ import annotations

import pytest

from adalora.methods import apply_method
from experiments.runner import register_resolvers, run
from experiments.training import Diverged
from tests import contract_kinds  # noqa: F401 - registers test_nan_last_step
from tests.conftest import tiny  # the tiny 4-step RTE run
from tests.test_contract_loop import trainer_for
from tests.tiny import tiny_deberta

register_resolvers()


def _diverged(record: dict, reason: str) -> None:
    assert record["status"] == "diverged", record["reason"]
    assert reason in record["reason"]
    assert not record.get("weights") and record["metrics"] is None  # nothing is kept as a result


@pytest.mark.slow
def test_a_huge_learning_rate_for_two_steps_is_diverged_not_success(tmp_path):
    """The loss of both steps is finite (step 0 is warm-up at lr 0); the last update overflows the model."""
    record = run(tiny(tmp_path, "trainer.lr=1e30", "trainer.max_steps=2"))
    _diverged(record, "the evaluation's outputs (logits) are NaN or infinite at step 2")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_an_infinite_gradient_norm_is_diverged_not_clipped_to_nothing(tmp_path, method):
    record = run(tiny(tmp_path, "method.alpha=1e30", method=method))
    _diverged(record, "the gradient norm before clipping is inf (clipping would zero every update) at step 0")


def test_a_non_finite_parameter_after_the_last_update_is_diverged():
    handle = apply_method(tiny_deberta(seed=0), {"name": "test_nan_last_step", "r": 2})
    with pytest.raises(Diverged, match=r"1 trained parameter\(s\) are NaN or infinite after the last update "
                                       r"\(.*lora_A\) at step 3") as caught:
        trainer_for(handle, 3).train()
    assert caught.value.step == 3

