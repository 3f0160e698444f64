"""The paper's results tables (1-5 and 14): our runs of its backbone on its tasks, beside its numbers.

- Rows are (method, budget): the paper's rows in its order, plus any of ours at a budget the
  table has (e.g. LoRA/AdaLoRA at 0.6M, which Table 1 lacks), placed after that budget's rows.
- Only runs of the model the paper's table reports (``analysis.paper.PAPER_BACKBONES``:
  DeBERTaV3-base for GLUE and SQuAD, BART-large for XSum / CNN-DM) fill these tables, so a Δ
  against the paper compares like with like; runs of any other model get tables of their own
  (``analysis.tables.model_tables``).
- "All Ave." (Table 1) is the mean over the 8 GLUE tasks of each task's score, MNLI = mean of
  m and mm, QQP = mean of Acc and F1 -- the definition that reproduces the paper's column
  (see ``analysis.paper``). It needs all 8 tasks (else NaN); its ``n`` is the smallest seed
  count among them and it has no std, like the paper's, which averages per-task means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.grouping import DEFAULT_PROTOCOL
from analysis.labels import budget_rank, is_paper_method, method_rank, run_labels
from analysis.paper import AVERAGE_COMPONENTS, AVERAGE_METRIC, AVERAGE_TASK, PAPER_BACKBONES, paper_results
from analysis.stats import REFERENCE
from analysis.tables.common import ROW_KEYS, aggregate, assemble, of_protocol, values_of
from analysis.tables.paired import compare

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
# A table whose rows do not include the requested reference compares with a method it shows: Table 14
# sets LoRA on two weight types against LoRA on all six, so its pairs are taken against LoRA (all six).
OWN_REFERENCES = {"table14": "lora"}


def paper_rows(table: str) -> pd.DataFrame:
    """The paper's values of one of its tables (``analysis.paper.paper_results``)."""
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    paper = paper_results()
    return paper[paper["table"] == table]


def table_columns(table: str) -> list[tuple[str, str]]:
    """The (task, metric) columns of one of the paper's tables, in its order."""
    paper = paper_rows(table)
    return list(dict.fromkeys(zip(paper["task"], paper["metric"], strict=True)))


def table_reference(table: str, reference: str, rows: list[tuple[str, str]]) -> str:
    """``reference`` where the table has a row of it, else the table's own (``OWN_REFERENCES``)."""
    if any(method == reference for method, _ in rows):
        return reference
    return OWN_REFERENCES.get(table, reference)


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


def _place_rows(theirs: list[tuple[str, str]], extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The paper's rows in order, and each extra row in the block it belongs to.

    Where the paper groups its rows by budget (Tables 1, 3), an extra row goes after the last row
    of its budget; where it groups them by method (the ablation Tables 4, 5: a variant's budgets
    side by side), it goes into its method's block in budget order (e.g. LoRA at 0.32%, which
    Table 5 does not report, between LoRA's 0.16% and 0.65%).
    """
    rows = list(theirs)
    methods = [m for m, _ in theirs]
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


def _table_rows(paper: pd.DataFrame, agg: pd.DataFrame, labels: dict[str, str]) -> list[tuple[str, str]]:
    """The paper's rows in its order (with our rows of its methods at its other budgets placed among
    them), then every other method that ran at the table's budgets, by display name and budget."""
    theirs = list(dict.fromkeys(zip(paper["method"], paper["budget"], strict=True)))
    ours_rows = set(zip(agg["method"], agg["budget"], strict=True)) - set(theirs)
    budgets, methods = set(paper["budget"]), set(paper["method"])
    extra = [r for r in ours_rows if r[0] in methods and r[1] in budgets]
    others = sorted((r for r in ours_rows if not is_paper_method(r[0]) and r[1] in budgets),
                    key=lambda r: (method_rank(r[0], labels), budget_rank(r[1])))
    return _place_rows(theirs, extra) + others


def results_table(df: pd.DataFrame, table: str = "table1", which: str = "best", include_paper: bool = True,
                  protocol: str = DEFAULT_PROTOCOL, reference: str = REFERENCE) -> pd.DataFrame:
    """One of the paper's tables with our numbers under one ``protocol``; ``delta`` = ours − paper.

    Only runs of the table's backbone (``PAPER_BACKBONES``) count. Rows: the paper's, then any other
    method run at the table's tasks and budgets. Tables 1-3 and 14 (``PAIRED_TABLES``) also compare
    every method with ``reference`` (``table_reference``) over shared seeds (``analysis.stats``):
    ``vs_ref`` per cell, and the comparisons themselves in ``attrs["paired"]`` (Holm-adjusted across
    the table), which :func:`analysis.tables.paired_table` lays out.
    """
    paper = paper_rows(table)
    columns = table_columns(table)
    backbone = df[(df["model"] == PAPER_BACKBONES[table]) & df["task"].isin({t for t, _ in columns})]
    mine = of_protocol(backbone, protocol)
    runs = values_of(mine, which)
    runs = runs[np.array([(t, m) in set(columns) for t, m in zip(runs["task"], runs["metric"], strict=True)],
                         dtype=bool)]
    agg = aggregate(runs, which)
    if (AVERAGE_TASK, AVERAGE_METRIC) in columns:
        agg = pd.concat([agg, _average_rows(agg)], ignore_index=True)
    labels = run_labels(mine)
    rows = _table_rows(paper, agg, labels)
    reference = table_reference(table, reference, rows)
    paired = compare(runs, which, rows, reference) if table in PAIRED_TABLES else None
    out = assemble(agg, columns, rows, paper if include_paper else None, paired)
    out.attrs.update(table=table, model=PAPER_BACKBONES[table], labels=labels, protocol=protocol, which=which,
                     reference=reference, paired=paired)
    return out
