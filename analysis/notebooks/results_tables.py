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
# # Results tables
# Every run under `results_root`, collected into one table, and the paper's Tables 1-3 with
# our mean ± std over seeds beside the paper's numbers (Δ = ours − paper).

# %%
from analysis.collect import collect, run_status, save
from analysis.paper import KNOWN_INCONSISTENCIES
from analysis.paths import default_out_dir, default_results_root, in_repo, require_runs
from analysis.report import Report
from analysis.tables import MAIN_TABLES, TABLE_TITLES, has_ours, results_table, summary_table

# %% tags=["parameters"]
results_root = default_results_root()  # relative paths are taken against the repository root
out_dir = default_out_dir()

# %%
results_root, out_dir = require_runs(results_root), in_repo(out_dir)
report = Report(out_dir, "results_tables")
df = collect(results_root)
status = run_status(results_root)
save(df, out_dir, "results")
save(status, out_dir, "run_status")

# %% [markdown]
# ## Every run and its status (failed and unfinished runs included)

# %%
if len(status):
    report.table(status.drop(columns="run_dir").set_index(["task", "method", "budget", "seed"]),
                 "run_status", "Run status")
else:
    report.note(f"no run directories under {results_root}")

# %% [markdown]
# ## The paper's tables, ours beside them

# %%
for name in MAIN_TABLES:
    for which in ("best", "final"):
        table = results_table(df, name, which=which)
        report.table(table, f"{name}_{which}", f"{TABLE_TITLES[name]} ({which} eval)", latex=True)
        if not has_ours(table):
            report.note(f"{name} ({which}): no successful runs for its tasks; only the paper's numbers are shown")

# %% [markdown]
# ## All tasks, main metric (including tiny and demo tasks that have no paper numbers)

# %%
if len(df):
    report.table(summary_table(df), "summary_best", "All tasks, main metric (best eval)")
else:
    report.note("no successful runs to summarise")

# %% [markdown]
# ## Known inconsistencies of the paper

# %%
inconsistencies = "".join(f"- {item}\n" for item in KNOWN_INCONSISTENCIES)
(report.out / "paper_inconsistencies.md").write_text(inconsistencies)
print(inconsistencies)
