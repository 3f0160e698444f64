"""Analysis layer: the paper's numbers, collection, tables, figures and notebooks.

Runs against the synthetic results root in ``tests/fixtures/results`` (see its
``make_synthetic.py`` for the hand-chosen values the expectations below are computed from).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import collect as collect_mod
from analysis.collect import collect, run_status, select_records
from analysis.figures import (
    budget_curve,
    rank_heatmap,
    rank_heatmap_from_runs,
    rank_over_training,
    rank_totals,
)
from analysis.paper import AVERAGE_COMPONENTS, paper_cost, paper_params, paper_results
from analysis.run_notebooks import NotebookFailed, inject_parameters, run_notebook
from analysis.tables import (
    cost_table,
    format_table,
    has_ours,
    results_table,
    summary_table,
    to_latex,
    write_table,
)
from tests.tiny import load_synthetic_generator

FIXTURES = Path(__file__).parent / "fixtures" / "results"
SQRT8 = math.sqrt(8.0)  # sample std of two values 4 apart


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return collect(FIXTURES)


def _paper(table: str, task: str, method: str, budget: str, metric: str) -> pd.Series:
    p = paper_results()
    return p[(p.table == table) & (p.task == task) & (p.method == method) & (p.budget == budget) & (p.metric == metric)]


# --- paper numbers ------------------------------------------------------------------------------


def test_paper_tables_have_every_cell():
    counts = paper_results().groupby("table").size().to_dict()
    # Table 1: 12 rows x 11 columns; Table 2: 4 x 2 x 4 x 2 + full FT 2 x 2; Table 5 omits 4 "-" cells.
    assert counts == {"table1": 132, "table2": 68, "table3": 54, "table4": 36, "table5": 36, "table14": 16,
                      "figure2": 2}
    assert len(paper_cost()) == 12


@pytest.mark.parametrize(("table", "task", "method", "budget", "metric", "value", "label"), [
    ("table1", "glue_rte", "lora", "glue_0.3m", "accuracy", 85.56, "0.33M"),
    ("table1", "glue_mnli", "adalora", "glue_1.2m", "accuracy_mm", 90.79, "1.27M"),
    ("table1", "glue_qqp", "bitfit", "none", "f1", 84.95, "0.1M"),
    ("table2", "squad_v2", "adalora", "qa_0.16", "f1", 88.8, "0.16%"),
    ("table2", "squad_v1", "full_ft", "none", "exact", 86.0, "100%"),
    ("table3", "xsum", "lora", "nlg_1.10", "rouge2", 20.20, "1.10%"),
    ("table3", "cnndm", "adalora", "nlg_2.20", "rougeLsum", 42.16, "2.20%"),
    ("table4", "glue_cola", "adalora_magnitude", "qa_0.65", "matthews_correlation", 70.38, "0.65%"),
    ("table5", "glue_mnli", "svd_lora", "qa_0.32", "accuracy_avg", 90.52, "0.32%"),
    ("table14", "glue_stsb", "lora_qk", "glue_0.3m", "combined_score", 91.05, "0.3M"),
])
def test_paper_spot_values(table, task, method, budget, metric, value, label):
    row = _paper(table, task, method, budget, metric)
    assert row["value"].tolist() == [value]
    assert row["params_label"].tolist() == [label]


def test_paper_not_reported_cells_are_absent():
    assert _paper("table5", "glue_sst2", "lora_regu", "qa_0.08", "accuracy").empty
    assert _paper("table1", "glue_rte", "lora", "glue_0.6m", "accuracy").empty


def test_all_ave_definition_reproduces_the_paper_column():
    t1 = paper_results().query("table == 'table1'")
    for (_, _), row in t1.groupby(["method", "budget"]):
        values = row.set_index(["task", "metric"])["value"]
        tasks = [np.mean([values[(t, m)] for m in ms]) for t, ms in AVERAGE_COMPONENTS.items()]
        assert np.mean(tasks) == pytest.approx(values[("all", "all_ave")], abs=0.01)


def test_paper_params_labels():
    assert paper_params("0.33M", "glue_rte") == pytest.approx(0.33e6)
    assert paper_params("0.08%", "squad_v2") == pytest.approx(165_888)  # DeBERTaV3 r=1
    assert paper_params("1.10%", "xsum") == pytest.approx(0.011 * 406e6)


# --- collection ---------------------------------------------------------------------------------


def test_collect_rows_and_values(df):
    assert len(df) == 9  # 2 tasks x 2 methods x 2 seeds, one metric each, + the running run's eval
    assert df["status"].value_counts().to_dict() == {"success": 8, "running": 1}
    row = df[(df.task == "glue_rte") & (df.method == "lora") & (df.seed == 1)].iloc[0]
    assert (row.metric, row.value_best, row.value_final, row.best_step) == ("accuracy", 74.0, 72.0, 30)
    assert row.trainable_params == 3072 and row.wall_time_s == 11.0 and row.is_main


def test_run_status_lists_failed_and_interrupted_runs():
    status = run_status(FIXTURES)
    assert len(status) == 11
    assert status["status"].value_counts().to_dict() == {"success": 8, "failed": 1, "incomplete": 1, "running": 1}
    failed = status[status.status == "failed"].iloc[0]
    assert (failed.task, failed.method, failed.budget, failed.seed) == ("glue_rte", "adalora", "glue_0.6m", 0)
    assert failed.reason == "loss is NaN at step 12"
    interrupted = status[status.status == "incomplete"].iloc[0]
    assert (interrupted.task, interrupted.budget, interrupted.sweep) == ("glue_sst2", "glue_0.6m", "fixture")
    assert interrupted.has_checkpoint


def test_collect_cli_writes_parquet_and_csv(tmp_path):
    collect_mod.main([str(FIXTURES), "--out", str(tmp_path)])
    for name in ("results", "run_status"):
        assert (tmp_path / f"{name}.csv").exists()
        back = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert len(back) == (9 if name == "results" else 11)


def test_fixtures_match_their_generator(tmp_path, monkeypatch):
    generator = load_synthetic_generator()
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    generator.main()
    committed = sorted(p.relative_to(FIXTURES) for p in (FIXTURES / "fixture").rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path) for p in (tmp_path / "fixture").rglob("*") if p.is_file())
    assert committed == fresh
    for rel in committed:
        assert (FIXTURES / rel).read_text() == (tmp_path / rel).read_text(), rel


# --- tables -------------------------------------------------------------------------------------


def test_table1_means_stds_and_deltas(df):
    table = results_table(df, "table1")
    rte = table.loc[("lora", "glue_0.3m"), "RTE"]
    assert rte["mean"] == pytest.approx(72.0)
    assert rte["std"] == pytest.approx(SQRT8)
    assert rte["n"] == 2
    assert rte["paper"] == pytest.approx(85.56)
    assert rte["delta"] == pytest.approx(72.0 - 85.56)
    sst2 = table.loc[("adalora", "glue_0.3m"), "SST-2"]
    assert (sst2["mean"], sst2["std"], sst2["paper"]) == pytest.approx((92.5, math.sqrt(0.5), 95.80))
    assert table.loc[("lora", "glue_0.3m"), ("#Params", "ours")] == 3072


def test_table1_final_values(df):
    rte = results_table(df, "table1", which="final").loc[("lora", "glue_0.3m"), "RTE"]
    assert (rte["mean"], rte["std"]) == pytest.approx((70.0, SQRT8))


def test_missing_runs_stay_empty_never_zero(df):
    table = results_table(df, "table1")
    assert np.isnan(table.loc[("full_ft", "none"), ("RTE", "mean")])
    assert np.isnan(table.loc[("lora", "glue_0.3m"), ("CoLA", "mean")])
    # Only 2 of the 8 GLUE tasks ran, so no average is claimed.
    assert np.isnan(table.loc[("lora", "glue_0.3m"), ("All Ave.", "mean")])
    text = format_table(table).set_index(["Method", "Budget", "Source"])
    assert text.loc[("LoRA", "0.3M", "ours"), "RTE"] == f"72.00 ± {SQRT8:.2f} (n=2)"
    assert text.loc[("LoRA", "0.3M", "paper"), "RTE"] == "85.56 (Δ -13.56)"  # the paper's row beneath ours
    assert text.loc[("LoRA", "0.3M", "ours"), "CoLA"] == ""
    assert text.loc[("LoRA", "0.3M", "paper"), "CoLA"] == "68.71"  # no run of ours: no Δ
    assert text.loc[("Full FT", "—", "paper"), "RTE"] == "83.75"
    assert ("Full FT", "—", "ours") not in text.index  # a row without any run of ours is the paper's only
    assert not has_ours(results_table(df, "table2"))


def test_table_without_paper_and_failed_runs_ignored(df):
    table = results_table(df, "table1", include_paper=False)
    assert "paper" not in table.columns.get_level_values("field")
    assert ("adalora", "glue_0.6m") not in table.index  # the failed run has no metrics
    assert ("lora", "glue_0.6m") not in table.index  # the running one has, but is not finished


def _synthetic_glue(method: str, budget: str, offset: float) -> pd.DataFrame:
    """All 8 GLUE tasks, one seed, every component metric = 80 + offset + its position."""
    rows, k = [], 0
    for task, metrics in AVERAGE_COMPONENTS.items():
        for metric in metrics:
            rows.append({"task": task, "method": method, "budget": budget, "metric": metric, "seed": 0, "model": "deberta_v3_base",
                         "value_best": 80.0 + offset + k, "value_final": 0.0, "trainable_params": 1000,
                         "status": "success", "is_main": True, "run_dir": f"{task}/{method}"})
            k += 1
    return pd.DataFrame(rows)


def test_all_ave_for_ours_and_extra_rows():
    df = _synthetic_glue("lora", "glue_0.6m", 0.0)
    table = results_table(df, "table1")
    # components 80..89: MNLI (80+81)/2, SST-2 82, CoLA 83, QQP (84+85)/2, QNLI 86, RTE 87, MRPC 88, STS-B 89
    expected = np.mean([80.5, 82, 83, 84.5, 86, 87, 88, 89])
    assert table.loc[("lora", "glue_0.6m"), ("All Ave.", "mean")] == pytest.approx(expected)
    # Table 1 has no LoRA 0.6M row; ours goes right after the paper's 0.6M rows.
    rows = list(table.index)
    assert rows.index(("lora", "glue_0.6m")) == rows.index(("adapter_pfeiffer", "glue_0.6m")) + 1


def test_summary_table_any_tasks(df):
    renamed = df.assign(task="tiny_" + df["task"])
    table = summary_table(renamed)
    assert list(dict.fromkeys(table.columns.get_level_values("column"))) == ["#Params", "tiny RTE", "tiny SST-2"]
    assert table.loc[("adalora", "glue_0.3m"), ("tiny RTE", "mean")] == pytest.approx(77.0)
    assert table.loc[("adalora", "glue_0.3m"), ("tiny RTE", "std")] == pytest.approx(math.sqrt(2.0))


def test_write_table_markdown_csv_latex(df, tmp_path):
    paths = write_table(results_table(df, "table1"), tmp_path, "table1", "Table 1", latex=True)
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    assert f"72.00 ± {SQRT8:.2f} (n=2)" in paths[1].read_text()
    tex = paths[2].read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\bottomrule" in tex  # booktabs
    assert tex.isascii() and f"72.00 $\\pm$ {SQRT8:.2f} (n=2)" in tex and "85.56 ($\\Delta$ -13.56)" in tex
    assert "glue\\_0.3m" not in tex and "& 0.3M &" in tex  # budgets as the paper writes them
    csv = pd.read_csv(paths[0], index_col=[0, 1])
    assert csv.loc[("lora", "glue_0.3m"), "RTE|paper"] == pytest.approx(85.56)


def test_latex_tables_compile_with_booktabs(df, tmp_path):
    """Tables 1, 2 and 4 as a paper would include them (pdfLaTeX, booktabs), where pdflatex exists."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex not installed (Debian: texlive-latex-base texlive-latex-recommended)")
    body = "\n".join(to_latex(format_table(results_table(df, t)), f"Table {t}") for t in ("table1", "table2", "table4"))
    (tmp_path / "t.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\usepackage[landscape]{geometry}"
                                    "\\begin{document}\\tiny\n" + body + "\n\\end{document}\n")
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0


