"""Results tables: ours (mean ± std over seeds) in the paper's layout, beside the paper's numbers.

Conventions:

- Only runs with ``status == "success"`` count. ``std`` is the sample std (ddof=1) over seeds,
  so it is NaN for a single seed; ``n`` is the number of seeds. A cell with no run is NaN in
  the numeric table and "" when formatted, never 0.
- ``which`` picks the value at the best eval (``best``, the paper's convention of reporting
  the best dev score) or at the end of training (``final``).
- Rows are (method, budget): the paper's rows in its order, plus any of ours at a budget the
  table has (e.g. LoRA/AdaLoRA at 0.6M, which Table 1 lacks), placed after that budget's rows.
- "All Ave." (Table 1) is the mean over the 8 GLUE tasks of each task's score, MNLI = mean of
  m and mm, QQP = mean of Acc and F1 -- the definition that reproduces the paper's column
  (see ``analysis.paper``). It needs all 8 tasks (else NaN); its ``n`` is the smallest seed
  count among them and it has no std, like the paper's, which averages per-task means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.grouping import DEFAULT_PROTOCOL, pool_seeds
from analysis.labels import (
    budget_label,
    budget_rank,
    is_paper_method,
    method_label,
    method_rank,
    metric_label,
    run_labels,
    task_label,
)
from analysis.paper import AVERAGE_COMPONENTS, AVERAGE_METRIC, AVERAGE_TASK, paper_cost, paper_results
from analysis.stats import REFERENCE, holm, paired_comparisons

MAIN_TABLES = ("table1", "table2", "table3")
ABLATION_TABLES = ("table4", "table5", "table14")
TABLES = MAIN_TABLES + ABLATION_TABLES
TABLE_TITLES = {
    "table1": "Table 1: GLUE dev, DeBERTaV3-base",
    "table2": "Table 2: SQuAD v1.1 / v2.0 (EM / F1), DeBERTaV3-base",
    "table3": "Table 3: XSum / CNN-DailyMail (ROUGE), BART-large",
    "table4": "Table 4: importance-score ablation",
    "table5": "Table 5: SVD parametrisation and orthogonal regulariser ablation",
    "table14": "Table 14: LoRA on two weight types vs all six (0.3M)",
}
# Tables whose cells are compared, paired by seed, with the reference method (``analysis.stats``).
PAIRED_TABLES = ("table1", "table2", "table3", "table14")
PROTOCOLS = {
    "paper": "protocol paper: the best of the dev evaluations, reported on dev (the paper's)",
    "heldout": "protocol heldout: a validation split carved from train selects the checkpoint; dev is "
               "reported once, at that checkpoint",
}
GAP_LIMIT = 0.05  # a measured count more than 5% away from its budget's target is flagged
GAP_MARK = "†"
ABOVE_MARK, BELOW_MARK = "↑", "↓"
PARAMS = "#Params"
ROW_KEYS = ["method", "budget"]
_AGG_KEYS = ["task", "method", "budget", "protocol", "metric"]


def successful(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "success"]


def of_protocol(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The rows of one protocol (a frame without the column holds the paper's protocol only)."""
    return df[df["protocol"] == protocol] if "protocol" in df else df.iloc[:0] if protocol != DEFAULT_PROTOCOL else df


def protocols_present(df: pd.DataFrame) -> list[str]:
    """The protocols of the successful runs, the paper's first."""
    found = set(successful(df)["protocol"]) if "protocol" in df else {DEFAULT_PROTOCOL} if len(df) else set()
    return sorted(found, key=lambda p: (p != DEFAULT_PROTOCOL, p))


def aggregate(df: pd.DataFrame, which: str = "best") -> pd.DataFrame:
    """Mean, std (ddof=1), distinct-seed count, median measured #params and budget gap per task x method x
    budget x protocol x metric, over the runs of one configuration (``analysis.grouping``: conflicting
    labels are left out; protocols are never pooled)."""
    return pool_seeds(_values(df, which), f"value_{which}", _AGG_KEYS)


