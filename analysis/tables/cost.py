"""Table 15, training cost: per task x budget x method configuration, beside LoRA's row and the paper's ratios."""

from __future__ import annotations

import pandas as pd

from analysis.labels import budget_rank, method_rank, task_label
from analysis.paper import paper_cost
from analysis.tables.common import successful

COST_KEYS = ["task", "budget", "method", "protocol", "config_group"]
COST_MEASURES = {  # column -> the run's fact (``_cost_runs``), each the median over the configuration's seeds
    "step ms": "step_time_median_s", "memory MB": "peak_memory_mb", "rank held": "rank_held",
    "trainable start": "trainable_start", "trainable end": "trainable_params", "adapter MB": "adapter_bytes",
    "GPU-h/run": "gpu_hours",
}
MEMORY_NOTE = ("memory MB is the run's measured peak (CUDA's allocator peak; on a CPU the process's peak resident "
               "set). A rank-adaptive kind allocates its tensors at its initial rank for the whole run and masks "
               "the triplets it prunes (AdaLoRA: init_r, not the target r), so its memory is that of 'rank held' "
               "(params.update_scale.r: LoRA r, AdaLoRA init_r) and 'trainable start' (the count at init_r), "
               "not of 'trainable end' (the count at the ranks kept, which the budget matches).")
COST_RATIOS = {"step ms": "step ×LoRA", "memory MB": "memory ×LoRA", "trainable start": "start ×LoRA",
               "trainable end": "end ×LoRA", "adapter MB": "adapter ×LoRA", "GPU-h/run": "GPU-h ×LoRA"}


def _cost_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per successful run with its cost in the units the cost table shows."""
    runs = successful(df).drop_duplicates("run_dir").copy()
    runs["step_time_median_s"] = runs["step_time_median_s"].astype(float) * 1000
    runs["adapter_bytes"] = runs["adapter_bytes"].astype(float) / 2**20
    runs["gpu_hours"] = runs["wall_time_s"].astype(float) / 3600 * runs["devices"].astype(float).fillna(1)
    runs["config_group"] = runs["config_group"].astype(object).where(runs["config_group"].notna(), "")
    return runs


def cost_table(df: pd.DataFrame, include_paper: bool = True) -> pd.DataFrame:
    """Table 15 measured as it says: per task x budget x method, one configuration per row.

    Step time is the median optimiser-step time of the run (``train.step_time_s``: evaluation and
    checkpoints excluded); peak memory, the trainable count at the start (``params.trainable_paper_start``)
    and at the end, the final weights' file size, and GPU-hours per run (whole-run wall time / 3600 x
    the run's device count, 1 where not recorded). Each is the median over the configuration's seeds
    (NaN = n/a: the records predate the field). ``rank held`` is the rank the kind's tensors are allocated
    at all run (``params.update_scale.r``): AdaLoRA's init_r, whose buffers its memory includes
    (``MEMORY_NOTE``, in the caption). ``×LoRA`` columns divide by LoRA's row of the same
    task, budget, protocol, model and step count, where there is exactly one; the paper's Table 15
    ratios (AdaLoRA / LoRA, one V100, per epoch) stand beside them.
    """
    runs = _cost_runs(df)
    grouped = runs.groupby(COST_KEYS, sort=False)
    table = grouped.agg(label=("label", "first"), model=("model", "first"), steps=("steps", "median"),
                        n=("seed", "nunique"),
                        **{column: (fact, "median") for column, fact in COST_MEASURES.items()})
    table = table.reset_index()
    lora = table[table["method"] == "lora"]
    match = ["task", "budget", "protocol", "model", "steps"]
    unique = lora.groupby(match, dropna=False).filter(lambda g: len(g) == 1)
    joined = table.merge(unique[[*match, *COST_RATIOS]], on=match, how="left", suffixes=("", " lora"))
    for column, ratio in COST_RATIOS.items():
        table[ratio] = (joined[column] / joined[f"{column} lora"]).to_numpy()
    if include_paper:
        ref = paper_cost().pivot_table(index=["task", "budget"], columns="method",
                                       values=["peak_memory_gb", "time_per_epoch_min"])
        ratios = pd.DataFrame({
            "paper memory ×LoRA": ref[("peak_memory_gb", "adalora")] / ref[("peak_memory_gb", "lora")],
            "paper time ×LoRA": ref[("time_per_epoch_min", "adalora")] / ref[("time_per_epoch_min", "lora")],
        }).reset_index().assign(method="adalora")
        ratios = pd.concat([ratios, ratios.assign(method="lora", **{"paper memory ×LoRA": 1.0,
                                                                     "paper time ×LoRA": 1.0})])
        table = table.merge(ratios, on=["task", "budget", "method"], how="outer")
        table["protocol"] = table["protocol"].fillna("")
    table["_order"] = [(task_label(t), budget_rank(b), method_rank(m)) for t, b, m in
                       zip(table["task"], table["budget"], table["method"], strict=True)]
    table = table.sort_values("_order", kind="stable").drop(columns=["_order", "model"])
    table["config_group"] = table["config_group"].fillna("")
    table = table.astype({"steps": "Int64", "n": "Int64"}).set_index(COST_KEYS)
    table.attrs.update(missing="n/a", significant=4, note=MEMORY_NOTE)  # n/a: a field older records lack, or no LoRA row
    return table
