"""Paper vs heldout protocol: does selecting the checkpoint on a held-out split change the ranking?"""

from __future__ import annotations

import pandas as pd

from analysis.labels import budget_label, method_label
from analysis.tables.common import PARAMS, protocols_present
from analysis.tables.paper_tables import results_table


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
