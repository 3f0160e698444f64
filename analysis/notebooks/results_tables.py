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
# our mean ± std over seeds beside the paper's numbers (Δ = ours − paper), one set per protocol.
# Every method that ran appears (the paper's first, others after them); each cell is compared with
# `reference` over shared seeds (`table<N>_paired`: mean difference, 95% CI, paired t-test, Holm).

# %%
from analysis.collect import collect, run_status, save
from analysis.labels import method_label
from analysis.paper import KNOWN_INCONSISTENCIES
from analysis.paths import default_out_dir, default_results_root, in_repo, require_runs
from analysis.report import Report
from analysis.stats import REFERENCE
from analysis.tables import (
    MAIN_TABLES,
    TABLE_TITLES,
    has_ours,
    paired_table,
    protocol_table,
    protocols_present,
    results_table,
    summary_table,
)

# %% tags=["parameters"]
results_root = default_results_root()  # relative paths are taken against the repository root
out_dir = default_out_dir()
reference = REFERENCE  # the method every other is compared with, paired by seed

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
protocols = protocols_present(df) or ["paper"]
for protocol in protocols:
    tag = "" if protocol == "paper" else f"_{protocol}"  # the paper's protocol keeps the plain file names
    for name in MAIN_TABLES:
        for which in ("best", "final"):
            table = results_table(df, name, which=which, protocol=protocol, reference=reference)
            report.table(table, f"{name}{tag}_{which}", f"{TABLE_TITLES[name]} ({which} eval, protocol {protocol})",
                         latex=True)
            if not has_ours(table):
                report.note(f"{name} ({which}, protocol {protocol}): no successful runs for its tasks; only the "
                            "paper's numbers are shown")
            elif which == "best":
                report.table(paired_table(table), f"{name}{tag}_paired",
                             f"{TABLE_TITLES[name]}: paired differences with {method_label(reference)} (best eval, protocol "
                             f"{protocol})", latex=True)

# %% [markdown]
# ## Paper vs heldout protocol (when runs of both exist)

# %%
if {"paper", "heldout"} <= set(protocols):
    report.table(protocol_table(df, "table1"), "table1_protocols",
                 "Table 1 under both protocols: mean over the GLUE columns both have, and the ranking")

# %% [markdown]
# ## All tasks, main metric (including tiny and demo tasks that have no paper numbers)

# %%
if len(df):
    for protocol in protocols:
        tag = "" if protocol == "paper" else f"_{protocol}"
        report.table(summary_table(df, protocol=protocol), f"summary{tag}_best",
                     f"All tasks, main metric (best eval, protocol {protocol})")
else:
    report.note("no successful runs to summarise")

# %% [markdown]
# ## Known inconsistencies of the paper

# %%
inconsistencies = "".join(f"- {item}\n" for item in KNOWN_INCONSISTENCIES)
(report.out / "paper_inconsistencies.md").write_text(inconsistencies)
print(inconsistencies)
