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

from analysis.grouping import pool_seeds
from analysis.labels import budget_rank, method_label, method_rank, metric_label, task_label
from analysis.paper import AVERAGE_COMPONENTS, AVERAGE_METRIC, AVERAGE_TASK, paper_cost, paper_results

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
PARAMS = "#Params"
ROW_KEYS = ["method", "budget"]
_AGG_KEYS = ["task", "method", "budget", "metric"]


def successful(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "success"]


def aggregate(df: pd.DataFrame, which: str = "best") -> pd.DataFrame:
    """Mean, std (ddof=1), distinct-seed count and median measured #params per task x method x budget x
    metric, over the runs of one configuration (``analysis.grouping``: conflicting labels are left out)."""
    if which not in ("best", "final"):
        raise ValueError(f"which must be 'best' or 'final', got {which!r}")
    runs = successful(df).dropna(subset=[f"value_{which}"])
    return pool_seeds(runs, f"value_{which}", _AGG_KEYS)


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
              paper: pd.DataFrame | None) -> pd.DataFrame:
    """Wide numeric table: index (method, budget), columns (label, field)."""
    index = pd.MultiIndex.from_tuples(rows, names=ROW_KEYS)
    cells = agg.set_index([*ROW_KEYS, "task", "metric"])
    out: dict[tuple[str, str], pd.Series] = {}
    params = agg.groupby(ROW_KEYS)["trainable_params"].median()
    out[(PARAMS, "ours")] = params.reindex(index)
    if paper is not None:
        out[(PARAMS, "paper")] = paper.groupby(ROW_KEYS)["params_label"].first().reindex(index)
    for (task, metric), label in zip(columns, _column_labels(columns), strict=True):
        keys = [(*row, task, metric) for row in rows]
        ours = cells.reindex(pd.MultiIndex.from_tuples(keys, names=cells.index.names))
        for field in ("mean", "std", "n"):
            out[(label, field)] = pd.Series(ours[field].to_numpy(), index=index)
        if paper is not None:
            ref = paper[(paper["task"] == task) & (paper["metric"] == metric)].set_index(ROW_KEYS)["value"]
            out[(label, "paper")] = ref.reindex(index)
            out[(label, "delta")] = out[(label, "mean")] - out[(label, "paper")]
    table = pd.DataFrame(out, index=index)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["column", "field"])
    return table


def results_table(df: pd.DataFrame, table: str = "table1", which: str = "best",
                  include_paper: bool = True) -> pd.DataFrame:
    """One of the paper's tables with our numbers; ``delta`` = ours − paper."""
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    paper = paper_results()
    paper = paper[paper["table"] == table]
    columns = list(dict.fromkeys(zip(paper["task"], paper["metric"], strict=True)))
    agg = aggregate(df[df["task"].isin({t for t, _ in columns})], which)
    if (AVERAGE_TASK, AVERAGE_METRIC) in columns:
        agg = pd.concat([agg, _average_rows(agg)], ignore_index=True)
    paper_rows = list(dict.fromkeys(zip(paper["method"], paper["budget"], strict=True)))
    ours_rows = set(zip(agg["method"], agg["budget"], strict=True))
    extra = [r for r in ours_rows - set(paper_rows)
             if r[0] in set(paper["method"]) and r[1] in set(paper["budget"])]
    return _assemble(agg, columns, _place_rows(paper_rows, extra), paper if include_paper else None)


def has_ours(table: pd.DataFrame) -> bool:
    """Whether any cell of a results/summary table holds one of our runs (not only paper values)."""
    return bool(table.xs("mean", axis=1, level="field").notna().to_numpy().any())


def summary_table(df: pd.DataFrame, which: str = "best", metric: str | None = None) -> pd.DataFrame:
    """Any tasks (tiny_*, bbc_*, ...): rows method × budget, one column per task.

    Each task shows its run's main metric unless ``metric`` names another one.
    """
    runs = successful(df)
    runs = runs[runs["is_main"]] if metric is None else runs[runs["metric"] == metric]
    agg = aggregate(runs, which)
    columns = sorted(dict.fromkeys(zip(agg["task"], agg["metric"], strict=True)), key=lambda c: task_label(c[0]))
    rows = sorted(set(zip(agg["method"], agg["budget"], strict=True)),
                  key=lambda r: (method_rank(r[0]), budget_rank(r[1])))
    return _assemble(agg, columns, rows, paper=None)