def _values(df: pd.DataFrame, which: str) -> pd.DataFrame:
    if which not in ("best", "final"):
        raise ValueError(f"which must be 'best' or 'final', got {which!r}")
    return successful(df).dropna(subset=[f"value_{which}"])


def _average_rows(agg: pd.DataFrame) -> pd.DataFrame:
    """Table 1's "All Ave." per (method, budget), from the per-task means (module docstring)."""
    components = {(task, metric) for task, metrics in AVERAGE_COMPONENTS.items() for metric in metrics}
    mask = np.array([key in components for key in zip(agg["task"], agg["metric"], strict=True)], dtype=bool)
    parts = agg.loc[mask]
    rows = []
    for (method, budget), group in parts.groupby(ROW_KEYS, sort=False):
        complete = len(group) == len(components)
        rows.append({"task": AVERAGE_TASK, "method": method, "budget": budget, "metric": AVERAGE_METRIC,
                     "mean": group.groupby("task")["mean"].mean().mean() if complete else np.nan,
                     "std": np.nan, "n": group["n"].min() if complete else np.nan,
                     "trainable_params": group["trainable_params"].median()})
    return pd.DataFrame(rows, columns=agg.columns)


def _column_labels(columns: list[tuple[str, str]]) -> list[str]:
    """``MNLI Acc`` / ``MNLI Acc-mm`` where a task has several metrics, else just ``RTE``."""
    metrics_per_task = pd.Series([t for t, _ in columns]).value_counts()
    return [task_label(t) if metrics_per_task[t] == 1 else f"{task_label(t)} {metric_label(m)}" for t, m in columns]


