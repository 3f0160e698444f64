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
# # Decoder LLMs (issue 35)
# The runs of the causal-LM task family, per model: math (GSM8K exact match, flexible / strict),
# commonsense (accuracy per evaluation set and their average) and PEFT's MetaMathQA comparison, each
# method compared with `reference` over shared seeds (`llm_*_paired`); the proof that every
# rank-adaptive run allocated (`llm_allocation`) and its final ranks per layer and projection
# (`llm_rank_heatmap_*`). Nothing is written where the results hold no decoder run.

# %%
from analysis.collect import collect, load_records
from analysis.llm_report import write_llm_outputs
from analysis.paths import default_out_dir, default_results_root, in_repo, require_runs
from analysis.report import Report
from analysis.stats import REFERENCE

# %% tags=["parameters"]
results_root = default_results_root()  # relative paths are taken against the repository root
out_dir = default_out_dir()
reference = REFERENCE  # the method every other is compared with, paired by seed

# %%
results_root, out_dir = require_runs(results_root), in_repo(out_dir)
report = Report(out_dir, "llm_tables")
records = [record for _, record, _ in load_records(results_root) if record is not None]
written = write_llm_outputs(report, collect(results_root), records, reference)
print(f"{len(written)} decoder outputs written")
