"""Every rank-adaptive run records proof that it allocated; one whose ranks had to change and did not
fails, naming the likely cause (issue 35: "AdaLoRA" results that were a fixed-rank SVD adapter because
nobody called PEFT's ``update_and_allocate``). Each run also records its update scale."""

from __future__ import annotations

import pytest

from experiments.runner import register_resolvers, run
from tests import contract_kinds  # noqa: F401 - registers test_peft_adalora_no_allocate
from tests.conftest import tiny  # the tiny RTE run

register_resolvers()
STEPS = 8  # tiny_glue_rte's schedule: tinit = 0.15 T -> 1, tfinal = 0.3 T -> 2, deltaT = 2


ALPHA_OVER_INIT_R = {"value": 4.0, "rule": "alpha/init_r", "alpha": 16.0, "r": 4}  # the tiny task's alpha, glue_0.3m


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adalora", "peft_adalora"])
def test_a_rank_adaptive_run_records_its_allocator_runs_rank_changes_and_final_pattern(tmp_path, method):
    record = run(tiny(tmp_path, f"trainer.max_steps={STEPS}", method=method))
    assert record["status"] == "success", record["reason"]
    assert record["params"]["update_scale"] == ALPHA_OVER_INIT_R  # ours and PEFT's: the same effective scale
    ranks = record["ranks"]
    proof = ranks["allocation"]
    assert proof["allocator_runs"] == STEPS and proof["ranks_must_change"] is True
    assert proof["final_pattern"] == ranks["pattern"]
    changed = [e["step"] for e in ranks["history"][1:]]  # entries after the first are recorded on a change
    assert proof["rank_changes"] and set(proof["rank_changes"]) <= set(changed)
    assert sum(ranks["pattern"].values()) == 2 * len(ranks["pattern"])  # b(T): target_r 2 on every matrix


@pytest.mark.slow
def test_a_peft_adalora_run_that_never_calls_update_and_allocate_fails_naming_it(tmp_path):
    record = run(tiny(tmp_path, f"trainer.max_steps={STEPS}", "method.kind=test_peft_adalora_no_allocate",
                      method="peft_adalora"))
    assert record["status"] == "failed"
    assert ("AllocationNotRun: method 'peft_adalora': its budget schedule must have changed the ranks by the last "
            "step, but they are still the initial ones (48 in all, allocator runs: 0): PEFT's "
            "update_and_allocate(global_step) was never called after optimizer.step()") in record["reason"]
    assert not record.get("weights")


@pytest.mark.slow
def test_each_run_records_its_effective_update_scale(tmp_path):
    """LoRA's alpha/r beside AdaLoRA's alpha/init_r (above): at one lr, LoRA r=2 steps twice as far."""
    record = run(tiny(tmp_path, method="lora"))
    assert record["params"]["update_scale"] == {"value": 8.0, "rule": "alpha/r", "alpha": 16.0, "r": 2}