def _place_rows(paper_rows: list[tuple[str, str]], extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The paper's rows in order, and each extra row in the block it belongs to.

    Where the paper groups its rows by budget (Tables 1, 3), an extra row goes after the last row
    of its budget; where it groups them by method (the ablation Tables 4, 5: a variant's budgets
    side by side), it goes into its method's block in budget order (e.g. LoRA at 0.32%, which
    Table 5 does not report, between LoRA's 0.16% and 0.65%).
    """
    rows = list(paper_rows)
    methods = [m for m, _ in paper_rows]
    first = {m: methods.index(m) for m in methods}
    last = {m: len(methods) - 1 - methods[::-1].index(m) for m in methods}
    by_method = all(last[m] - first[m] + 1 == methods.count(m) for m in first)  # each method contiguous
    for row in sorted(extra, key=lambda r: (method_rank(r[0]), budget_rank(r[1]))):
        same_method = [i for i, r in enumerate(rows) if r[0] == row[0]]
        if by_method and same_method:
            before = [i for i in same_method if budget_rank(rows[i][1]) < budget_rank(row[1])]
            rows.insert(before[-1] + 1 if before else same_method[0], row)
            continue
        same_budget = [i for i, r in enumerate(rows) if r[1] == row[1]]
        rows.insert(same_budget[-1] + 1 if same_budget else len(rows), row)
    return rows


def _assemble(agg: pd.DataFrame, columns: list[tuple[str, str]], rows: list[tuple[str, str]],
              paper: pd.DataFrame | None, paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """Wide numeric table: index (method, budget), columns (label, field).

    Fields per task column: mean, std, n, and where given the paper's value, delta and ``vs_ref``
    (+1 / -1: the paired interval against the reference lies above / below 0; 0: it holds 0). The
    #Params column has ours, the paper's label and ``gap`` (the median relative budget gap).
    """
    index = pd.MultiIndex.from_tuples(rows, names=ROW_KEYS)
    cells = agg.set_index([*ROW_KEYS, "task", "metric"])
    out: dict[tuple[str, str], pd.Series] = {}
    params = agg.groupby(ROW_KEYS)["trainable_params"].median()
    out[(PARAMS, "ours")] = params.reindex(index)
    if paper is not None:
        out[(PARAMS, "paper")] = paper.groupby(ROW_KEYS)["params_label"].first().reindex(index)
    gaps = agg.groupby(ROW_KEYS)["budget_gap"].median() if "budget_gap" in agg else pd.Series(dtype=float)
    out[(PARAMS, "gap")] = gaps.reindex(index)
    compared = paired.set_index([*ROW_KEYS, "task", "metric"]) if paired is not None and len(paired) else None
    for (task, metric), label in zip(columns, _column_labels(columns), strict=True):
        keys = pd.MultiIndex.from_tuples([(*row, task, metric) for row in rows], names=cells.index.names)
        ours = cells.reindex(keys)
        for field in ("mean", "std", "n"):
            out[(label, field)] = pd.Series(ours[field].to_numpy(), index=index)
        if paper is not None:
            ref = paper[(paper["task"] == task) & (paper["metric"] == metric)].set_index(ROW_KEYS)["value"]
            out[(label, "paper")] = ref.reindex(index)
            out[(label, "delta")] = out[(label, "mean")] - out[(label, "paper")]
        if paired is not None:
            sign = pd.Series(np.nan, index=keys)
            if compared is not None:
                found = compared.reindex(keys)
                sign = np.sign(found["mean_diff"]).where(found["excludes_zero"].astype(bool), 0.0).where(
                    found["n"].notna())
            out[(label, "vs_ref")] = pd.Series(np.asarray(sign, dtype=float), index=index)
    table = pd.DataFrame(out, index=index)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["column", "field"])
    labels = _column_labels(columns)
    table.attrs["tasks"] = {label: task_label(t) for (t, _), label in zip(columns, labels, strict=True)}
    table.attrs["metrics"] = {label: metric_label(m) for (_, m), label in zip(columns, labels, strict=True)}
    return table


def _table_rows(paper: pd.DataFrame, agg: pd.DataFrame, labels: dict[str, str]) -> list[tuple[str, str]]:
    """The paper's rows in its order (with our rows of its methods at its other budgets placed among
    them), then every other method that ran at the table's budgets, by display name and budget."""
    paper_rows = list(dict.fromkeys(zip(paper["method"], paper["budget"], strict=True)))
    ours_rows = set(zip(agg["method"], agg["budget"], strict=True)) - set(paper_rows)
    budgets, methods = set(paper["budget"]), set(paper["method"])
    extra = [r for r in ours_rows if r[0] in methods and r[1] in budgets]
    others = sorted((r for r in ours_rows if not is_paper_method(r[0]) and r[1] in budgets),
                    key=lambda r: (method_rank(r[0], labels), budget_rank(r[1])))
    return _place_rows(paper_rows, extra) + others


