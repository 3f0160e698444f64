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
# # Ablations (paper Tables 4, 5, 14) and training cost (Table 15)

# %%
from analysis.collect import collect
from analysis.figures import budget_curve
from analysis.paper import paper_results
from analysis.paths import default_out_dir, default_results_root, in_repo, require_runs
from analysis.report import Report
from analysis.tables import ABLATION_TABLES, TABLE_TITLES, cost_table, has_ours, results_table, successful

# %% tags=["parameters"]
results_root = default_results_root()  # relative paths are taken against the repository root
out_dir = default_out_dir()

# %%
results_root, out_dir = require_runs(results_root), in_repo(out_dir)
report = Report(out_dir, "ablations")
df = collect(results_root)

# %%
for name in ABLATION_TABLES:
    table = results_table(df, name)
    report.table(table, f"{name}_best", TABLE_TITLES[name])
    if not has_ours(table):
        report.note(f"{name}: no successful runs at its rows (method x budget); only the paper's numbers are shown")

# %% [markdown]
# ## Ablation variants against budget, with the paper's Table 4/5 points

# %%
paper = paper_results()
ablation = paper[paper["table"].isin(["table4", "table5"])]
ours = successful(df)
for task, metric in dict.fromkeys(zip(ablation["task"], ablation["metric"], strict=True)):
    variants = set(ablation.loc[ablation["task"] == task, "method"])
    runs = ours[(ours["task"] == task) & (ours["metric"] == metric) & ours["method"].isin(variants)]
    if runs.empty:
        report.note(f"ablation curve {task} / {metric}: no successful runs of the variants yet")
        continue
    fig = budget_curve(runs, task, metric, paper_tables=("table4", "table5"))
    report.figure(fig, f"ablation_curve_{task}_{metric}")

# %% [markdown]
# ## Training cost: AdaLoRA relative to LoRA (Table 15)

# %%
cost = cost_table(df)
report.table(cost, "table15_cost", "Table 15: AdaLoRA / LoRA peak memory and training time")
if cost["time ratio"].isna().all():
    report.note("table15: no task x budget has successful LoRA and AdaLoRA runs; only the paper's ratios are shown")
