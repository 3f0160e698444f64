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
# # Final ranks (paper Figure 3) and rank allocation over training
# For every task × budget × method whose runs record a rank pattern: the final rank of each
# adapted matrix (weight type × layer, mean over seeds), and for one seed the budget b(t)
# with the total rank per weight type along training. Runs of different configurations under
# one label (another learning rate, another model) get a heatmap each, named by `config_group`.

# %%
from analysis.collect import collect, select_records
from analysis.figures import rank_heatmap_from_runs, rank_over_training
from analysis.grouping import configurations
from analysis.paths import default_out_dir, default_results_root, in_repo, require_runs
from analysis.report import Report
from analysis.tables import successful

# %% tags=["parameters"]
results_root = default_results_root()  # relative paths are taken against the repository root
out_dir = default_out_dir()

# %%
results_root, out_dir = require_runs(results_root), in_repo(out_dir)
report = Report(out_dir, "rank_heatmaps")
df = successful(collect(results_root))
groups = sorted(set(zip(df["task"], df["budget"], df["method"], strict=True)))

# %%
drawn = 0
for task, budget, method in groups:
    records = [r for r in select_records(df, task=task, budget=budget, method=method) if r.get("ranks")]
    groups = configurations(records)
    for (_, group), runs in groups.items():
        stem = f"{task}_{method}_{budget}" + (f"_{group}" if len(groups) > 1 else "")
        fig, matrix = rank_heatmap_from_runs(runs, task, budget, method=method, config_group=group)
        report.figure(fig, f"rank_heatmap_{stem}")
        matrix.round(2).to_csv(f"{out_dir}/rank_heatmap_{stem}.csv")
        first = runs[0]
        report.figure(rank_over_training(first), f"rank_over_training_{stem}_seed{first['run']['seed']}")
        drawn += 1
if not drawn:
    report.note("no successful run records a rank pattern (AdaLoRA-like methods do)")
