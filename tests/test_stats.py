"""Paired comparisons (analysis.stats) and what the tables make of them, other methods, protocols and cost.

The statistics are checked against scipy on hand-made seed sets; the table behaviours run on records
derived from the committed real tiny runs (``tests/fixtures/runs``): a copy gets another method, label,
protocol, metric value or cost fields, so every number below is known.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.collect import collect
from analysis.figures import pareto_figure
from analysis.stats import NO_SPREAD, holm, paired_comparisons, paired_difference
from analysis.tables import (
    cost_table,
    format_table,
    paired_table,
    present,
    protocol_table,
    results_table,
    write_table,
)

RUNS = Path(__file__).parent / "fixtures" / "runs" / "fixtures"
STAND_INS = {"tiny_glue_rte": "glue_rte", "tiny_glue_sst2": "glue_sst2"}


# ------------------------------------------------------------------------- statistics against scipy
@pytest.mark.parametrize(("values", "reference"), [
    ([91.2, 90.4, 92.8, 91.0, 90.9], [90.1, 90.6, 91.5, 90.2, 90.0]),
    ([70.0, 72.5, 71.0], [73.0, 74.0, 71.5]),
])
def test_paired_difference_equals_scipy(values, reference):
    result = paired_difference(values, reference)
    diff = np.subtract(values, reference)
    n = len(diff)
    half = scipy_stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n)
    assert result["n"] == n and result["mean_diff"] == pytest.approx(diff.mean())
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert result["p"] == pytest.approx(scipy_stats.ttest_rel(values, reference).pvalue)
    boot = paired_difference(values, reference, interval="bootstrap", seed=3)
    expected = scipy_stats.bootstrap((diff,), np.mean, confidence_level=0.95, rng=np.random.default_rng(3))
    assert (boot["ci_low"], boot["ci_high"]) == pytest.approx(tuple(expected.confidence_interval))
    assert boot["p"] == result["p"]  # the test is the t-test whichever interval is shown


def test_constructed_cases_land_on_each_side_of_zero():
    base = [80.0, 82.0, 81.0, 83.0, 79.0]
    above = paired_difference([b + d for b, d in zip(base, [1.9, 2.1, 2.0, 2.2, 1.8], strict=True)], base)
    below = paired_difference([b - d for b, d in zip(base, [1.9, 2.1, 2.0, 2.2, 1.8], strict=True)], base)
    straddles = paired_difference([b + d for b, d in zip(base, [1.0, -1.2, 0.8, -0.9, 0.1], strict=True)], base)
    assert above["ci_low"] > 0 and above["excludes_zero"] and above["p"] < 0.001
    assert below["ci_high"] < 0 and below["excludes_zero"]
    assert straddles["ci_low"] < 0 < straddles["ci_high"] and not straddles["excludes_zero"]
    one = paired_difference([81.0], [80.0])  # one shared seed: a difference, no interval, no test
    assert one["n"] == 1 and one["mean_diff"] == 1.0 and math.isnan(one["ci_low"]) and math.isnan(one["p"])
    with pytest.raises(ValueError, match="interval must be one of"):
        paired_difference(base, base, interval="normal")


@pytest.mark.parametrize(("values", "reference"), [
    ([81.0, 83.0], [80.0, 82.0]),  # the case: two seeds, both 1.0 apart
    ([1.1, 2.3, 3.7], [0.1, 1.3, 2.7]),  # 1.0 apart up to float rounding: scipy says p = 8e-33
    ([70.0, 71.0], [70.0, 71.0]),  # no difference at all: scipy's p is NaN
])
def test_identical_differences_on_every_seed_have_no_p_value_and_no_interval(values, reference):
    result = paired_difference(values, reference)
    assert result["mean_diff"] == pytest.approx(np.mean(np.subtract(values, reference)))
    assert math.isnan(result["p"]) and math.isnan(result["ci_low"]) and math.isnan(result["ci_high"])
    assert not result["excludes_zero"] and result["note"] == NO_SPREAD
    assert paired_difference(values, reference, interval="bootstrap")["note"] == NO_SPREAD


def test_identical_differences_get_no_marker_and_no_p_in_the_tables(tmp_path):
    for seed, (lora, ada) in enumerate(((61.0, 60.0), (63.0, 62.0))):
        for method, accuracy in (("lora", lora), ("adalora", ada)):
            _derive(tmp_path, "tiny_glue_rte", method, "glue_0.3m", seed, accuracy=accuracy)
    table = results_table(_as_paper(collect(tmp_path)), "table1")
    assert table.loc[("lora", "glue_0.3m"), ("RTE", "vs_ref")] == 0.0
    text = format_table(table).set_index(["Method", "Budget", "Source"])
    assert text.loc[("LoRA", "0.3M", "ours"), "RTE"] == "62.00 ± 1.41 (n=2)"  # no ↑
    row = paired_table(table).set_index(["Method", "Task"]).loc[("LoRA", "RTE")]
    assert (row["Δ mean"], row["95% CI"], row["p"], row["p (Holm)"]) == ("+1.00", "", "", "")


def test_holm_on_a_known_example():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> max with the previous: 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adjusted[4])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # capped at 1


def _cells(rows):
    return pd.DataFrame([{"task": "t", "budget": "b", "metric": "accuracy", "status": "success", "model": "m",
                          "trainable_params": 1, **row} for row in rows])


def test_only_shared_seeds_of_the_same_model_and_protocol_are_paired():
    rows = [{"method": "adalora", "seed": s, "value_best": v} for s, v in enumerate([80.0, 81.0, 82.0])]
    rows += [{"method": "lora", "seed": s, "value_best": v} for s, v in ((0, 79.0), (1, 79.5), (5, 90.0))]
    rows += [{"method": "other", "seed": s, "value_best": 70.0, "model": "another"} for s in range(3)]
    rows += [{"method": m, "seed": s, "value_best": 60.0 + s, "protocol": "heldout"} for m in ("lora", "adalora")
             for s in range(2)]
    runs = _cells(rows).assign(protocol=lambda d: d["protocol"].fillna("paper"))
    out = paired_comparisons(runs, "value_best", ["task", "budget", "protocol", "metric", "method"])
    paper = out[(out["protocol"] == "paper")].set_index("method")
    assert list(paper.index) == ["lora"]  # "other" ran on another model: not the same experiment
    assert paper.loc["lora", "n"] == 2 and paper.loc["lora", "seeds"] == "0,1"  # seed 5 has no AdaLoRA run
    assert paper.loc["lora", "mean_diff"] == pytest.approx(((79.0 - 80.0) + (79.5 - 81.0)) / 2)
    heldout = out[out["protocol"] == "heldout"].set_index("method")
    assert heldout.loc["lora", "mean_diff"] == 0.0 and heldout.loc["lora", "n"] == 2  # its own cell
    assert out["p_holm"].notna().sum() == out["p"].notna().sum()


# ------------------------------------------------------------------------- tables on derived real records
def _record(task: str, method: str, budget: str, seed: int) -> dict:
    return json.loads((RUNS / task / method / budget / f"seed={seed}" / "result.json").read_text())


def _write(root: Path, record: dict, sweep: str = "derived") -> dict:
    run = record["run"]
    record["run"]["sweep"] = record["config"]["sweep_name"] = sweep
    path = root / sweep / run["task"] / run["method"] / run["budget"] / f"seed={run['seed']}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def _derive(root: Path, task: str, method: str, budget: str, seed: int, *, accuracy: float | None = None,
            as_method: str | None = None, label: str | None = None, protocol: str | None = None,
            sweep: str = "derived", edit=None) -> dict:
    """A committed record under ``root``, edited: another method name (and label), protocol or accuracy."""
    record = copy.deepcopy(_record(task, method, budget, seed))
    if as_method is not None:
        record["run"]["method"] = record["config"]["method"]["name"] = as_method
    if label is not None:
        record["run"]["label"] = label
    if protocol is not None:
        record["run"]["protocol"] = record["config"]["protocol"] = protocol
    if accuracy is not None:
        record["metrics"]["best"]["accuracy"] = accuracy
    if edit is not None:
        edit(record)
    return _write(root, record, sweep)


def _as_paper(df: pd.DataFrame) -> pd.DataFrame:
    # stand-ins for the paper's backbone too: its tables hold runs of its models only
    return df.assign(task=df["task"].replace(STAND_INS), model="deberta_v3_base")


LORA_RTE = {0: 60.0, 1: 62.0, 2: 61.0}
ADALORA_RTE = {0: 64.0, 1: 66.1, 2: 64.9}
DORA_RTE = {0: 61.0, 1: 60.0}


@pytest.fixture(scope="module")
def derived(tmp_path_factory) -> Path:
    """LoRA / AdaLoRA at 0.3M on (tiny) RTE with 3 seeds, a new method "dora" (label DoRA, 2 seeds) and the
    same LoRA / AdaLoRA runs under the heldout protocol with other values."""
    root = tmp_path_factory.mktemp("derived")
    for seed in range(3):
        for method, values in (("lora", LORA_RTE), ("adalora", ADALORA_RTE)):
            source = seed % 2  # the fixture has seeds 0 and 1; seed 2 is a copy of seed 0 under another seed
            _derive(root, "tiny_glue_rte", method, "glue_0.3m", source, accuracy=values[seed],
                    edit=lambda r, s=seed: r["run"].update(seed=s) or r["config"].update(seed=s))
            _derive(root, "tiny_glue_rte", method, "glue_0.3m", source, accuracy=values[seed] - 10.0,
                    protocol="heldout", sweep="glue_heldout", edit=lambda r, s=seed: r["run"].update(seed=s) or r["config"].update(seed=s))
    for seed, value in DORA_RTE.items():
        _derive(root, "tiny_glue_rte", "lora", "glue_0.3m", seed, accuracy=value, as_method="dora", label="DoRA",
                edit=lambda r: r["params"].update(budget_target=1700, budget_gap=0.08))
    return root


def test_a_new_method_appears_after_the_paper_methods_with_dashes_for_the_paper(derived):
    df = _as_paper(collect(derived))
    for name in ("table1", "table14"):
        table = results_table(df, name)
        assert list(table.index)[-1] == ("dora", "glue_0.3m")  # after every paper row
        assert table.loc[("dora", "glue_0.3m"), ("RTE", "mean")] == pytest.approx(statistics.mean(DORA_RTE.values()))
        text = format_table(table).set_index(["Method", "Budget", "Source"])
        assert text.loc[("DoRA", "0.3M", "paper"), "RTE"] == "—"  # the paper has no such method
        assert text.loc[("DoRA", "0.3M", "paper"), "#Params"] == "—"
        assert text.loc[("DoRA", "0.3M", "ours"), "#Params"].endswith("M†")  # 8% from its target
        assert text.loc[("DoRA", "0.3M", "ours"), "SST-2"] == ""
    for name in ("table2", "table3"):  # a method at another task's budget is not in these tables
        assert "dora" not in results_table(df, name).index.get_level_values("method")


def test_a_new_method_at_a_table2_budget_reads_dash_in_the_budget_column_layout(tmp_path):
    for seed in (0, 1):
        _derive(tmp_path, "tiny_squad_v2", "lora", "qa_0.16", 0, as_method="dora", label="DoRA",
                edit=lambda r, s=seed: r["run"].update(seed=s) or r["config"].update(seed=s))
    df = collect(tmp_path)
    table = results_table(df.assign(task=df["task"].replace({"tiny_squad_v2": "squad_v2"}), model="deberta_v3_base"),
                          "table2")
    assert list(dict.fromkeys(table.index.get_level_values("method")))[-1] == "dora"
    text = format_table(table).set_index(["Method", "Source"])
    assert text.loc[("DoRA", "paper"), "SQuAD v2.0 0.16% (EM/F1)"] == "—"
    assert text.loc[("DoRA", "ours"), "SQuAD v2.0 0.16% (EM/F1)"].endswith("(n=2)")


def test_paired_marks_and_the_companion_table_equal_scipy(derived, tmp_path):
    df = _as_paper(collect(derived))
    table = results_table(df, "table1")
    lora = [LORA_RTE[s] for s in range(3)]
    ada = [ADALORA_RTE[s] for s in range(3)]
    test = scipy_stats.ttest_rel(lora, ada)
    low, high = test.confidence_interval(0.95)
    assert high < 0  # LoRA below AdaLoRA on every seed: the interval excludes 0
    assert table.loc[("lora", "glue_0.3m"), ("RTE", "vs_ref")] == -1.0
    text = format_table(table).set_index(["Method", "Budget", "Source"])
    assert text.loc[("LoRA", "0.3M", "ours"), "RTE"] == f"{statistics.mean(lora):.2f} ± {statistics.stdev(lora):.2f}↓ (n=3)"
    paired = paired_table(table).set_index(["Method", "Task"])
    row = paired.loc[("LoRA", "RTE")]
    assert row["n"] == 3 and row["Δ mean"] == f"{statistics.mean(lora) - statistics.mean(ada):+.2f}"
    assert row["95% CI"] == f"[{low:+.2f}, {high:+.2f}]↓" and row["p"] == f"{test.pvalue:.3g}"
    dora = scipy_stats.ttest_rel([DORA_RTE[0], DORA_RTE[1]], [ada[0], ada[1]])
    p_values = [test.pvalue, dora.pvalue]
    assert [paired.loc[(m, "RTE"), "p (Holm)"] for m in ("LoRA", "DoRA")] == [f"{p:.3g}" for p in holm(p_values)]
    paths = write_table(paired_table(table), tmp_path, "table1_paired", "Table 1 paired", latex=True)
    md = paths[1].read_text()
    assert "Holm's step-down adjustment across the table's 2 comparisons" in md and "protocol paper" in md
    assert paths[2].read_text().isascii()


def test_another_protocol_is_never_averaged_into_a_cell(derived):
    df = _as_paper(collect(derived))
    paper = results_table(df, "table1")
    heldout = results_table(df, "table1", protocol="heldout")
    assert paper.loc[("lora", "glue_0.3m"), ("RTE", "mean")] == pytest.approx(statistics.mean(LORA_RTE.values()))
    assert paper.loc[("lora", "glue_0.3m"), ("RTE", "n")] == 3
    assert heldout.loc[("lora", "glue_0.3m"), ("RTE", "mean")] == pytest.approx(statistics.mean(LORA_RTE.values()) - 10)
    assert ("dora", "glue_0.3m") not in heldout.index  # DoRA ran under the paper's protocol only
    assert paper.attrs["protocol"] == "paper" and heldout.attrs["protocol"] == "heldout"
    comparison = protocol_table(df, "table1").set_index("Method")
    assert comparison.loc["LoRA", "paper"] == pytest.approx(statistics.mean(LORA_RTE.values()), abs=0.005)
    assert comparison.loc["LoRA", "Δ (heldout − paper)"] == pytest.approx(-10.0)
    assert comparison.loc["AdaLoRA", "rank paper"] == 1 and comparison.loc["LoRA", "rank heldout"] == 2
    assert "DoRA" not in comparison.index  # no heldout run: nothing to compare


def test_protocol_table_is_empty_with_one_protocol():
    assert protocol_table(collect(RUNS.parent), "table1").empty


def _cost_fields(step_s: float, start: int, adapter: int, devices: int | None = None):
    def edit(record: dict) -> None:
        record["train"]["step_time_s"] = {"median": step_s, "mean": step_s * 1.1, "steps": 24}
        record["params"]["trainable_paper_start"] = start
        record["weights"] = {"format": "adalora-suite-weights/1", "final": {"file": "weights/final.safetensors",
                                                                            "bytes": adapter, "step": 24}}
        if devices is not None:
            record["train"]["world_size"] = devices
    return edit


def test_cost_table_per_configuration_from_step_times_against_lora(tmp_path):
    for seed in (0, 1):
        _derive(tmp_path, "tiny_glue_rte", "lora", "glue_0.3m", seed, edit=_cost_fields(0.010 + seed * 0.002, 1792, 2**20))
        _derive(tmp_path, "tiny_glue_rte", "adalora", "glue_0.3m", seed,
                edit=_cost_fields(0.015 + seed * 0.002, 2688, 3 * 2**20, devices=2))
    # a 12-step smoke run of AdaLoRA: another configuration, its own row, never divided by the 24-step LoRA
    _derive(tmp_path, "tiny_glue_rte", "adalora", "glue_0.3m", 0, sweep="smoke",
            edit=lambda r: (_cost_fields(0.5, 2688, 3 * 2**20)(r), r["train"].update(steps=12),
                            r["config"]["trainer"].update(max_steps=12)))
    old = _derive(tmp_path, "tiny_glue_rte", "bitfit", "none", 0)  # an old record: no step time, no weights
    records = {(r["run"]["method"], r["run"]["seed"], r["run"]["sweep"]): r for r in
               (json.loads(p.read_text()) for p in tmp_path.rglob("result.json"))}
    with pytest.warns(UserWarning, match="not pooled"):
        results_table(_as_paper(collect(tmp_path)), "table1")  # the two AdaLoRA configurations are not pooled in the tables
    table = cost_table(collect(tmp_path), include_paper=False).reset_index()
    ada = table[(table["method"] == "adalora") & (table["steps"] == 24)].iloc[0]
    lora = table[table["method"] == "lora"].iloc[0]
    smoke = table[(table["method"] == "adalora") & (table["steps"] == 12)].iloc[0]
    assert len(table[table["method"] == "adalora"]) == 2  # one row per configuration
    assert ada["n"] == 2 and ada["step ms"] == pytest.approx(statistics.median([15.0, 17.0]))
    assert ada["step ×LoRA"] == pytest.approx(16.0 / 11.0)
    assert ada["start ×LoRA"] == pytest.approx(2688 / 1792)  # trainable at the start
    assert ada["end ×LoRA"] == pytest.approx(statistics.median([1848, 1752]) / 1792)
    assert ada["adapter MB"] == pytest.approx(3.0) and ada["adapter ×LoRA"] == pytest.approx(3.0)
    walls = [records[("adalora", s, "derived")]["train"]["wall_time_s"] for s in (0, 1)]
    assert ada["GPU-h/run"] == pytest.approx(statistics.median(w / 3600 * 2 for w in walls))  # 2 devices
    lora_walls = [records[("lora", s, "derived")]["train"]["wall_time_s"] for s in (0, 1)]
    assert lora["GPU-h/run"] == pytest.approx(statistics.median(w / 3600 for w in lora_walls))  # devices: 1
    assert math.isnan(smoke["step ×LoRA"])  # no LoRA run of 12 steps to divide by
    bitfit = table[table["method"] == "bitfit"].iloc[0]
    assert math.isnan(bitfit["step ms"]) and pd.isna(bitfit["trainable start"])
    assert bitfit["memory MB"] == pytest.approx(old["train"]["peak_memory_mb"])
    shown = present(cost_table(collect(tmp_path), include_paper=False))
    assert shown.loc[shown["method"] == "BitFit", "step ms"].iloc[0] == "n/a"


def test_pareto_points_on_the_committed_runs():
    df = collect(RUNS.parent)
    fig, points = pareto_figure(df, "tiny_glue_rte", "accuracy")
    assert len(points) == 6  # full FT, BitFit, LoRA and AdaLoRA at two budgets
    records = [json.loads(p.read_text()) for p in (RUNS / "tiny_glue_rte").rglob("result.json")]
    for row in points.itertuples(index=False):
        mine = [r for r in records if (r["run"]["method"], r["run"]["budget"]) == (row.method, row.budget)]
        assert row.mean == pytest.approx(statistics.mean(r["metrics"]["best"]["accuracy"] for r in mine))
        assert row.trainable_params == statistics.median(r["params"]["trainable_paper"] for r in mine)
        assert row.gpu_hours == pytest.approx(statistics.median(r["train"]["wall_time_s"] / 3600 for r in mine))
    # every run scores 50: the point with the fewest parameters (BitFit) alone is on the frontier
    assert points.loc[points["frontier_params"], "method"].tolist() == ["bitfit"]
    assert [ax.get_xscale() for ax in fig.axes[:2]] == ["log", "log"]
    assert len(fig.axes[0].containers) == 6  # one error bar per method x budget


@pytest.mark.slow
def test_results_notebook_writes_each_protocol_and_their_comparison(derived, tmp_path):
    """make figures' results notebook on runs of both protocols: a table set per protocol, their comparison."""
    from analysis.run_notebooks import run_all

    root = tmp_path / "runs"
    for path in derived.rglob("result.json"):  # the derived runs as RTE runs, so they fill Table 1
        record = json.loads(path.read_text())
        record["run"]["task"] = record["config"]["task"]["name"] = "glue_rte"
        record["run"]["model"] = "deberta_v3_base"  # the paper's backbone: its tables hold its runs only
        _write(root, record, record["run"]["sweep"])
    out = tmp_path / "figures"
    run_all(root, out, only=["results_tables"], reference="lora")
    assert "protocol heldout" in (out / "table1_heldout_best.md").read_text()
    assert "DoRA" in (out / "table1_best.md").read_text()  # the new method under its recorded label
    assert "paired differences with LoRA" in (out / "table1_paired.md").read_text()  # --reference
    comparison = pd.read_csv(out / "table1_protocols.csv").set_index("Method")
    assert comparison.loc["AdaLoRA", "Δ (heldout − paper)"] == pytest.approx(-10.0)
    assert list(comparison["rank heldout"]) == list(comparison["rank paper"])  # both shifted by 10: same order


def test_budget_curve_and_figure2_draw_every_method_under_its_label(derived):
    from analysis.figures import budget_curve, figure2

    df = collect(derived)
    fig = budget_curve(df, "tiny_glue_rte", "accuracy")
    drawn = {c.get_label(): c for c in fig.axes[0].containers}
    assert {"DoRA (ours)", "LoRA (ours)", "AdaLoRA (ours)"} <= set(drawn)
    assert list(drawn["DoRA (ours)"].lines[0].get_ydata()) == pytest.approx([statistics.mean(DORA_RTE.values())])
    lora = list(drawn["LoRA (ours)"].lines[0].get_ydata())
    assert lora == pytest.approx([statistics.mean(LORA_RTE.values())])  # the heldout runs are not in it
    panel = figure2(df, panels=[("tiny_glue_rte", "accuracy")]).axes[0]
    assert "DoRA (ours)" in [line.get_label() for line in panel.get_lines()]