def test_tables_on_a_root_without_runs(tmp_path):
    empty = collect(tmp_path)
    assert empty.empty and run_status(tmp_path).empty
    for name in ("table1", "table4"):
        table = results_table(empty, name)
        assert not has_ours(table) and table[("RTE", "paper")].notna().any()
    assert summary_table(empty).empty
    assert cost_table(empty)["step ×LoRA"].isna().all()


# --- figures ------------------------------------------------------------------------------------


def _rte_records(df):
    return select_records(df, task="glue_rte", budget="glue_0.3m", method="adalora")


def test_rank_heatmap_cells_equal_the_pattern(df):
    generator = load_synthetic_generator()
    record = _rte_records(df)[0]
    fig, matrix = rank_heatmap(record["ranks"]["pattern"], record["ranks"]["weight_types"])
    expected = np.array(generator.PATTERNS[("glue_rte", 0)], dtype=float)
    assert list(matrix.index) == ["W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2"]
    assert list(matrix.columns) == [0, 1]
    np.testing.assert_array_equal(matrix.to_numpy(), expected)
    np.testing.assert_array_equal(np.asarray(fig.axes[0].images[0].get_array()), expected)
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert "0" in labels  # the rank-0 cell (W_k, layer 0) is drawn and annotated
    assert fig.axes[1].get_ylabel() == "final rank"


