"""The analysis layer on *real* results: the committed tiny sweep in ``tests/fixtures/runs``.

Those runs come from the project's own sweeps (``make fixtures``: ``sweep=fixtures`` and
``fixtures_nlg``, tiny DeBERTa/BART on the fixture tasks), so every number below is computed
here from the ``result.json`` files themselves, independently of ``analysis``, and compared
with what the tables and figures show. The tiny tasks stand in for the paper's
(``tiny_glue_rte`` → ``glue_rte``) to fill the paper's layouts; the values are chance-level
plumbing, not results.
"""

from __future__ import annotations

import functools
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.collect import collect, run_status
from analysis.figures import (
    budget_curve,
    figure2,
    percent_trainable,
    rank_heatmap_from_runs,
    rank_over_training,
    rank_totals,
)
from analysis.paper import paper_results
from analysis.run_notebooks import run_all
from analysis.tables import format_table, results_table, summary_table

RUNS = Path(__file__).parent / "fixtures" / "runs"
SYNTHETIC = Path(__file__).parent / "fixtures" / "results"
STAND_INS = {"tiny_glue_rte": "glue_rte", "tiny_glue_sst2": "glue_sst2", "tiny_squad_v2": "squad_v2",
             "tiny_xsum": "xsum"}
BACKBONE_STAND_INS = {"tiny_deberta": "deberta_v3_base", "tiny_bart": "bart_large"}


@functools.cache
def _records() -> tuple[dict, ...]:
    """The committed records, read once (the tests only read them)."""
    return tuple(json.loads(p.read_text()) for p in sorted(RUNS.rglob("result.json")))


def _values(task: str, method: str, budget: str, metric: str, which: str = "best") -> list[float]:
    return [r["metrics"][which][metric] for r in _records()
            if (r["run"]["task"], r["run"]["method"], r["run"]["budget"]) == (task, method, budget)]


def _paper(table: str, task: str, method: str, budget: str, metric: str) -> float:
    p = paper_results()
    cell = p[(p.table == table) & (p.task == task) & (p.method == method) & (p.budget == budget) & (p.metric == metric)]
    return float(cell["value"].iloc[0])


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return collect(RUNS)


@pytest.fixture(scope="module")
def as_paper(df) -> pd.DataFrame:
    # stand-ins for the paper's backbones too: its tables hold runs of its models only
    return df.assign(task=df["task"].replace(STAND_INS), model=df["model"].replace(BACKBONE_STAND_INS))


def test_every_committed_run_is_collected_as_success(df):
    records = _records()
    assert len(records) == 28 and {r["status"] for r in records} == {"success"}
    status = run_status(RUNS)
    assert len(status) == 28 and set(status["status"]) == {"success"}
    assert set(df["run_dir"]) == {str(p.parent) for p in RUNS.rglob("result.json")}
    assert "epoch" not in set(df["metric"])  # where an eval happened, not a metric


@pytest.mark.parametrize(("table", "task", "method", "budget", "metric", "label"), [
    ("table1", "tiny_glue_rte", "lora", "glue_0.3m", "accuracy", "RTE"),
    ("table1", "tiny_glue_sst2", "adalora", "glue_0.3m", "accuracy", "SST-2"),
    ("table1", "tiny_glue_rte", "full_ft", "none", "accuracy", "RTE"),
    ("table1", "tiny_glue_sst2", "bitfit", "none", "accuracy", "SST-2"),
    ("table2", "tiny_squad_v2", "adalora", "qa_0.16", "f1", "SQuAD v2.0 F1"),
    ("table2", "tiny_squad_v2", "lora", "qa_0.16", "exact", "SQuAD v2.0 EM"),
    ("table3", "tiny_xsum", "adalora", "nlg_0.26", "rouge2", "XSum R-2"),
])
def test_paper_layout_cells_equal_the_runs(as_paper, table, task, method, budget, metric, label):
    values = _values(task, method, budget, metric)
    cell = results_table(as_paper, table).loc[(method, budget), label]
    assert cell["mean"] == pytest.approx(statistics.mean(values))
    assert cell["n"] == len(values)
    if len(values) > 1:
        assert cell["std"] == pytest.approx(statistics.stdev(values))
    else:
        assert np.isnan(cell["std"])
    paper = _paper(table, STAND_INS[task], method, budget, metric)
    assert cell["paper"] == pytest.approx(paper)
    assert cell["delta"] == pytest.approx(statistics.mean(values) - paper)


