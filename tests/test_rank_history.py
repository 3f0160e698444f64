"""The rank history a run records: taken right after the allocator masks, so kept rank <= b(t).

Between two masking steps b(t) keeps falling while the masked λ regrow (they still get
gradients), so a history logged on arbitrary steps showed more kept triplets than the budget
(issue 18: step 6, budget 27, 31 kept). The run here masks every 2nd step (ΔT = 2).
"""

from __future__ import annotations

import pytest

from experiments.runner import run
from tests.conftest import tiny


@pytest.mark.slow
def test_history_is_taken_at_masking_steps_and_never_exceeds_the_budget(tmp_path):
    steps = 12
    cfg = tiny(tmp_path, "trainer.epochs=1", "method.tinit=2", "method.tfinal=4", "method.deltaT=2",
               method="adalora", steps=steps)
    record = run(cfg)
    assert record["status"] == "success", record["reason"]
    history = record["ranks"]["history"]
    for entry in history:
        assert sum(entry["ranks"].values()) <= entry["budget"], entry["step"]
    n = len(record["ranks"]["pattern"])
    assert history[0]["step"] == 1 and history[0]["budget"] > history[-1]["budget"] == 2 * n
    # Recorded after update t (step t + 1) only where t masks: t = 4, 6 (t % ΔT == 0 while decreasing)
    # and the final phase t > T - t_f = 8, whose repeats of the same allocation are kept once.
    assert [e["step"] for e in history][1:3] == [5, 7]
    assert all(e["step"] <= steps for e in history)
    assert len({(e["budget"], tuple(e["ranks"].values())) for e in history}) == len(history)
