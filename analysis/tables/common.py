"""What every table here shares: which runs count, how seeds are pooled, the wide numeric layout.

Conventions (the package docstring, ``analysis.tables``, has the rest): only runs with
``status == "success"`` count; ``std`` is the sample std (ddof=1) over seeds, NaN for one seed;
``n`` is the number of distinct seeds; a cell with no run is NaN, never 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.grouping import DEFAULT_PROTOCOL, pool_seeds
from analysis.labels import metric_label, task_label

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
    """The runs that finished (failed, running and unreadable runs are listed by ``run_status`` only)."""
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
    return pool_seeds(values_of(df, which), f"value_{which}", _AGG_KEYS)


def values_of(df: pd.DataFrame, which: str) -> pd.DataFrame:
    """The successful runs that hold a ``which`` (best / final) value."""
    if which not in ("best", "final"):
        raise ValueError(f"which must be 'best' or 'final', got {which!r}")
    return successful(df).dropna(subset=[f"value_{which}"])


def column_labels(columns: list[tuple[str, str]]) -> list[str]:
    """``MNLI Acc`` / ``MNLI Acc-mm`` where a task has several metrics, else just ``RTE``."""
    metrics_per_task = pd.Series([t for t, _ in columns]).value_counts()
    return [task_label(t) if metrics_per_task[t] == 1 else f"{task_label(t)} {metric_label(m)}" for t, m in columns]


def assemble(agg: pd.DataFrame, columns: list[tuple[str, str]], rows: list[tuple[str, str]],
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
    for (task, metric), label in zip(columns, column_labels(columns), strict=True):
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
    labels = column_labels(columns)
    table.attrs["columns"] = list(columns)
    table.attrs["tasks"] = {label: task_label(t) for (t, _), label in zip(columns, labels, strict=True)}
    table.attrs["metrics"] = {label: metric_label(m) for (_, m), label in zip(columns, labels, strict=True)}
    return table


def has_ours(table: pd.DataFrame) -> bool:
    """Whether any cell of a results/summary table holds one of our runs (not only paper values)."""
    return bool(table.xs("mean", axis=1, level="field").notna().to_numpy().any())
