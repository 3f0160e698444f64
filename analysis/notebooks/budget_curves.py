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
# Metric vs measured trainable parameters, one line per method, std over seeds as error bars,
# the paper's points as hollow markers. Figure 2's panels first (MNLI-m accuracy, SQuAD v2.0
# F1, XSum ROUGE-2), then the main metric of every other task with runs.

# %%
from analysis.collect import collect
from analysis.figures import budget_curve
from analysis.report import Report
from analysis.tables import successful

# %% tags=["parameters"]
results_root = "outputs"
out_dir = "outputs/figures"

# %%
report = Report(out_dir, "budget_curves")
df = successful(collect(results_root))
figure2 = [("glue_mnli", "accuracy"), ("squad_v2", "f1"), ("xsum", "rouge2")]
mains = df.loc[df["is_main"], ["task", "metric"]].drop_duplicates().itertuples(index=False, name=None)
curves = list(dict.fromkeys([*figure2, *sorted(mains)]))

# %%
for task, metric in curves:
    if df[(df["task"] == task) & (df["metric"] == metric)].empty:
        report.note(f"budget curve {task} / {metric}: no successful runs yet")
        continue
    report.figure(budget_curve(df, task, metric), f"budget_curve_{task}_{metric}")