def test_rank_heatmap_from_runs_averages_seeds(df, tmp_path):
    generator = load_synthetic_generator()
    fig, matrix = rank_heatmap_from_runs(df, "glue_rte", "glue_0.3m", save=tmp_path / "heat_glue_0.3m")
    seeds = [np.array(generator.PATTERNS[("glue_rte", s)], dtype=float) for s in (0, 1)]
    np.testing.assert_allclose(matrix.to_numpy(), np.mean(seeds, axis=0))
    assert matrix.loc["W_k", 0] == 0.0 and matrix.loc["W_q", 0] == 1.5
    assert "1.5" in {t.get_text() for t in fig.axes[0].texts}  # means shown with one decimal
    assert (tmp_path / "heat_glue_0.3m.png").exists() and (tmp_path / "heat_glue_0.3m.svg").exists()
    with pytest.raises(LookupError):
        rank_heatmap_from_runs(df, "glue_rte", "glue_0.3m", method="lora")


def test_rank_over_training(df):
    record = _rte_records(df)[0]
    totals = rank_totals(record)
    assert list(totals.index) == [0, 10, 20, 30, 40]
    # The fixture's allocation uses exactly the budget at every logged step.
    np.testing.assert_array_equal(totals.drop(columns="budget").sum(axis=1), totals["budget"])
    fig = rank_over_training(record)
    assert fig.axes[0].get_xlabel().startswith("training step")