def results_table(df: pd.DataFrame, table: str = "table1", which: str = "best", include_paper: bool = True,
                  protocol: str = DEFAULT_PROTOCOL, reference: str = REFERENCE) -> pd.DataFrame:
    """One of the paper's tables with our numbers under one ``protocol``; ``delta`` = ours − paper.

    Rows: the paper's, then any other method run at the table's tasks and budgets. Tables 1-3 and
    14 (``PAIRED_TABLES``) also compare every method with ``reference`` over shared seeds
    (``analysis.stats``): ``vs_ref`` per cell, and the comparisons themselves in
    ``attrs["paired"]`` (Holm-adjusted across the table), which :func:`paired_table` lays out.
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    paper = paper_results()
    paper = paper[paper["table"] == table]
    columns = list(dict.fromkeys(zip(paper["task"], paper["metric"], strict=True)))
    mine = of_protocol(df[df["task"].isin({t for t, _ in columns})], protocol)
    runs = _values(mine, which)
    runs = runs[np.array([(t, m) in set(columns) for t, m in zip(runs["task"], runs["metric"], strict=True)],
                         dtype=bool)]
    agg = aggregate(runs, which)
    if (AVERAGE_TASK, AVERAGE_METRIC) in columns:
        agg = pd.concat([agg, _average_rows(agg)], ignore_index=True)
    labels = run_labels(mine)
    rows = _table_rows(paper, agg, labels)
    paired = None
    if table in PAIRED_TABLES:
        paired = paired_comparisons(runs, f"value_{which}", ["task", "method", "budget", "metric"], reference)
        paired = paired[np.array([r in set(rows) for r in zip(paired["method"], paired["budget"], strict=True)],
                                 dtype=bool)]
        paired = paired.assign(p_holm=holm(paired["p"].to_numpy()))
    out = _assemble(agg, columns, rows, paper if include_paper else None, paired)
    out.attrs.update(table=table, labels=labels, protocol=protocol, which=which, reference=reference,
                     paired=paired)
    return out
def has_ours(table: pd.DataFrame) -> bool:
    """Whether any cell of a results/summary table holds one of our runs (not only paper values)."""
    return bool(table.xs("mean", axis=1, level="field").notna().to_numpy().any())


def summary_table(df: pd.DataFrame, which: str = "best", metric: str | None = None,
                  protocol: str = DEFAULT_PROTOCOL) -> pd.DataFrame:
    """Any tasks (tiny_*, bbc_*, ...) under one protocol: rows method × budget, one column per task.

    Each task shows its run's main metric unless ``metric`` names another one.
    """
    runs = of_protocol(successful(df), protocol)
    runs = runs[runs["is_main"]] if metric is None else runs[runs["metric"] == metric]
    agg = aggregate(runs, which)
    labels = run_labels(runs)
    columns = sorted(dict.fromkeys(zip(agg["task"], agg["metric"], strict=True)), key=lambda c: task_label(c[0]))
    rows = sorted(set(zip(agg["method"], agg["budget"], strict=True)),
                  key=lambda r: (method_rank(r[0], labels), budget_rank(r[1])))
    out = _assemble(agg, columns, rows, paper=None)
    out.attrs.update(labels=labels, protocol=protocol, which=which)
    return out


COST_KEYS = ["task", "budget", "method", "protocol", "config_group"]
COST_MEASURES = {  # column -> the run's fact (``_cost_runs``), each the median over the configuration's seeds
    "step ms": "step_time_median_s", "memory MB": "peak_memory_mb", "trainable start": "trainable_start",
    "trainable end": "trainable_params", "adapter MB": "adapter_bytes", "GPU-h/run": "gpu_hours",
}
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
    (NaN = n/a: the records predate the field). ``×LoRA`` columns divide by LoRA's row of the same
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
    table.attrs.update(missing="n/a", significant=4)  # n/a: a field older records lack, or no LoRA row
    return table


PAIRED_COLUMNS = ["Method", "Budget", "Task", "n", "Δ mean", "95% CI", "p", "p (Holm)", "seeds"]


def paired_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons behind a results table's ``↑`` / ``↓`` marks, one row per method x
    budget x task column: shared seeds, mean difference (method − reference), its 95% interval, the
    paired t-test's p and its Holm adjustment across the table. Its attrs carry the caption's facts."""
    paired = table.attrs.get("paired")
    if paired is None:
        raise ValueError(f"{table.attrs.get('table')!r} has no paired comparisons (only {PAIRED_TABLES} do)")
    labels, lines = table.attrs.get("labels", {}), []
    columns = {key: label for key, label in zip(
        [(t, m) for t, m in _table_columns(table.attrs["table"])],
        _column_labels(_table_columns(table.attrs["table"])), strict=True)}
    order = {row: i for i, row in enumerate(table.index)}
    for row in sorted(paired.itertuples(index=False),
                      key=lambda r: (order.get((r.method, r.budget), len(order)), list(columns).index((r.task, r.metric)))):
        interval = "" if pd.isna(row.ci_low) else f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]"
        lines.append({"Method": method_label(row.method, labels), "Budget": budget_label(row.budget),
                      "Task": columns[(row.task, row.metric)], "n": int(row.n), "Δ mean": f"{row.mean_diff:+.2f}",
                      "95% CI": interval + (_vs_mark(np.sign(row.mean_diff)) if row.excludes_zero else ""),
                      "p": "" if pd.isna(row.p) else f"{row.p:.3g}",
                      "p (Holm)": "" if pd.isna(row.p_holm) else f"{row.p_holm:.3g}", "seeds": row.seeds})
    out = pd.DataFrame(lines, columns=PAIRED_COLUMNS)
    out.attrs.update(protocol=table.attrs.get("protocol"), paired_notes=True,
                     reference=table.attrs.get("reference"), labels=labels, comparisons=len(paired))
    return out