def cost_table(df: pd.DataFrame, include_paper: bool = True) -> pd.DataFrame:
    """Table 15's comparison: AdaLoRA's peak memory and training time relative to LoRA's.

    Ours are medians over seeds of whole-run wall time (training + evaluation) and peak
    memory; both methods run the same steps, so the AdaLoRA/LoRA ratio is comparable with
    the paper's per-epoch ratio even though the absolute numbers are not.
    """
    runs = successful(df).drop_duplicates("run_dir")
    runs = runs[runs["method"].isin(["lora", "adalora"])]
    ours = runs.pivot_table(index=["task", "budget"], columns="method",
                            values=["peak_memory_mb", "wall_time_s"], aggfunc="median")
    table = pd.DataFrame(index=ours.index)
    for method in ("lora", "adalora"):
        table[f"{method} peak memory (MB)"] = ours.get(("peak_memory_mb", method), np.nan)
        table[f"{method} wall time (s)"] = ours.get(("wall_time_s", method), np.nan)
    table["memory ratio"] = table["adalora peak memory (MB)"] / table["lora peak memory (MB)"]
    table["time ratio"] = table["adalora wall time (s)"] / table["lora wall time (s)"]
    if include_paper:
        ref = paper_cost().pivot_table(index=["task", "budget"], columns="method",
                                       values=["peak_memory_gb", "time_per_epoch_min"])
        paper = pd.DataFrame({
            "paper memory ratio": ref[("peak_memory_gb", "adalora")] / ref[("peak_memory_gb", "lora")],
            "paper time ratio": ref[("time_per_epoch_min", "adalora")] / ref[("time_per_epoch_min", "lora")],
        })
        table = table.join(paper, how="outer")
    return table


def _cell(mean: float, std: float, n: float) -> str:
    if pd.isna(mean):
        return ""
    text = f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"
    return f"{text} (n={int(n)})"


def _params(value: float) -> str:
    if pd.isna(value):
        return ""
    return f"{value / 1e6:.2f}M" if value >= 1e4 else f"{int(value)}"


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for people: "mean ± std (n=k)" cells, paper value and signed delta beside them."""
    out = pd.DataFrame({
        "Method": [method_label(m) for m in table.index.get_level_values("method")],
        "Budget": list(table.index.get_level_values("budget")),
    })
    for label in dict.fromkeys(table.columns.get_level_values("column")):
        fields = table[label]
        if label == PARAMS:
            out[f"{PARAMS} ours"] = [_params(v) for v in fields["ours"]]
            if "paper" in fields:
                out[f"{PARAMS} paper"] = fields["paper"].fillna("").to_list()
            continue
        out[label] = [_cell(m, s, n) for m, s, n in zip(fields["mean"], fields["std"], fields["n"], strict=True)]
        if "paper" in fields:
            out[f"{label} paper"] = ["" if pd.isna(v) else f"{v:.2f}" for v in fields["paper"]]
            out[f"{label} Δ"] = ["" if pd.isna(v) else f"{v:+.2f}" for v in fields["delta"]]
    return out


def present(table: pd.DataFrame) -> pd.DataFrame:
    """The formatted view of any table here: ``format_table`` for results, rounded for the rest."""
    return format_table(table) if isinstance(table.columns, pd.MultiIndex) else table.round(3).reset_index()


def to_markdown(formatted: pd.DataFrame, title: str | None = None) -> str:
    """A GitHub Markdown table (pandas' own needs ``tabulate``, which is not a dependency)."""
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [f"### {title}", ""] if title else []
    lines += [row(list(formatted.columns)), row(["---"] * formatted.shape[1])]
    lines += [row(["" if pd.isna(v) else v for v in values])
              for values in formatted.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(formatted: pd.DataFrame, title: str | None = None) -> str:
    """LaTeX tabular via ``Styler.to_latex`` (what pandas 3's ``DataFrame.to_latex`` wraps).

    ``±`` and ``Δ`` stay Unicode: fine with LuaLaTeX/XeLaTeX, or ``newunicodechar`` in pdfLaTeX.
    """
    styler = formatted.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    return styler.to_latex(caption=title, hrules=True, column_format="l" * formatted.shape[1])


def write_table(table: pd.DataFrame, out_dir: str | Path, stem: str, title: str | None = None,
                latex: bool = False) -> list[Path]:
    """``<stem>.csv`` (numeric, one column per label|field), ``<stem>.md`` and optionally ``<stem>.tex``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    numeric = table.copy()
    if isinstance(numeric.columns, pd.MultiIndex):
        numeric.columns = ["|".join(c) for c in numeric.columns]
    paths = [out_dir / f"{stem}.csv", out_dir / f"{stem}.md"]
    numeric.to_csv(paths[0])
    formatted = present(table)
    paths[1].write_text(to_markdown(formatted, title))
    if latex:
        paths.append(out_dir / f"{stem}.tex")
        paths[-1].write_text(to_latex(formatted, title))
    return paths
