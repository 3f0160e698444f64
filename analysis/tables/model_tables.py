"""Tables of runs the paper has no numbers for: any model, any task.

- ``model_tables``: a user's runs of the paper's task families on any model other than the
  table's backbone (the tiny models, another checkpoint), or on tasks the paper does not have,
  laid out as the paper's Table 1 / 2 / 3 (rows method x budget, one column per task), one table
  per model, each method compared with the reference over shared seeds like the paper's tables;
  no paper value, no Δ, since the paper reports another model.
- ``summary_table``: every task, its main metric, rows method x budget.
"""

from __future__ import annotations

import pandas as pd

from analysis.grouping import DEFAULT_PROTOCOL
from analysis.labels import budget_rank, method_rank, run_labels, task_label
from analysis.paper import BACKBONE_LABELS, PAPER_BACKBONES
from analysis.stats import REFERENCE
from analysis.tables.common import aggregate, assemble, of_protocol, successful, values_of
from analysis.tables.paired import compare
from analysis.tables.paper_tables import MAIN_TABLES, paper_rows, table_columns

# The task family (``task.family`` of the run's task config) whose runs each main table's layout holds.
TABLE_FAMILIES = {"table1": "glue", "table2": "squad", "table3": "summarization"}
LAYOUTS = {"table1": "GLUE-family tasks in Table 1's layout", "table2": "SQuAD-family tasks in Table 2's layout",
           "table3": "Summarisation tasks in Table 3's layout"}


def model_stem(table: str, model: str, tag: str = "") -> str:
    """File stem of a model's table: ``table1_tiny_deberta`` (+ the protocol tag, e.g. ``_heldout``);
    ``_best`` / ``_final`` / ``_paired`` follow, as for the paper's tables."""
    return f"{table}_{model}{tag}"


def model_title(table: str, model: str) -> str:
    """The title of a model's table: what it holds, and why the paper's numbers are not beside it."""
    backbone = PAPER_BACKBONES[table]
    return (f"{LAYOUTS[table]}, model {model} (the paper reports {BACKBONE_LABELS.get(backbone, backbone)} "
            "on its own tasks: no paper numbers beside these runs)")


def _own_runs(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """The successful runs of the table's task family that its paper version does not hold."""
    paper_tasks = {task for task, _ in table_columns(table)}
    runs = successful(df[df["family"] == TABLE_FAMILIES[table]])
    return runs[~((runs["model"] == PAPER_BACKBONES[table]) & runs["task"].isin(paper_tasks))]


def _metrics(runs: pd.DataFrame, table: str) -> pd.DataFrame:
    """Per task, the metrics the paper's table shows that its runs record (MNLI m/mm, EM/F1,
    ROUGE-1/2/Lsum); a task that records none of them shows its main metric."""
    metrics = set(paper_rows(table)["metric"])
    known = runs["metric"].isin(metrics)
    covered = set(runs.loc[known, "task"])
    return runs[known | (~runs["task"].isin(covered) & runs["is_main"].astype(bool))]


def model_table(runs: pd.DataFrame, table: str, model: str, which: str = "best",
                reference: str = REFERENCE) -> pd.DataFrame:
    """One model's runs (of one protocol) in ``table``'s layout, compared with ``reference``."""
    values = _metrics(values_of(runs, which), table)
    agg = aggregate(values, which)
    order = list(dict.fromkeys(paper_rows(table)["metric"]))
    columns = sorted(dict.fromkeys(zip(agg["task"], agg["metric"], strict=True)),
                     key=lambda c: (task_label(c[0]), order.index(c[1]) if c[1] in order else len(order), c[1]))
    labels = run_labels(runs)
    rows = sorted(dict.fromkeys(zip(agg["method"], agg["budget"], strict=True)),
                  key=lambda r: (method_rank(r[0], labels), budget_rank(r[1])))
    paired = compare(values, which, rows, reference)
    out = assemble(agg, columns, rows, paper=None, paired=paired)
    protocol = runs["protocol"].iloc[0] if len(runs) else DEFAULT_PROTOCOL
    out.attrs.update(table=table, model=model, labels=labels, protocol=protocol, which=which, reference=reference,
                     paired=paired)
    return out


def model_tables(df: pd.DataFrame, table: str = "table1", which: str = "best", protocol: str = DEFAULT_PROTOCOL,
                 reference: str = REFERENCE) -> dict[str, pd.DataFrame]:
    """``{model: table}``: the runs of ``table``'s task family (``TABLE_FAMILIES``) that the paper's
    table does not hold (another model, or the backbone on a task of the user's), one
    :func:`model_table` per model, in model order. Empty when there are none."""
    if table not in MAIN_TABLES:
        raise ValueError(f"a model's own tables take the layout of one of {MAIN_TABLES}, got {table!r}")
    runs = of_protocol(_own_runs(df, table), protocol)
    return {model: model_table(group, table, model, which, reference)
            for model, group in runs.groupby("model", sort=True)}


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
    out = assemble(agg, columns, rows, paper=None)
    out.attrs.update(labels=labels, protocol=protocol, which=which)
    return out