def _table_columns(table: str) -> list[tuple[str, str]]:
    paper = paper_results()
    paper = paper[paper["table"] == table]
    return list(dict.fromkeys(zip(paper["task"], paper["metric"], strict=True)))


def protocol_table(df: pd.DataFrame, table: str = "table1", which: str = "best") -> pd.DataFrame:
    """Paper vs heldout protocol per method x budget of a results table: each protocol's mean over
    the table's task columns both protocols have for that row, the change, and each protocol's
    rank among the rows both have (1 = best), so a reader sees whether selecting on a held-out
    split changes the ranking. Empty when the runs hold fewer than two protocols."""
    present_ = [p for p in ("paper", "heldout") if p in protocols_present(df)]
    columns = ["Method", "Budget", "tasks", "paper", "heldout", "Δ (heldout − paper)", "rank paper", "rank heldout"]
    if len(present_) < 2:
        return pd.DataFrame(columns=columns)
    tables = {p: results_table(df, table, which, include_paper=False, protocol=p) for p in present_}
    means = {p: t.xs("mean", axis=1, level="field").drop(columns=PARAMS, errors="ignore") for p, t in tables.items()}
    rows = []
    for row in means["paper"].index.intersection(means["heldout"].index):
        both = means["paper"].loc[row].notna() & means["heldout"].loc[row].notna()
        if both.any():
            rows.append({"method": row[0], "budget": row[1], "tasks": int(both.sum()),
                         "paper": means["paper"].loc[row, both].mean(), "heldout": means["heldout"].loc[row, both].mean()})
    out = pd.DataFrame(rows, columns=["method", "budget", "tasks", "paper", "heldout"])
    out["Δ (heldout − paper)"] = out["heldout"] - out["paper"]
    for p in present_:
        out[f"rank {p}"] = out[p].rank(ascending=False, method="min").astype("Int64")
    labels = {**tables["paper"].attrs.get("labels", {}), **tables["heldout"].attrs.get("labels", {})}
    out.insert(0, "Method", [method_label(m, labels) for m in out.pop("method")])
    out.insert(1, "Budget", [budget_label(b) for b in out.pop("budget")])
    for column in ("paper", "heldout", "Δ (heldout − paper)"):
        out[column] = out[column].round(2)
    return out[columns]


# Tables laid out with budgets as columns, as the paper does (Table 2: SQuAD at 0.08%..0.65%,
# Tables 4/5: each GLUE task at its % levels); the others have one row per method x budget.
BUDGET_COLUMN_TABLES = ("table2", "table4", "table5")
SOURCE = "Source"


def format_params(value: float) -> str:
    """One format for every #Params cell: millions, 3 significant digits (``0.33M``, ``0.00221M``)."""
    return "" if pd.isna(value) else f"{value / 1e6:.3g}M"


def _vs_mark(sign: float) -> str:
    """``↑`` / ``↓``: the paired 95% interval against the reference lies above / below 0."""
    return ABOVE_MARK if sign > 0 else BELOW_MARK if sign < 0 else ""


def _ours_text(cells: list[tuple[float, float, float, float]], gap: bool = False) -> str:
    """``mean ± std`` per metric (with its paired mark), joined by ``/``, then the seed count:
    ``72.00 ± 2.83↑ (n=2)``; ``†`` after it where the row's budget gap exceeds ``GAP_LIMIT``."""
    if all(pd.isna(mean) for mean, _, _, _ in cells):
        return ""
    parts = [("–" if pd.isna(mean) else f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}")
             + _vs_mark(sign) for mean, std, _, sign in cells]
    text = f"{' / '.join(parts)} (n={int(min(n for _, _, n, _ in cells if not pd.isna(n)))})"
    return text + GAP_MARK if gap else text


