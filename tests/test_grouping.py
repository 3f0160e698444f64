"""Tables and figures pool one configuration over distinct seeds; what differs is listed, never averaged."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect, run_status
from analysis.demo import write_demo_report
from analysis.figures import learning_curve_table, rank_heatmap_from_runs, rank_matrix
from analysis.grouping import configurations
from analysis.tables import aggregate
from experiments.runner import PROJECT_ROOT

SOURCE = PROJECT_ROOT / "tests" / "fixtures" / "runs" / "fixtures" / "tiny_glue_rte" / "lora" / "glue_0.3m"


def _copy(root: Path, sweep: str, seed: int, edit=None, method: str = "lora") -> dict:
    """A committed real record (schema 1) placed under another sweep, optionally edited."""
    record = json.loads((SOURCE / f"seed={seed}" / "result.json").read_text())
    record["run"]["sweep"] = record["config"]["sweep_name"] = sweep
    record["run"]["method"] = method
    if edit is not None:
        edit(record)
    path = root / sweep / "tiny_glue_rte" / method / "glue_0.3m" / f"seed={seed}" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return record


def _best(record: dict) -> float:
    return record["metrics"]["best"]["accuracy"]


def _other_lr(record: dict) -> None:
    record["config"]["trainer"]["lr"] = 0.05
    record["metrics"]["best"]["accuracy"] = 0.0


def test_same_seed_twice_counts_once_and_is_pooled_with_other_seeds(tmp_path):
    a0, a1 = _copy(tmp_path, "a", 0), _copy(tmp_path, "a", 1)
    _copy(tmp_path, "b", 0)  # the same configuration and seed, run again by another sweep
    runs = collect(tmp_path)
    agg = aggregate(runs[runs["is_main"]])
    row = agg[(agg.task == "tiny_glue_rte") & (agg.method == "lora")].iloc[0]
    assert row.n == 2
    assert row["mean"] == pytest.approx((_best(a0) + _best(a1)) / 2)


def test_different_configurations_under_one_label_are_listed_not_averaged(tmp_path):
    _copy(tmp_path, "a", 0)
    _copy(tmp_path, "a", 1)
    _copy(tmp_path, "c", 0, _other_lr)  # an ad-hoc run at another learning rate, same label
    runs = collect(tmp_path)
    with pytest.warns(UserWarning, match="not pooled.*tiny_glue_rte/lora/glue_0.3m"):
        agg = aggregate(runs[runs["is_main"]])
    assert agg[(agg.task == "tiny_glue_rte") & (agg.method == "lora")].empty
    status = run_status(tmp_path)
    assert status["conflict"].notna().all()
    assert status["conflict"].str.contains(r"2 configurations of tiny_glue_rte/lora/glue_0.3m.*trainer\.lr").all()
    assert status.groupby("sweep")["config_group"].nunique().to_dict() == {"a": 1, "c": 1}
    assert status["config_group"].nunique() == 2


def test_unknown_schema_version_is_refused_and_the_rest_is_processed(tmp_path, capsys):
    _copy(tmp_path, "a", 0)

    def future(record: dict) -> None:
        record["schema_version"] = 99
        record["metrics"]["best"]["accuracy"] = 0.5  # a fraction, where this code expects percent

    _copy(tmp_path, "a", 1, future, method="adalora")
    status = run_status(tmp_path).set_index("method")
    assert status.loc["lora", "status"] == "success"
    assert status.loc["adalora", "status"] == "unreadable"
    assert "schema_version 99 is not one this code reads [1, 2, 3]" in status.loc["adalora", "reason"]
    assert "schema_version 99" in capsys.readouterr().err
    assert set(collect(tmp_path)["method"]) == {"lora"}


def test_override_sub_directories_are_runs_and_their_seed_directory_is_not(tmp_path):
    record = _copy(tmp_path, "a", 0)
    sub = tmp_path / "a" / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=1" / "trainer.lr=0.05"
    sub.mkdir(parents=True)
    (sub / "result.json").write_text(json.dumps({**record, "run": {**record["run"], "seed": 1}}))
    (tmp_path / "a" / "tiny_glue_rte" / "lora" / "glue_0.3m" / "seed=2").mkdir()  # never wrote a record
    status = run_status(tmp_path).set_index("seed")
    assert sorted(status.index) == [0, 1, 2]
    assert status.loc[1, "run_dir"] == str(sub) and status.loc[1, "status"] == "success"
    assert status.loc[2, "status"] == "missing" and status.loc[2, "method"] == "lora"


# ------------------------------------------------------------------------- figures from records
ADALORA = PROJECT_ROOT / "tests" / "fixtures" / "runs" / "fixtures" / "tiny_glue_rte" / "adalora" / "glue_0.3m"


def _adalora(seed: int, lr: float | None = None, sweep: str = "a") -> dict:
    """A committed real AdaLoRA record (schema 1, with its rank pattern), optionally at another lr."""
    record = json.loads((ADALORA / f"seed={seed}" / "result.json").read_text())
    record["run"]["sweep"] = record["config"]["sweep_name"] = sweep
    if lr is not None:
        record["config"]["trainer"]["lr"] = lr
        record["ranks"]["pattern"] = {name: 0 for name in record["ranks"]["pattern"]}  # tells the configs apart
    return record


def test_rank_heatmap_draws_one_configuration_and_counts_a_repeated_seed_once():
    s0, s1 = _adalora(0), _adalora(1)
    assert s0["ranks"]["pattern"] != s1["ranks"]["pattern"]  # else a double-counted seed would not show
    repeat = _adalora(0, sweep="b")  # the same configuration and seed from another sweep
    _, matrix = rank_heatmap_from_runs([s0, s1, repeat], "tiny_glue_rte", "glue_0.3m")
    expected = (rank_matrix(s0["ranks"]["pattern"], s0["ranks"]["weight_types"])
                + rank_matrix(s1["ranks"]["pattern"], s1["ranks"]["weight_types"])) / 2
    pd.testing.assert_frame_equal(matrix, expected, check_dtype=False)


def test_rank_heatmap_refuses_to_average_configurations_and_draws_the_chosen_one():
    runs = [_adalora(0), _adalora(1), _adalora(0, lr=0.05, sweep="c")]
    with pytest.raises(ValueError, match=r"2 configurations.*differ in: trainer\.lr.*config_group="):
        rank_heatmap_from_runs(runs, "tiny_glue_rte", "glue_0.3m")
    groups = list(configurations(runs))
    assert len(groups) == 2
    _, other = rank_heatmap_from_runs(runs, "tiny_glue_rte", "glue_0.3m", config_group=groups[1][1])
    assert (other.to_numpy() == 0).all()  # only the lr=0.05 run, whose pattern is all zeros
    _, main = rank_heatmap_from_runs(runs, "tiny_glue_rte", "glue_0.3m", config_group=groups[0][1])
    assert main.to_numpy().sum() > 0
    with pytest.raises(LookupError, match="config_group='nope'"):
        rank_heatmap_from_runs(runs, "tiny_glue_rte", "glue_0.3m", config_group="nope")


def test_learning_curves_leave_a_conflicting_label_out_and_draw_the_rest():
    lora = json.loads((SOURCE / "seed=0" / "result.json").read_text())
    runs = [_adalora(0), _adalora(0, lr=0.05, sweep="c"), lora, _adalora(1), _adalora(1, sweep="b")]
    with pytest.warns(UserWarning, match=r"not drawn: learning curves tiny_glue_rte/adalora/glue_0.3m.*trainer\.lr"):
        table = learning_curve_table(runs)
    assert set(table["method"]) == {"lora"}
    table = learning_curve_table([_adalora(0), _adalora(1), _adalora(1, sweep="b")])
    assert set(table["n"]) == {2}  # seed 1 twice counts once


@pytest.mark.slow
def test_demo_report_draws_a_heatmap_per_configuration(tmp_path):
    root = tmp_path / "runs"
    for record in (_adalora(0), _adalora(1), _adalora(0, lr=0.05, sweep="c")):
        run = record["run"]
        path = root / run["sweep"] / run["task"] / "adalora" / run["budget"] / f"seed={run['seed']}" / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="not"):
        report = write_demo_report(root, tmp_path / "out")
    heatmaps = sorted(p.name for p in report["written"] if "rank_heatmap" in p.name and p.suffix == ".png")
    groups = [group for _, group in configurations([_adalora(0), _adalora(0, lr=0.05, sweep="c")])]
    assert heatmaps == sorted(f"demo_rank_heatmap_tiny_glue_rte_glue_0.3m_{g}.png" for g in groups)
