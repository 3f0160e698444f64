# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Budget curves (paper Figure 2)
# Figure 2 as the paper draws it: MNLI-m accuracy, SQuAD v2.0 F1 and XSum ROUGE-2 against the
# % of trainable parameters, one line per method (mean over seeds, ±1 std band), the paper's
# points as hollow squares. Then one curve per task with runs (its main metric, absolute
# #params on a log axis), for any task, including tiny and demo ones, and per task a Pareto
# figure: the main metric against trainable parameters and against GPU-hours per run. Every
# method that ran is drawn, under its recorded label; runs of the paper's protocol only.

# %%
from analysis.collect import collect
from analysis.figures import FIGURE2_PANELS, budget_curve, figure2, pareto_figure
from analysis.paths import default_out_dir, default_results_root, in_repo, require_runs
from analysis.report import Report
from analysis.tables import successful

# %% tags=["parameters"]
results_root = default_results_root()  # relative paths are taken against the repository root
out_dir = default_out_dir()

# %%
results_root, out_dir = require_runs(results_root), in_repo(out_dir)
report = Report(out_dir, "budget_curves")
df = successful(collect(results_root))
mains = df.loc[df["is_main"], ["task", "metric"]].drop_duplicates().itertuples(index=False, name=None)
curves = list(dict.fromkeys([*FIGURE2_PANELS, *sorted(mains)]))

# %%
report.figure(figure2(df), "figure2")
if df[df["task"].isin([task for task, _ in FIGURE2_PANELS])].empty:
    report.note("figure2: no successful MNLI / SQuAD v2.0 / XSum runs; only the paper's points are drawn")

# %%
for task, metric in curves:
    if df[(df["task"] == task) & (df["metric"] == metric)].empty:
        report.note(f"budget curve {task} / {metric}: no successful runs yet")
        continue
    report.figure(budget_curve(df, task, metric), f"budget_curve_{task}_{metric}")

# %% [markdown]
# ## Cost against quality: one point per method x budget, the Pareto frontier dashed

# %%
PARETO_MIN_POINTS = 2  # a frontier needs something to compare
for task, metric in sorted(set(curves)):
    runs = df[(df["task"] == task) & (df["metric"] == metric)]
    if runs[["method", "budget"]].drop_duplicates().shape[0] < PARETO_MIN_POINTS:
        if len(runs):
            report.note(f"pareto {task} / {metric}: fewer than {PARETO_MIN_POINTS} method x budget points")
        continue
    fig, points = pareto_figure(df, task, metric)
    report.figure(fig, f"pareto_{task}_{metric}")
    points.to_csv(report.out / f"pareto_{task}_{metric}.csv", index=False, encoding="utf-8")
