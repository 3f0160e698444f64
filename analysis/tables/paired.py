"""Paired comparisons with a reference method: the numbers behind a table's ``↑`` / ``↓`` marks.

Every method of a table is compared with the reference over the seeds both ran, on the same model
and protocol (``analysis.stats``); p-values are Holm-adjusted across the table's comparisons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.labels import budget_label, method_label, run_labels
from analysis.stats import holm, paired_comparisons
from analysis.tables.common import ABOVE_MARK, BELOW_MARK, column_labels, successful

PAIRED_COLUMNS = ["Method", "Budget", "Task", "n", "Δ mean", "95% CI", "p", "p (Holm)", "seeds"]


class UnknownReference(ValueError):
    """The method asked for as the reference has no successful run: a typo, or a method not run yet."""


def compare(runs: pd.DataFrame, which: str, rows: list[tuple[str, str]], reference: str) -> pd.DataFrame:
    """The comparisons of a table's ``rows`` with ``reference`` (one per task column), Holm-adjusted."""
    paired = paired_comparisons(runs, f"value_{which}", ["task", "method", "budget", "metric"], reference)
    shown = set(rows)
    paired = paired[np.array([r in shown for r in zip(paired["method"], paired["budget"], strict=True)], dtype=bool)]
    return paired.assign(p_holm=holm(paired["p"].to_numpy()))


def vs_mark(sign: float) -> str:
    """``↑`` / ``↓``: the paired 95% interval against the reference lies above / below 0."""
    return ABOVE_MARK if sign > 0 else BELOW_MARK if sign < 0 else ""


def paired_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons behind a results table's ``↑`` / ``↓`` marks, one row per method x
    budget x task column: shared seeds, mean difference (method − reference), its 95% interval, the
    paired t-test's p and its Holm adjustment across the table. Its attrs carry the caption's facts."""
    paired = table.attrs.get("paired")
    if paired is None:
        raise ValueError(f"{table.attrs.get('table')!r} has no paired comparisons")
    labels, lines = table.attrs.get("labels", {}), []
    columns = dict(zip(table.attrs["columns"], column_labels(table.attrs["columns"]), strict=True))
    order = {row: i for i, row in enumerate(table.index)}
    for row in sorted(paired.itertuples(index=False),
                      key=lambda r: (order.get((r.method, r.budget), len(order)), list(columns).index((r.task, r.metric)))):
        interval = "" if pd.isna(row.ci_low) else f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]"
        lines.append({"Method": method_label(row.method, labels), "Budget": budget_label(row.budget),
                      "Task": columns[(row.task, row.metric)], "n": int(row.n), "Δ mean": f"{row.mean_diff:+.2f}",
                      "95% CI": interval + (vs_mark(np.sign(row.mean_diff)) if row.excludes_zero else ""),
                      "p": "" if pd.isna(row.p) else f"{row.p:.3g}",
                      "p (Holm)": "" if pd.isna(row.p_holm) else f"{row.p_holm:.3g}", "seeds": row.seeds})
    out = pd.DataFrame(lines, columns=PAIRED_COLUMNS)
    out.attrs.update(protocol=table.attrs.get("protocol"), paired_notes=True,
                     reference=table.attrs.get("reference"), labels=labels, comparisons=len(paired))
    return out


def paired_title(table: pd.DataFrame, title: str) -> str:
    """``<title>: paired differences with <reference>``, the reference under the label its runs record."""
    return f"{title}: paired differences with {method_label(table.attrs['reference'], table.attrs.get('labels'))}"


def paired_companion(table: pd.DataFrame, stem: str, title: str) -> tuple[pd.DataFrame, str, str] | None:
    """What to write beside the best-eval table ``<stem>_best``: (its paired table, ``<stem>_paired``, the
    title), and the table's caption then names that file; None for a final-eval table or where no method
    shares a seed with the reference (an empty table is never written, and no caption points to one)."""
    paired = table.attrs.get("paired")
    if table.attrs.get("which") != "best" or paired is None or paired.empty:
        return None
    table.attrs["companion"] = f"{stem}_paired.md"
    return paired_table(table), f"{stem}_paired", paired_title(table, title)


def check_reference(df: pd.DataFrame, reference: str) -> None:
    """Refuse a reference with no successful run, naming the methods that have one (and their labels).

    A misspelt ``--reference`` would otherwise leave every paired table empty without a word."""
    runs = successful(df)
    if reference in set(runs["method"]):
        return
    labels = run_labels(runs)
    present = ", ".join(m if method_label(m, labels) == m else f"{m} ({method_label(m, labels)})"
                        for m in sorted(set(runs["method"])))
    raise UnknownReference(f"--reference {reference}: no successful run of a method named {reference!r}; "
                           f"the methods present are: {present or 'none'}. Pass one of these names.")
