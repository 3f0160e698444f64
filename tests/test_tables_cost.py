"""Table 15's GPU-hours count every process of a run, and the rank figure words its axes by the kind.

Records are the committed tiny fixture runs, edited where a field is the point: a two-process run
(``train.world_size: 2``), an old record without the field, a rank history without a budget.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from analysis.collect import collect
from analysis.figures import rank_over_training, rank_totals
from analysis.tables import cost_table

FIXTURES = Path(__file__).parent / "fixtures" / "runs" / "fixtures"
RTE_LORA = FIXTURES / "tiny_glue_rte" / "lora" / "glue_0.3m"
RTE_ADALORA = FIXTURES / "tiny_glue_rte" / "adalora" / "glue_0.3m"


def _record(folder: Path, seed: int) -> dict:
    return json.loads((folder / f"seed={seed}" / "result.json").read_text(encoding="utf-8"))


def _write(root: Path, record: dict) -> None:
    run = record["run"]
    path = root / run["task"] / run["method"] / run["budget"] / f"seed={run['seed']}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")


def test_table15_counts_two_devices_for_a_two_process_record(tmp_path):
    walls = {0: 7200.0, 1: 3600.0}  # seconds: the medians below are round numbers of hours
    for seed, wall in walls.items():
        two = _record(RTE_LORA, seed)
        two["train"].update(wall_time_s=wall, world_size=2)  # a DDP run on two devices
        _write(tmp_path / "ddp", two)
        old = _record(RTE_LORA, seed)
        old["train"]["wall_time_s"] = wall
        old["train"].pop("world_size", None)  # a record from before the field: one device
        _write(tmp_path / "old", old)
    ddp = cost_table(collect(tmp_path / "ddp"), include_paper=False).reset_index()
    single = cost_table(collect(tmp_path / "old"), include_paper=False).reset_index()
    assert ddp.loc[ddp["method"] == "lora", "GPU-h/run"].item() == pytest.approx(2 * (2.0 + 1.0) / 2)
    assert single.loc[single["method"] == "lora", "GPU-h/run"].item() == pytest.approx((2.0 + 1.0) / 2)


def test_rank_figure_says_budget_and_singular_values_only_for_a_kind_that_schedules_a_budget():
    adalora = _record(RTE_ADALORA, 0)
    figure = rank_over_training(adalora).axes[0]
    assert figure.get_ylabel() == "total rank (kept singular values)"
    assert "budget b(t)" in [line.get_label() for line in figure.get_lines()]
    # a rank-changing kind of a user's that reports ranks but no budget (its history records none)
    other = copy.deepcopy(adalora)
    other["run"].update(method="shrink", label="Shrinking LoRA")
    for entry in other["ranks"]["history"]:
        entry["budget"] = None
    totals = rank_totals(other)
    assert "budget" not in totals.columns
    assert list(totals.sum(axis=1)) == [sum(e["ranks"].values()) for e in sorted(
        adalora["ranks"]["history"], key=lambda e: e["step"])]
    axes = rank_over_training(other).axes[0]
    assert axes.get_ylabel() == "total rank"
    assert not any("budget" in line.get_label() for line in axes.get_lines())
    assert "kept singular values" not in axes.get_ylabel() and axes.get_title().startswith("Shrinking LoRA rank over")
