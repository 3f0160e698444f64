"""Strings for people: a numeric table in the paper's layout, "mean ± std (n=k)" cells, the paper's row beneath."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.labels import budget_label, budget_rank, is_paper_method, method_label, task_label
from analysis.tables.common import GAP_LIMIT, GAP_MARK, PARAMS
from analysis.tables.paired import vs_mark

# Tables laid out with budgets as columns, as the paper does (Table 2: SQuAD at 0.08%..0.65%,
# Tables 4/5: each GLUE task at its % levels); the others have one row per method x budget.
BUDGET_COLUMN_TABLES = ("table2", "table4", "table5")
SOURCE = "Source"


def format_params(value: float) -> str:
    """One format for every #Params cell: millions, 3 significant digits (``0.33M``, ``0.00221M``)."""
    return "" if pd.isna(value) else f"{value / 1e6:.3g}M"


def _ours_text(cells: list[tuple[float, float, float, float]], gap: bool = False) -> str:
    """``mean ± std`` per metric (with its paired mark), joined by ``/``, then the seed count:
    ``72.00 ± 2.83↑ (n=2)``; ``†`` after it where the row's budget gap exceeds ``GAP_LIMIT``."""
    if all(pd.isna(mean) for mean, _, _, _ in cells):
        return ""
    parts = [("–" if pd.isna(mean) else f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}")
             + vs_mark(sign) for mean, std, _, sign in cells]
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


def _gap_flagged(line: dict[str, dict[str, object]]) -> bool:
    gap = line.get(PARAMS, {}).get("gap", np.nan)
    return bool(not pd.isna(gap) and abs(gap) > GAP_LIMIT)


def _rows(table: pd.DataFrame) -> list[dict[str, dict[str, object]]]:
    """Each row of ``table`` as ``{column: {field: value}}``, in index order, read in one pass: a ``.loc``
    per cell on the two-level columns was most of the time ``make figures`` spent formatting tables."""
    rows = []
    for values in table.to_numpy(dtype=object):  # not a Series per row or column: each copies the attrs
        line: dict[str, dict[str, object]] = {}
        for (column, field), value in zip(table.columns, values, strict=True):
            line.setdefault(column, {})[field] = value
        rows.append(line)
    return rows


def _cells(line: dict[str, dict[str, object]], method: str, labels: list[str], gap: bool = False) -> tuple[str, str]:
    """(ours, paper) text of one task cell of one row (``line``: the row as :func:`_rows` reads it); a method
    the paper does not have reads "—" on the paper's line wherever ours has a value."""
    fields = [line[label] for label in labels]
    ours = _ours_text([(f["mean"], f["std"], f["n"], f.get("vs_ref", np.nan)) for f in fields], gap)
    if "paper" not in fields[0]:
        return ours, ""
    if not is_paper_method(method):
        return ours, "—" if ours else ""
    return ours, _paper_text([f["paper"] for f in fields], [f["delta"] for f in fields])


def _format_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Tables 1, 3, 14 and any summary: one row per method x budget (ours), the paper's beneath it."""
    groups = _task_groups(table)
    lines = []
    names = table.attrs.get("labels", {})
    for row, line in zip(table.index, _rows(table), strict=True):
        method, budget = row
        cells = {_header(task, metrics): _cells(line, method, labels) for task, (metrics, labels) in groups.items()}
        base = {"Method": method_label(method, names), "Budget": budget_label(budget)}
        if any(ours for ours, _ in cells.values()):
            mark = GAP_MARK if _gap_flagged(line) else ""
            lines.append({**base, SOURCE: "ours", PARAMS: format_params(line[PARAMS]["ours"]) + mark,
                          **{name: ours for name, (ours, _) in cells.items()}})
        if any(paper for _, paper in cells.values()):
            label = line[PARAMS].get("paper", "")
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
    rows = dict(zip(table.index, _rows(table), strict=True))
    for method in dict.fromkeys(table.index.get_level_values("method")):
        name = method_label(method, names)
        ours_line, paper_line = {"Method": name, SOURCE: "ours"}, {"Method": name, SOURCE: "paper"}
        for task, budget in columns:
            line = rows.get((method, budget))
            ours, paper = ("", "") if line is None else _cells(line, method, groups[task][1], _gap_flagged(line))
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