def test_budget_curve_ours_and_paper(df):
    fig = budget_curve(df, "glue_rte", "accuracy")
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert {"LoRA (ours)", "AdaLoRA (ours)", "LoRA (paper)", "Full FT (paper)"} <= set(labels)
    assert ax.get_xscale() == "log"
    ours = [c for c in ax.containers if c.get_label() == "LoRA (ours)"]  # errorbar containers
    data_line = ours[0].lines[0]
    assert (list(data_line.get_xdata()), list(data_line.get_ydata())) == ([3072], [72.0])


# --- notebooks ----------------------------------------------------------------------------------


def test_inject_parameters_after_the_tagged_cell():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(x)"),
    ])
    inject_parameters(nb, {"x": 2, "root": "a/b"})
    assert nb.cells[1].source == "x = 2\nroot = 'a/b'"
    assert nb.cells[2].source == "print(x)"


@pytest.mark.slow
def test_failing_notebook_names_itself_and_the_error(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text('# %% tags=["parameters"]\nx = 1\n\n# %%\nraise ValueError(f"boom {x}")\n')
    with pytest.raises(NotebookFailed, match=r"(?s)broken\.py.*boom 2"):
        asyncio.run(run_notebook(bad, {"x": 2}, tmp_path / "out"))
    assert (tmp_path / "out" / "broken.ipynb").exists()
