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
from analysis.collect import collect
from analysis.figures import rank_heatmaps_by_configuration, rank_over_training
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
    for suffix, fig, matrix, first in rank_heatmaps_by_configuration(df, task, budget, method):
        stem = f"{task}_{method}_{budget}{suffix}"
        report.figure(fig, f"rank_heatmap_{stem}")
        matrix.round(2).to_csv(f"{out_dir}/rank_heatmap_{stem}.csv", encoding="utf-8")
        report.figure(rank_over_training(first), f"rank_over_training_{stem}_seed{first['run']['seed']}")
        drawn += 1
if not drawn:
    report.note("no successful run records a rank pattern (AdaLoRA-like methods do)")
