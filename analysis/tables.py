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
from analysis.labels import budget_label, budget_rank, method_label, method_rank, metric_label, task_label
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
    labels = _column_labels(columns)
    table.attrs["tasks"] = {label: task_label(t) for (t, _), label in zip(columns, labels, strict=True)}
    table.attrs["metrics"] = {label: metric_label(m) for (_, m), label in zip(columns, labels, strict=True)}
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
    out = _assemble(agg, columns, _place_rows(paper_rows, extra), paper if include_paper else None)
    out.attrs["table"] = table
    return out


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


# Tables laid out with budgets as columns, as the paper does (Table 2: SQuAD at 0.08%..0.65%,
# Tables 4/5: each GLUE task at its % levels); the others have one row per method x budget.
BUDGET_COLUMN_TABLES = ("table2", "table4", "table5")
SOURCE = "Source"


def format_params(value: float) -> str:
    """One format for every #Params cell: millions, 3 significant digits (``0.33M``, ``0.00221M``)."""
    return "" if pd.isna(value) else f"{value / 1e6:.3g}M"


def _ours_text(cells: list[tuple[float, float, float]]) -> str:
    """``mean ± std`` per metric, joined by ``/``, then the seed count: ``72.00 ± 2.83 (n=2)``."""
    if all(pd.isna(mean) for mean, _, _ in cells):
        return ""
    parts = ["–" if pd.isna(mean) else f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"
             for mean, std, _ in cells]
    return f"{' / '.join(parts)} (n={int(min(n for _, _, n in cells if not pd.isna(n)))})"


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


def _cells(table: pd.DataFrame, row: tuple[str, str], labels: list[str]) -> tuple[str, str]:
    """(ours, paper) text of one task cell of one row."""
    fields = [table.loc[row, label] for label in labels]
    ours = _ours_text([(f["mean"], f["std"], f["n"]) for f in fields])
    paper = _paper_text([f["paper"] for f in fields], [f["delta"] for f in fields]) if "paper" in fields[0] else ""
    return ours, paper


def _format_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Tables 1, 3, 14 and any summary: one row per method x budget (ours), the paper's beneath it."""
    groups = _task_groups(table)
    params = table[PARAMS]
    lines = []
    for row in table.index:
        method, budget = row
        cells = {_header(task, metrics): _cells(table, row, labels) for task, (metrics, labels) in groups.items()}
        base = {"Method": method_label(method), "Budget": budget_label(budget)}
        if any(ours for ours, _ in cells.values()):
            lines.append({**base, SOURCE: "ours", PARAMS: format_params(params.loc[row, "ours"]),
                          **{name: ours for name, (ours, _) in cells.items()}})
        if any(paper for _, paper in cells.values()):
            label = params.loc[row, "paper"] if "paper" in params else ""
            lines.append({**base, SOURCE: "paper", PARAMS: "" if pd.isna(label) else label,
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
    for method in dict.fromkeys(table.index.get_level_values("method")):
        ours_line, paper_line = {"Method": method_label(method), SOURCE: "ours"}, {"Method": method_label(method),
                                                                                  SOURCE: "paper"}
        for task, budget in columns:
            known = (method, budget) in table.index
            ours, paper = _cells(table, (method, budget), groups[task][1]) if known else ("", "")
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
    flat = table.round(3).reset_index()
    for column, label in (("task", task_label), ("method", method_label), ("budget", budget_label)):
        if column in flat:
            flat[column] = flat[column].map(label)
    return flat


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


_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "–": "--", "γ": r"$\gamma$", "λ": r"$\lambda$"}


def to_latex(formatted: pd.DataFrame, title: str | None = None) -> str:
    """A ``table`` float with a booktabs ``tabular`` (``\\usepackage{booktabs}``), pure ASCII.

    Built with ``Styler.to_latex`` (what pandas 3's ``DataFrame.to_latex`` wraps); ``±``, ``Δ``
    and the Greek letters of method names become math, so pdfLaTeX compiles it as is.
    """
    styler = formatted.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    text = styler.to_latex(caption=title, hrules=True, position_float="centering",
                           column_format="l" * formatted.shape[1], environment="table")
    for symbol, macro in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, macro)
    return "% needs \\usepackage{booktabs}\n" + text


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