def _paper_text(values: list[float], deltas: list[float]) -> str:
    """The paper's value(s) and, where we have a run, Δ = ours − paper: ``85.56 (Δ -13.56)``."""
    if all(pd.isna(v) for v in values):
        return ""
    text = "/".join("–" if pd.isna(v) else f"{v:.2f}" for v in values)
    if any(not pd.isna(d) for d in deltas):
        text += " (Δ " + "/".join("–" if pd.isna(d) else f"{d:+.2f}" for d in deltas) + ")"
    return text


def _task_groups(table: pd.DataFrame) -> dict[str, tuple[str, list[str]]]:
    """Column labels grouped by task, in table order: ``{"MNLI": ("Acc/Acc-mm", ["MNLI Acc", "MNLI Acc-mm"])}``."""
    tasks, metrics = table.attrs.get("tasks", {}), table.attrs.get("metrics", {})
    groups: dict[str, list[str]] = {}
    for label in dict.fromkeys(table.columns.get_level_values("column")):
        if label != PARAMS:
            groups.setdefault(tasks.get(label, label), []).append(label)
    return {task: ("/".join(metrics.get(lb, lb) for lb in labels) if len(labels) > 1 else "", labels)
            for task, labels in groups.items()}


def _header(task: str, metrics: str, budget: str = "") -> str:
    return " ".join(part for part in (task, budget, f"({metrics})" if metrics else "") if part)


def _gap_flagged(table: pd.DataFrame, row: tuple[str, str]) -> bool:
    gap = table.loc[row, (PARAMS, "gap")] if (PARAMS, "gap") in table.columns else np.nan
    return bool(not pd.isna(gap) and abs(gap) > GAP_LIMIT)


def _cells(table: pd.DataFrame, row: tuple[str, str], labels: list[str], gap: bool = False) -> tuple[str, str]:
    """(ours, paper) text of one task cell of one row; a method the paper does not have reads "—"
    on the paper's line wherever ours has a value."""
    fields = [table.loc[row, label] for label in labels]
    ours = _ours_text([(f["mean"], f["std"], f["n"], f.get("vs_ref", np.nan)) for f in fields], gap)
    if "paper" not in fields[0]:
        return ours, ""
    if not is_paper_method(row[0]):
        return ours, "—" if ours else ""
    return ours, _paper_text([f["paper"] for f in fields], [f["delta"] for f in fields])


def _format_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Tables 1, 3, 14 and any summary: one row per method x budget (ours), the paper's beneath it."""
    groups = _task_groups(table)
    params = table[PARAMS]
    lines = []
    names = table.attrs.get("labels", {})
    for row in table.index:
        method, budget = row
        cells = {_header(task, metrics): _cells(table, row, labels) for task, (metrics, labels) in groups.items()}
        base = {"Method": method_label(method, names), "Budget": budget_label(budget)}
        if any(ours for ours, _ in cells.values()):
            mark = GAP_MARK if _gap_flagged(table, row) else ""
            lines.append({**base, SOURCE: "ours", PARAMS: format_params(params.loc[row, "ours"]) + mark,
                          **{name: ours for name, (ours, _) in cells.items()}})
        if any(paper for _, paper in cells.values()):
            label = params.loc[row, "paper"] if "paper" in params else ""
            label = "—" if not is_paper_method(method) else "" if pd.isna(label) else label
            lines.append({**base, SOURCE: "paper", PARAMS: label,
                          **{name: paper for name, (_, paper) in cells.items()}})
    headers = [_header(task, metrics) for task, (metrics, _) in groups.items()]
    return pd.DataFrame(lines, columns=["Method", "Budget", SOURCE, PARAMS, *headers])


