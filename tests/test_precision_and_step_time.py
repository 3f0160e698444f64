"""trainer.precision / trainer.tf32 reach the run and its record; per-step training time is recorded."""

from __future__ import annotations

import pytest
import torch

from experiments.runner import ConfigError, register_resolvers, resolve, run
from experiments.training import TrainState
from tests.conftest import tiny

register_resolvers()


def _cfg(tmp_path, *extra: str):
    return tiny(tmp_path, *extra, method="adalora", steps=6)


@pytest.mark.slow  # two tiny runs through experiments.runner.run (~40 s of CPU)
def test_bf16_autocast_runs_end_to_end_on_cpu_and_is_recorded(tmp_path):
    fp32 = run(_cfg(tmp_path / "fp32"))
    bf16 = run(_cfg(tmp_path / "bf16", "trainer.precision=bf16"))
    assert fp32["status"] == bf16["status"] == "success", (fp32["reason"], bf16["reason"])
    assert (fp32["train"]["precision"], fp32["train"]["tf32"]) == ("fp32", False)
    assert bf16["train"]["precision"] == "bf16" and bf16["config"]["trainer"]["precision"] == "bf16"
    # autocast really ran: bf16 matmuls change the loss, but only by bf16 rounding
    a, b = fp32["train"]["final_train_loss"], bf16["train"]["final_train_loss"]
    assert a != b and abs(a - b) < 0.05 * abs(a)
    for record in (fp32, bf16):
        st = record["train"]["step_time_s"]
        assert st["steps"] == 6 and 0 < st["median"] and 0 < st["mean"]
        # evaluation is excluded: six steps take less than the whole run
        assert st["mean"] * st["steps"] < record["train"]["wall_time_s"]


def test_unknown_precision_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="trainer.precision"):
        resolve(_cfg(tmp_path, "trainer.precision=fp8"))


def test_step_time_summary():
    assert TrainState(step_times_s=[0.3, 0.1, 0.2, 1.0]).step_time_summary() == {"median": 0.25, "mean": 0.4, "steps": 4}
    assert TrainState().step_time_summary() == {"median": None, "mean": None, "steps": 0}


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_a_reevaluation_runs_the_forward_in_the_arithmetic_the_run_evaluated_in(precision, dtype):
    """A bf16 run's evaluations ran under accelerate's autocast; re-evaluating its weights in fp32 gave other
    log-likelihoods (a tiny_commonsense row's arc_easy acc 83.3 recorded, 66.7 re-evaluated), so
    experiments.evaluate runs the forward under the recorded precision's autocast."""
    from experiments.precision import autocast_as_trained

    layer = torch.nn.Linear(4, 4)
    with autocast_as_trained(precision, torch.device("cpu")):
        assert layer(torch.ones(2, 4)).dtype == dtype
