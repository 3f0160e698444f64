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
# our mean ± std over seeds of the paper's backbone beside the paper's numbers (Δ = ours − paper), one
# set per protocol. Runs of any other model (the tiny ones included) get the same layouts of their own,
# named by model (`table1_<model>_best`), with no paper numbers. Every method that ran appears (the
# paper's first, others after them, under their labels); each cell is compared with `reference` over
# shared seeds (`<table>_paired`: mean difference, 95% CI, paired t-test, Holm). Decoder-LLM runs get their
# own tables (`llm_*`, analysis.llm_report).

# %%
from analysis.collect import collect, load_records, run_status, save
from analysis.llm_report import write_llm_outputs
from analysis.paper import BACKBONE_LABELS, KNOWN_INCONSISTENCIES, PAPER_BACKBONES
from analysis.paths import default_out_dir, default_results_root, in_repo, require_runs
from analysis.report import Report
from analysis.stats import REFERENCE
from analysis.tables import (
    MAIN_TABLES,
    TABLE_TITLES,
    has_ours,
    model_stem,
    model_tables,
    model_title,
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
# ## The paper's tables, ours beside them; every other model in the same layouts


# %%
write = report.results  # a table as <stem>_<which>, and its paired comparisons beside it

protocols = protocols_present(df) or ["paper"]
for protocol in protocols:
    tag = "" if protocol == "paper" else f"_{protocol}"  # the paper's protocol keeps the plain file names
    for name in MAIN_TABLES:
        for which in ("best", "final"):
            table = results_table(df, name, which=which, protocol=protocol, reference=reference)
            write(table, f"{name}{tag}", f"{TABLE_TITLES[name]} ({which} eval, protocol {protocol})")
            own = model_tables(df, name, which=which, protocol=protocol, reference=reference)
            for model, mine in own.items():
                write(mine, model_stem(name, model, tag), f"{model_title(name, model)} ({which} eval, protocol {protocol})")
            if not has_ours(table):
                backbone = BACKBONE_LABELS[PAPER_BACKBONES[name]]
                elsewhere = ", ".join(f"{model_stem(name, m, tag)}_{which}.md" for m in own)
                report.note(f"{name} ({which}, protocol {protocol}): no successful run of {backbone} on its tasks; only "
                            "the paper's numbers are shown" + (f" (runs of other models: {elsewhere})" if own else ""))

# %% [markdown]
# ## Paper vs heldout protocol (when runs of both exist)

# %%
if {"paper", "heldout"} <= set(protocols):
    comparison = protocol_table(df, "table1")
    if len(comparison):
        report.table(comparison, "table1_protocols",
                     "Table 1 under both protocols: mean over the GLUE columns both have, and the ranking")
    else:
        report.note("table1_protocols: not written, no Table 1 row has runs under both protocols")

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
# ## Decoder LLMs, when the results hold causal-LM runs
# Per model: math (GSM8K exact match, flexible / strict), commonsense (accuracy per evaluation set and their
# average) and PEFT's MetaMathQA comparison, each method paired with `reference` by seed (`llm_*_paired`); the
# proof that every rank-adaptive run allocated (`llm_allocation`) and its final ranks per layer and projection
# (`llm_rank_heatmap_*`). Nothing is written where there is no decoder run.

# %%
records = [record for _, record, _ in load_records(results_root) if record is not None]
print(f"{len(write_llm_outputs(report, df, records, reference))} decoder outputs written")

# %% [markdown]
# ## Known inconsistencies of the paper

# %%
inconsistencies = "".join(f"- {item}\n" for item in KNOWN_INCONSISTENCIES)
(report.out / "paper_inconsistencies.md").write_text(inconsistencies, encoding="utf-8")
print(inconsistencies)
