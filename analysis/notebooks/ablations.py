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
from analysis.stats import REFERENCE
from analysis.tables import (
    ABLATION_TABLES,
    TABLE_TITLES,
    cost_table,
    has_ours,
    paired_companion,
    protocols_present,
    results_table,
    successful,
)

# %% tags=["parameters"]
results_root = default_results_root()  # relative paths are taken against the repository root
out_dir = default_out_dir()
reference = REFERENCE  # Table 14 compares every method with it where it shows it, else with LoRA (all six)

# %%
results_root, out_dir = require_runs(results_root), in_repo(out_dir)
report = Report(out_dir, "ablations")
df = collect(results_root)

# %%
for protocol in protocols_present(df) or ["paper"]:
    tag = "" if protocol == "paper" else f"_{protocol}"  # the paper's protocol keeps the plain file names
    for name in ABLATION_TABLES:
        table = results_table(df, name, protocol=protocol, reference=reference)  # Table 14: against a method it shows
        title = f"{TABLE_TITLES[name]} (protocol {protocol})"
        companion = paired_companion(table, f"{name}{tag}", title)
        report.table(table, f"{name}{tag}_best", title)
        if not has_ours(table):
            report.note(f"{name} (protocol {protocol}): no successful runs at its rows (method x budget); only the "
                        "paper's numbers are shown")
        if companion is not None:
            report.table(*companion, latex=True)

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
# ## Training cost relative to LoRA (Table 15): every method, one configuration per row

# %%
cost = cost_table(df)
report.table(cost, "table15_cost", "Table 15: cost per method x budget (median over seeds), relative to LoRA")
if cost["memory ×LoRA"].isna().all():
    report.note("table15: no task x budget has successful runs beside a LoRA run of the same settings; only the "
                "paper's ratios are shown")