def test_params_column_is_the_median_of_measured_counts(as_paper):
    counts = [r["params"]["trainable_paper"] for r in _records()
              if (r["run"]["task"], r["run"]["method"], r["run"]["budget"]) == ("tiny_glue_rte", "adalora", "glue_0.3m")]
    assert len(set(counts)) == 2  # AdaLoRA's count follows its final ranks, which differ by seed
    assert results_table(as_paper, "table1").loc[("adalora", "glue_0.3m"), ("#Params", "ours")] == statistics.median(counts)


def test_cells_without_runs_stay_empty(as_paper):
    table = results_table(as_paper, "table1")
    assert np.isnan(table.loc[("adapter_houlsby", "glue_0.3m"), ("RTE", "mean")])
    assert np.isnan(table.loc[("lora", "glue_0.3m"), ("All Ave.", "mean")])  # 2 of 8 tasks only
    text = format_table(table).set_index(["Method", "Budget", "Source"])
    assert ("HAdapter", "0.3M", "ours") not in text.index  # no run: no row of ours, never 0
    assert text.loc[("HAdapter", "0.3M", "paper"), "RTE"] == "83.39"  # the paper's value is still shown
    values = _values("tiny_glue_rte", "lora", "glue_0.3m", "accuracy")
    ours = text.loc[("LoRA", "0.3M", "ours")]
    assert ours["RTE"] == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"
    assert ours["#Params"].endswith("M") and text.loc[("LoRA", "0.3M", "paper"), "#Params"] == "0.33M"


def test_summary_table_keeps_the_tiny_task_names(df):
    table = summary_table(df)
    values = _values("tiny_glue_sst2", "lora", "glue_0.6m", "accuracy")
    columns = [c for c in table.columns.get_level_values("column").unique() if "SST" in c]
    assert table.loc[("lora", "glue_0.6m"), (columns[0], "mean")] == pytest.approx(statistics.mean(values))


@pytest.mark.parametrize(("task", "budget"), [("tiny_glue_rte", "glue_0.3m"), ("tiny_glue_sst2", "glue_0.6m"),
                                              ("tiny_xsum", "nlg_0.26")])
def test_heatmap_cells_are_the_seed_mean_of_the_rank_patterns(df, task, budget):
    records = [r for r in _records() if (r["run"]["task"], r["run"]["method"], r["run"]["budget"]) ==
               (task, "adalora", budget)]
    _, matrix = rank_heatmap_from_runs(df, task, budget)
    expected: dict[tuple[str, int], list[int]] = {}
    for record in records:
        for name, rank in record["ranks"]["pattern"].items():
            layer, weight_type = record["ranks"]["weight_types"][name]
            expected.setdefault((weight_type, layer), []).append(rank)
    assert matrix.size == len(expected)
    for (weight_type, layer), ranks in expected.items():
        assert matrix.loc[weight_type, layer] == pytest.approx(statistics.mean(ranks)), (weight_type, layer)
    if task == "tiny_xsum":  # encoder self-attn + FFN, decoder self- and cross-attn + FFN: 16 rows
        assert list(matrix.index[:7]) == ["enc.W_q", "enc.W_k", "enc.W_v", "enc.W_o", "enc.W_f1", "enc.W_f2", "dec.self.W_q"]
        assert len(matrix.index) == 16 and matrix.loc["dec.cross.W_k", 0] == 0  # rank-0 cells are kept


def test_rank_totals_follow_the_budget_schedule(df):
    record = next(r for r in _records() if (r["run"]["task"], r["run"]["method"], r["run"]["seed"]) ==
                  ("tiny_glue_rte", "adalora", 0) and r["run"]["budget"] == "glue_0.3m")
    totals = rank_totals(record)
    assert list(totals.index) == [h["step"] for h in record["ranks"]["history"]]
    assert list(totals["budget"]) == [h["budget"] for h in record["ranks"]["history"]]
    n = len(record["ranks"]["pattern"])
    assert totals["budget"].iloc[0] > totals["budget"].iloc[-1] == 2 * n  # b(T) = target_r x n at glue_0.3m


def test_budget_curve_points_are_params_and_means(df):
    fig = budget_curve(df, "tiny_glue_sst2", "accuracy")
    ours = {c.get_label(): c for c in fig.axes[0].containers}
    line = ours["LoRA (ours)"].lines[0]
    expected_x = [statistics.median(r["params"]["trainable_paper"] for r in _records()
                                    if (r["run"]["task"], r["run"]["method"], r["run"]["budget"]) ==
                                    ("tiny_glue_sst2", "lora", b)) for b in ("glue_0.3m", "glue_0.6m")]
    expected_y = [statistics.mean(_values("tiny_glue_sst2", "lora", b, "accuracy")) for b in ("glue_0.3m", "glue_0.6m")]
    assert list(line.get_xdata()) == expected_x and list(line.get_ydata()) == pytest.approx(expected_y)