def _format_budget_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Tables 2, 4, 5 as the paper draws them: one row per method, one column per task x budget."""
    groups = _task_groups(table)
    budgets = sorted(set(table.index.get_level_values("budget")), key=budget_rank)
    columns = [(task, b) for task in groups for b in budgets]
    # Full FT has no budget level; the paper's Tables 2 shows it at "100%" of the parameters.
    headers = {(task, b): _header(task, groups[task][0], "100%" if b == "none" else budget_label(b))
               for task, b in columns}
    lines = []
    names = table.attrs.get("labels", {})
    for method in dict.fromkeys(table.index.get_level_values("method")):
        name = method_label(method, names)
        ours_line, paper_line = {"Method": name, SOURCE: "ours"}, {"Method": name, SOURCE: "paper"}
        for task, budget in columns:
            row = (method, budget)
            known = row in table.index
            ours, paper = _cells(table, row, groups[task][1], _gap_flagged(table, row)) if known else ("", "")
            ours_line[headers[(task, budget)]], paper_line[headers[(task, budget)]] = ours, paper
        lines += [line for line in (ours_line, paper_line) if any(line[h] for h in headers.values())]
    used = [h for h in headers.values() if any(line.get(h) for line in lines)]
    return pd.DataFrame(lines, columns=["Method", SOURCE, *used])


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for people, in the paper's layout: "mean ± std (n=k)" cells, the paper's row beneath.

    Budgets read as the paper writes them (``0.3M``, ``0.08%``); a task with several metrics
    (MNLI m/mm, QQP Acc/F1, EM/F1, ROUGE-1/2/L) is one column with ``/``-joined values.
    """
    if table.attrs.get("table") in BUDGET_COLUMN_TABLES:
        return _format_budget_columns(table)
    return _format_rows(table)


def present(table: pd.DataFrame) -> pd.DataFrame:
    """The formatted view of any table here: ``format_table`` for results, rounded for the rest."""
    if isinstance(table.columns, pd.MultiIndex):
        return format_table(table)
    digits = table.attrs.get("significant")
    flat = table.map(lambda v: float(f"{v:.{digits}g}") if isinstance(v, float) else v) if digits else table.round(3)
    flat = flat if flat.index.names == [None] else flat.reset_index()  # a plain row number is no column
    if "label" in flat:  # the display name its runs record, else the paper's, else the method's
        flat["method"] = [method_label(m, {m: lb} if isinstance(lb, str) else None)
                          for m, lb in zip(flat["method"], flat.pop("label"), strict=True)]
    for column, label in (("task", task_label), ("method", method_label), ("budget", budget_label)):
        if column in flat:
            flat[column] = flat[column].map(label)
    missing = table.attrs.get("missing")
    return flat.astype(object).where(flat.notna(), missing) if missing else flat


def markdown_cell(value: object) -> str:
    """One table cell on one line: ``\\`` and ``|`` escaped, line breaks folded to `` ↵ `` (a failed
    run's reason holds a traceback; a raw newline or bar would end the row or add a column)."""
    lines = [line.strip() for line in str(value).replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return " ↵ ".join(line for line in lines if line).replace("\\", "\\\\").replace("|", "\\|")


def to_markdown(formatted: pd.DataFrame, title: str | None = None) -> str:
    """A GitHub Markdown table (pandas' own needs ``tabulate``, which is not a dependency)."""
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"

    lines = [f"### {title}", ""] if title else []
    lines += [row(list(formatted.columns)), row(["---"] * formatted.shape[1])]
    lines += [row(["" if pd.isna(v) else v for v in values])
              for values in formatted.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "–": "--", "γ": r"$\gamma$", "λ": r"$\lambda$",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "†": r"$\dagger$", "×": r"$\times$", "−": "-"}
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$"}


def to_latex(formatted: pd.DataFrame, title: str | None = None) -> str:
    """A ``table`` float with a booktabs ``tabular`` (``\\usepackage{booktabs}``), pure ASCII.

    Built with ``Styler.to_latex`` (what pandas 3's ``DataFrame.to_latex`` wraps); ``±``, ``Δ``
    and the Greek letters of method names become math, so pdfLaTeX compiles it as is.
    """
    styler = formatted.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    if title:  # the cells are escaped by the Styler; the caption (notes name fields: params.budget_gap) here
        title = "".join(_LATEX_SPECIALS.get(char, char) for char in title)
    text = styler.to_latex(caption=title, hrules=True, position_float="centering",
                           column_format="l" * formatted.shape[1], environment="table")
    for symbol, macro in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, macro)
    return "% needs \\usepackage{booktabs}\n" + text