def test_figure2_panels_are_seed_means_against_percent_trainable(df):
    panels = (("tiny_glue_sst2", "accuracy"), ("tiny_squad_v2", "f1"), ("tiny_xsum", "rouge2"))
    fig = figure2(df, panels=panels)
    axes = fig.axes[:3]
    assert [ax.get_title() for ax in axes] == ["tiny SST-2", "tiny SQuAD v2.0", "tiny XSum"]
    assert all(ax.get_xlabel() == "% trainable parameters" for ax in axes)
    line = next(ln for ln in axes[0].get_lines() if ln.get_label() == "AdaLoRA (ours)")
    expected = []
    for budget in ("glue_0.3m", "glue_0.6m"):
        records = [r for r in _records() if (r["run"]["task"], r["run"]["method"], r["run"]["budget"]) ==
                   ("tiny_glue_sst2", "adalora", budget)]
        percent = statistics.median(100 * r["params"]["trainable_paper"] / (r["params"]["total"] - r["params"]["head"])
                                    for r in records)
        expected.append((percent, statistics.mean(r["metrics"]["best"]["accuracy"] for r in records)))
        assert percent_trainable(records[0]) == pytest.approx(
            100 * records[0]["params"]["trainable_paper"] / (records[0]["params"]["total"] - records[0]["params"]["head"]))
    expected.sort()
    assert list(line.get_xdata()) == pytest.approx([x for x, _ in expected])
    assert list(line.get_ydata()) == pytest.approx([y for _, y in expected])
    assert len(axes[0].collections) >= 1  # the ±1 std bands


def test_heatmap_colourbar_ticks_are_integers(df):
    fig, matrix = rank_heatmap_from_runs(df, "tiny_glue_rte", "glue_0.3m")
    ticks = [t for t in fig.axes[1].get_yticks() if 0 <= t <= matrix.to_numpy().max()]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_rank_over_training_ends_at_the_last_step_and_stays_within_the_budget():
    record = next(r for r in _records() if (r["run"]["task"], r["run"]["method"], r["run"]["budget"], r["run"]["seed"])
                  == ("tiny_glue_rte", "adalora", "glue_0.3m", 0))
    assert rank_over_training(record).axes[0].get_xlim() == (0, record["train"]["steps"])
    totals = rank_totals(record)  # recorded right after each mask: kept rank <= b(t)
    assert (totals.drop(columns="budget").sum(axis=1) <= totals["budget"]).all()


@pytest.mark.slow
def test_notebooks_run_on_real_and_synthetic_fixtures(tmp_path):
    """One execution of every notebook over both fixture roots (real tiny runs + synthetic edge cases)."""
    root = tmp_path / "root"
    shutil.copytree(RUNS, root)
    shutil.copytree(SYNTHETIC / "fixture", root / "fixture_synthetic")
    out = tmp_path / "figures"
    executed = run_all(root, out)
    assert sorted(p.stem for p in executed) == ["ablations", "budget_curves", "rank_heatmaps", "results_tables"]
    for name in ("rank_heatmap_tiny_glue_rte_adalora_glue_0.3m", "rank_heatmap_tiny_xsum_adalora_nlg_0.26",
                 "budget_curve_tiny_glue_sst2_accuracy", "rank_over_training_tiny_glue_rte_adalora_glue_0.3m_seed0",
                 "figure2",
                 "rank_heatmap_glue_rte_adalora_glue_0.3m", "budget_curve_glue_rte_accuracy"):
        assert (out / f"{name}.png").stat().st_size > 0, name
    assert (out / "ablation_curve_glue_sst2_accuracy.png").stat().st_size > 0
    for name in ("table1_best.md", "table1_best.tex", "table2_best.tex", "table14_best.md", "table15_cost.md",
                 "run_status.md", "table1_paired.md", "table1_paired.tex",
                 "pareto_tiny_glue_rte_accuracy.png", "pareto_tiny_glue_rte_accuracy.csv",
                 "table1_tiny_deberta_best.md", "table1_tiny_deberta_paired.md", "table3_tiny_bart_best.md"):
        assert (out / name).exists(), name
    # Table 14 pairs with LoRA (all six), a method it shows; no run of LoRA (W_q,W_k): nothing paired, no file
    assert not (out / "table14_paired.md").exists()
    assert "failed" in (out / "run_status.md").read_text()  # the synthetic root's failed run is listed
    assert "protocol paper" in (out / "table1_best.md").read_text()  # every caption states its protocol
    assert "Holm" in (out / "table1_paired.md").read_text()
    assert not (out / "table1_protocols.md").exists()  # one protocol only: nothing to compare
    assert "squad_v2" in (out / "budget_curves_notes.md").read_text()  # a note, not a crash