def table_notes(table: pd.DataFrame) -> list[str]:
    """The caption's notes: the protocol, what the markers mean (only those the table uses)."""
    notes = []
    protocol = table.attrs.get("protocol")
    if protocol:
        notes.append(PROTOCOLS.get(protocol, f"protocol {protocol}") + "; runs of other protocols are never "
                     "pooled into these cells.")
    if table.attrs.get("paired_notes"):
        reference = method_label(table.attrs["reference"], table.attrs.get("labels"))
        notes.append(f"Δ = method − {reference} over the seeds both ran (same model, one configuration each); 95% CI: "
                     f"t-interval of the mean difference (scipy.stats.ttest_rel); p: paired t-test; p (Holm): "
                     f"Holm's step-down adjustment across the table's {table.attrs['comparisons']} comparisons; "
                     f"{ABOVE_MARK} / {BELOW_MARK}: the interval lies above / below 0. Fewer than 2 shared seeds: "
                     "no interval, no p.")
    paired = table.attrs.get("paired")
    if paired is not None:
        reference = method_label(table.attrs["reference"], table.attrs.get("labels"))
        notes.append(f"{ABOVE_MARK} / {BELOW_MARK}: the 95% t-interval of the paired difference with {reference} "
                     f"(same seeds, same model) lies above / below 0; paired t-test p-values, Holm-adjusted across "
                     f"this table's {len(paired)} comparisons, are in the companion *_paired table.")
    if isinstance(table.columns, pd.MultiIndex) and (PARAMS, "gap") in table.columns:
        if (table[(PARAMS, "gap")].abs() > GAP_LIMIT).any():
            notes.append(f"{GAP_MARK}: the measured trainable count is more than {GAP_LIMIT:.0%} from its budget's "
                         "target (params.budget_gap).")
    if (isinstance(table.columns, pd.MultiIndex) and "paper" in table.columns.get_level_values("field")
            and any(not is_paper_method(m) for m in table.index.get_level_values("method"))):
        notes.append("—: a method the paper does not report.")
    missing = table.attrs.get("missing")
    if missing:
        notes.append(f"{missing}: the runs' records lack the field (older records), or no single LoRA row of the "
                     "same task, budget, protocol, model and step count to divide by.")
    return notes


def caption(table: pd.DataFrame, title: str | None) -> str | None:
    """``title`` followed by the table's notes, as one caption (what the LaTeX float shows)."""
    notes = table_notes(table)
    return " ".join([title or "", *notes]).strip() or None


def write_table(table: pd.DataFrame, out_dir: str | Path, stem: str, title: str | None = None,
                latex: bool = False) -> list[Path]:
    """``<stem>.csv`` (numeric, one column per label|field), ``<stem>.md`` (the title, the table, its
    notes) and optionally ``<stem>.tex`` (the title and notes as the caption)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numeric = table.copy()
    if isinstance(numeric.columns, pd.MultiIndex):
        numeric.columns = ["|".join(c) for c in numeric.columns]
    paths = [out_dir / f"{stem}.csv", out_dir / f"{stem}.md"]
    numeric.to_csv(paths[0])
    formatted = present(table)
    notes = table_notes(table)
    paths[1].write_text(to_markdown(formatted, title) + "".join(f"\n{note}\n" for note in notes))
    if latex:
        paths.append(out_dir / f"{stem}.tex")
        paths[-1].write_text(to_latex(formatted, caption(table, title)))
    return paths
