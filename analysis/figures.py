"""Figures: paper Figure 2 (``figure2``: three panels on % trainable parameters) and a budget
curve for any task (``budget_curve``), final-rank heatmaps (Fig. 3), rank/budget over training.

Every function returns the matplotlib Figure (the heatmaps also the matrix they draw, so
tests and notebooks can check the numbers) and, given ``save="path/stem"``, writes
``stem.png`` and ``stem.svg``. Figures are 8 in wide and saved at 150 dpi, so they stay
legible when a README shows them ~800 px wide. They are built with the object-oriented API
(``matplotlib.figure.Figure``, saved through the Agg canvas), never pyplot, so no global
figure registry fills up in a notebook loop and no GUI backend is ever touched.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

from analysis.collect import select_records
from analysis.grouping import DEFAULT_PROTOCOL, configurations, one_configuration, one_configuration_per_label
from analysis.labels import (
    budget_label,
    budget_rank,
    method_label,
    method_rank,
    metric_label,
    record_labels,
    run_labels,
    task_label,
)
from analysis.paper import paper_params, paper_percent, paper_results
from analysis.stats import CONFIDENCE
from analysis.tables import aggregate, of_protocol, successful
from experiments.results import read_result

WIDTH_IN = 8.0
DPI = 150
STYLE = {"font.size": 11, "axes.titlesize": 12, "legend.fontsize": 9, "axes.grid": True, "grid.alpha": 0.3}
# Budget curves take the paper's main tables, not the ablations (which repeat some points).
CURVE_TABLES = ("table1", "table2", "table3", "figure2")
# Encoder-decoder weight types group by stack: encoder, decoder self-attn, cross-attn, decoder FFN.
_STACK_ORDER = ("", "enc", "dec.self", "dec.cross", "dec")
METHOD_COLORS = {
    "full_ft": "tab:gray", "bitfit": "tab:olive", "adapter_houlsby": "tab:purple",
    "adapter_pfeiffer": "tab:brown", "lora": "tab:blue", "adalora": "tab:red", "prune_lora": "tab:cyan",
    "adalora_sensitivity": "tab:orange", "adalora_magnitude": "tab:pink", "svd_lora": "tab:green",
    "adalora_no_orth": "darkred", "lora_regu": "navy", "lora_qk": "lightskyblue",
}
_SCALED_METRICS = ("matthews_correlation", "combined_score", "pearson", "spearmanr")
# Paper Figure 2's panels: MNLI-m accuracy, SQuAD v2.0 F1 and XSum ROUGE-2 against the budget.
FIGURE2_PANELS = (("glue_mnli", "accuracy"), ("squad_v2", "f1"), ("xsum", "rouge2"))


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.{ext}" for ext in ("png", "svg")]  # names hold dots: glue_0.3m
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return paths


def _finish(fig: Figure, save: str | Path | None) -> Figure:
    fig.tight_layout()
    if save is not None:
        save_figure(fig, save)
    return fig


def method_color(method: str) -> str:
    """One fixed colour per method, so a method looks the same in every figure; a method the paper
    does not have gets one of ``Dark2``'s colours, chosen by its name (the same in every figure)."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    palette = colormaps["Dark2"].colors
    return palette[zlib.crc32(method.encode()) % len(palette)]


def _metric_axis_label(task: str, metric: str) -> str:
    unit = "×100" if metric in _SCALED_METRICS else "%"
    return f"{task_label(task)} {metric_label(metric)} ({unit})"


def budget_curve(df: pd.DataFrame, task: str, metric: str, which: str = "best",
                 paper_tables: Iterable[str] = CURVE_TABLES, save: str | Path | None = None,
                 protocol: str = DEFAULT_PROTOCOL) -> Figure:
    """``metric`` vs measured trainable parameters (log x), one line per method that ran (any method,
    under the label its runs record), under one ``protocol``.

    Ours: filled markers, mean over seeds with std error bars, x = median measured #params.
    Paper: hollow markers at its #Params (``paper_params``). Full FT is a horizontal line:
    its ~10^8 parameters would squash every PEFT point into one corner of a log axis.
    """
    mine = of_protocol(df[(df["task"] == task) & (df["metric"] == metric)], protocol)
    ours, labels = aggregate(mine, which), run_labels(mine)
    paper = paper_results()
    paper = paper[paper["table"].isin(tuple(paper_tables)) & (paper["task"] == task) & (paper["metric"] == metric)]
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN, 5))
        ax = fig.subplots()
        for method in sorted(set(ours["method"]) | set(paper["method"]), key=lambda m: method_rank(m, labels)):
            color, label = method_color(method), method_label(method, labels)
            mine = ours[ours["method"] == method].sort_values("trainable_params")
            ref = paper[paper["method"] == method]
            if method == "full_ft":
                for values, style, suffix in ((mine["mean"], "--", "ours"), (ref["value"], ":", "paper")):
                    if len(values):
                        ax.axhline(values.iloc[0], color=color, ls=style, lw=1.5, label=f"{label} ({suffix})")
                continue
            if len(mine):
                ax.errorbar(mine["trainable_params"], mine["mean"], yerr=mine["std"].fillna(0), color=color,
                            marker="o", ms=6, lw=1.8, capsize=3, label=f"{label} (ours)")
            if len(ref):
                x = [paper_params(p, task) for p in ref["params_label"]]
                order = np.argsort(x)
                ax.plot(np.asarray(x)[order], ref["value"].to_numpy()[order], color=color, ls=":", lw=1,
                        marker="s", ms=7, mfc="none", mew=1.5, label=f"{label} (paper)")
        if len(ours) == 0 and len(paper) == 0:
            ax.text(0.5, 0.5, "no runs and no paper numbers", transform=ax.transAxes, ha="center")
        else:
            ax.set_xscale("log")
            ax.legend(loc="best", ncol=2)
        ax.set_xlabel("trainable parameters (ours: measured; paper: its #Params)")
        ax.set_ylabel(_metric_axis_label(task, metric))
        ax.set_title(f"{task_label(task)}: {metric_label(metric)} vs parameter budget ({which} eval, "
                     f"protocol {protocol})")
        return _finish(fig, save)


def percent_trainable(record: dict[str, Any]) -> float:
    """Trainable parameters (the paper's count) as % of the model without its task head.

    The denominator holds the adapters too, which moves a real run's percentage by < 1% of
    itself (1.3M of DeBERTaV3-base's ~185M); full fine-tuning is exactly 100%.
    """
    params = record["params"]
    return 100 * params["trainable_paper"] / (params["total"] - params.get("head", 0))


def _with_percent(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with each run's ``percent_trainable`` (read from its ``result.json``)."""
    percent = {d: percent_trainable(read_result(d)) for d in runs["run_dir"].unique()}
    return runs.assign(percent_trainable=runs["run_dir"].map(percent))


def _panel(ax: Any, runs: pd.DataFrame, paper: pd.DataFrame, task: str, metric: str, which: str) -> None:
    """One Figure 2 panel: per method the seed mean vs % trainable, a ±1 std band, the paper's points."""
    values = runs.dropna(subset=[f"value_{which}"])
    labels = run_labels(values)
    for method in sorted(set(values["method"]) | set(paper["method"]), key=lambda m: method_rank(m, labels)):
        color, label = method_color(method), method_label(method, labels)
        mine = values[values["method"] == method]
        ref = paper[paper["method"] == method]
        if method == "full_ft":
            for series, style, suffix in ((mine[f"value_{which}"], "--", "ours"), (ref["value"], ":", "paper")):
                if len(series):
                    ax.axhline(series.mean(), color=color, ls=style, lw=1.5, label=f"{label} ({suffix})")
            continue
        if len(mine):
            by_budget = mine.groupby("budget")
            curve = pd.DataFrame({"x": by_budget["percent_trainable"].median(),
                                  "mean": by_budget[f"value_{which}"].mean(),
                                  "std": by_budget[f"value_{which}"].std().fillna(0.0)}).sort_values("x")
            ax.plot(curve["x"], curve["mean"], color=color, marker="o", ms=5, lw=1.8, label=f"{label} (ours)")
            ax.fill_between(curve["x"], curve["mean"] - curve["std"], curve["mean"] + curve["std"],
                            color=color, alpha=0.2, lw=0)
        if len(ref):
            points = sorted(zip((paper_percent(p, task) for p in ref["params_label"]), ref["value"], strict=True))
            ax.plot(*zip(*points, strict=True), color=color, ls=":", lw=1, marker="s", ms=6, mfc="none",
                    mew=1.5, label=f"{label} (paper)")
    ax.set_xlabel("% trainable parameters")
    ax.set_ylabel(_metric_axis_label(task, metric))
    ax.set_title(task_label(task))


def figure2(df: pd.DataFrame, which: str = "best", panels: Iterable[tuple[str, str]] = FIGURE2_PANELS,
            paper_tables: Iterable[str] = CURVE_TABLES, save: str | Path | None = None,
            protocol: str = DEFAULT_PROTOCOL) -> Figure:
    """Paper Figure 2: one panel per (task, metric), % trainable parameters on x, one line per method
    that ran (under its recorded label) and per method of the paper, runs of one ``protocol``.

    Ours: the mean over seeds at each budget (x = median % over the seeds) with a ±1 std band;
    the paper's points as hollow squares (its % labels, or its #Params over the backbone size).
    ``panels`` defaults to MNLI / SQuAD v2.0 / XSum; any tasks can be drawn the same way.
    """
    panels = list(panels)
    runs = of_protocol(successful(df), protocol)
    paper = paper_results()
    paper = paper[paper["table"].isin(tuple(paper_tables))]
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN * 1.5, 4.5))
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (task, metric) in zip(axes, panels, strict=True):
            mine = runs[(runs["task"] == task) & (runs["metric"] == metric)]
            ref = paper[(paper["task"] == task) & (paper["metric"] == metric)]
            _panel(ax, _with_percent(mine) if len(mine) else mine.assign(percent_trainable=[]), ref, task, metric,
                   which)
            if len(mine) == 0 and len(ref) == 0:
                ax.text(0.5, 0.5, "no runs and no paper numbers", transform=ax.transAxes, ha="center")
        handles = {}
        for ax in axes:
            handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 6),
                       bbox_to_anchor=(0.5, -0.02))
        fig.suptitle(f"Figure 2: metric vs % trainable parameters ({which} eval, protocol {protocol}; "
                     "band: ±1 std over seeds)")
        fig.tight_layout(rect=(0, 0.08 + 0.04 * (len(handles) > 6), 1, 1))
        if save is not None:
            save_figure(fig, save)
        return fig


def _type_key(weight_type: str) -> tuple[int, int, str]:
    """Heatmap row order: by stack (encoder, decoder self, cross, FFN), then the architectures' order (W_q..W_f2)."""
    from adalora.architectures import weight_type_order  # its registry imports torch: heatmaps only

    stack, _, base = weight_type.rpartition(".")
    return (_STACK_ORDER.index(stack) if stack in _STACK_ORDER else len(_STACK_ORDER),
            weight_type_order().index(base) if base in weight_type_order() else len(weight_type_order()),
            weight_type)


def rank_matrix(ranks_pattern: dict[str, float], weight_types: dict[str, Any]) -> pd.DataFrame:
    """Pattern {matrix: rank} -> DataFrame, weight types (rows) x layer index (columns)."""
    cells = pd.DataFrame(
        [(weight_types[name][1], int(weight_types[name][0]), float(rank)) for name, rank in ranks_pattern.items()],
        columns=["weight_type", "layer", "rank"],
    )
    matrix = cells.pivot_table(index="weight_type", columns="layer", values="rank", aggfunc="mean")
    matrix = matrix.reindex(sorted(matrix.index, key=_type_key)).reindex(sorted(matrix.columns), axis=1)
    matrix.index.name, matrix.columns.name = "weight type", "layer"
    return matrix


def _draw_heatmap(matrix: pd.DataFrame, title: str, save: str | Path | None) -> Figure:
    from adalora.architectures import display_label  # the architecture registry imports torch: heatmaps only

    values = matrix.to_numpy(dtype=float)
    integral = bool(np.all(np.isnan(values) | (values == np.round(values))))
    vmax = max(float(np.nanmax(values)), 1.0)
    with rc_context({**STYLE, "axes.grid": False}):
        height = 1.6 + 0.42 * len(matrix.index)
        fig = Figure(figsize=(WIDTH_IN, height))
        ax = fig.subplots()
        image = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0f}" if integral else f"{value:.1f}", ha="center", va="center",
                        fontsize=9, color="white" if value > 0.6 * vmax else "black")
        ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns])
        ax.set_yticks(range(len(matrix.index)), [display_label(t) for t in matrix.index])
        ax.set_xlabel("layer index")
        ax.set_ylabel("weight type")
        ax.set_title(title)
        bar = fig.colorbar(image, ax=ax, label="final rank", fraction=0.04, pad=0.02)
        bar.locator = MaxNLocator(integer=True)  # ranks are counts: no ticks at 0.5
        bar.update_ticks()
        return _finish(fig, save)


def rank_heatmap(ranks_pattern: dict[str, float], weight_types: dict[str, Any], title: str = "Final rank per matrix",
                 save: str | Path | None = None) -> tuple[Figure, pd.DataFrame]:
    """Paper Fig. 3: final rank of each adapted matrix; rank-0 (fully pruned) cells show "0"."""
    matrix = rank_matrix(ranks_pattern, weight_types)
    return _draw_heatmap(matrix, title, save), matrix


def rank_heatmap_from_runs(runs: pd.DataFrame | Iterable[dict[str, Any]], task: str, budget: str,
                           method: str = "adalora", save: str | Path | None = None,
                           config_group: str | None = None) -> tuple[Figure, pd.DataFrame]:
    """The heatmap for one task x budget, each cell the mean final rank over the successful seeds of
    one configuration (``config_group`` picks one when the runs hold several; a seed run twice counts
    once)."""
    records = [r for r in select_records(runs, task=task, budget=budget, method=method) if r.get("ranks")]
    if not records:
        raise LookupError(f"no successful {method} run with a rank pattern for {task} @ {budget}")
    records = one_configuration(records, f"rank heatmap {task}/{method}/{budget}", config_group)
    matrices = [rank_matrix(r["ranks"]["pattern"], r["ranks"]["weight_types"]) for r in records]
    matrix = pd.concat(matrices).groupby(level=0, sort=False).mean()
    matrix = matrix.reindex(matrices[0].index)
    seeds = f"mean of {len(records)} seeds" if len(records) > 1 else f"seed {records[0]['run']['seed']}"
    title = f"{method_label(method, record_labels(records))} final ranks: {task_label(task)} @ {budget_label(budget)} ({seeds})"
    return _draw_heatmap(matrix, title, save), matrix


def rank_heatmaps_by_configuration(runs: pd.DataFrame | Iterable[dict[str, Any]], task: str, budget: str,
                                   method: str = "adalora") -> Iterator[tuple[str, Figure, pd.DataFrame, dict[str, Any]]]:
    """Per configuration of the task x method x budget runs that record a rank pattern: a name suffix
    ("" for a single configuration, else ``_<config_group>``), the heatmap, its matrix and the
    configuration's first run (for :func:`rank_over_training`). Never a mean across configurations."""
    ranked = [r for r in select_records(runs, task=task, budget=budget, method=method) if r.get("ranks")]
    groups = configurations(ranked)
    for (_, group), records in groups.items():
        fig, matrix = rank_heatmap_from_runs(records, task, budget, method=method, config_group=group)
        yield (f"_{group}" if len(groups) > 1 else ""), fig, matrix, records[0]


def rank_totals(record: dict[str, Any]) -> pd.DataFrame:
    """Rank history -> steps x weight types (summed over layers), plus the budget b(t) where the kind
    schedules one (its history records a budget at each step; other rank-changing kinds record none)."""
    types = {name: wt[1] for name, wt in record["ranks"]["weight_types"].items()}
    rows = []
    for entry in sorted(record["ranks"]["history"], key=lambda e: e["step"]):
        totals: dict[str, float] = {"step": entry["step"], "budget": entry.get("budget")}
        for name, rank in entry["ranks"].items():
            totals[types[name]] = totals.get(types[name], 0) + rank
        rows.append(totals)
    frame = pd.DataFrame(rows).set_index("step")
    ordered = sorted((c for c in frame.columns if c != "budget"), key=_type_key)
    budget = ["budget"] if frame["budget"].notna().any() else []
    return frame[[*budget, *ordered]].astype(float)


def rank_over_training(record: dict[str, Any], save: str | Path | None = None) -> Figure:
    """The total rank per weight type (stacked, summed over layers) vs step, and the budget b(t).

    Wording follows the kind: a kind that schedules a budget (AdaLoRA and its variants: each history
    entry records b(t), and the rank is the count of kept singular values) gets the b(t) line and
    "kept singular values"; any other kind that reports ranks gets a plain "total rank", no budget.
    """
    totals = rank_totals(record)
    budgeted = "budget" in totals.columns
    # Hold the last allocation until the run's last step T, where the x axis ends.
    last = max(int((record.get("train") or {}).get("steps") or totals.index[-1]), int(totals.index[-1]))
    if last > totals.index[-1]:
        totals = pd.concat([totals, totals.iloc[[-1]].set_axis([last])])
    steps = totals.index.to_numpy()
    run = record["run"]
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN, 5))
        ax = fig.subplots()
        lower = np.zeros(len(steps))
        colors = colormaps["tab20"].colors
        types = [c for c in totals.columns if c != "budget"]
        for i, wtype in enumerate(types):
            upper = lower + totals[wtype].to_numpy()
            ax.fill_between(steps, lower, upper, step="post", color=colors[i % 20], alpha=0.85, label=wtype, lw=0)
            lower = upper
        if budgeted:
            ax.step(steps, totals["budget"], where="post", color="black", lw=2, label="budget b(t)")
        ax.set_xlabel("training step (optimizer updates)")
        ax.set_ylabel("total rank (kept singular values)" if budgeted else "total rank")
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, last)
        ax.set_title(f"{method_label(run['method'], record_labels([record]))} "
                     f"{'rank allocation' if budgeted else 'rank over training'}: {task_label(run['task'])} @ "
                     f"{budget_label(run['budget'])}, seed {run['seed']}")
        ax.legend(loc="upper right", ncol=2 if len(types) <= 7 else 3)
        return _finish(fig, save)


def learning_curve_table(records: Iterable[dict[str, Any]], metric: str | None = None) -> pd.DataFrame:
    """Eval histories -> one row per method x budget x step: mean, std (ddof=1) and n over seeds.

    ``metric`` defaults to each run's main metric. Seeds of one configuration share the eval
    schedule, so a step's ``n`` is the number of seeds that reached it. Runs of a method x budget
    must be one configuration (a seed run twice counts once); a label with several is left out with
    a warning that names what differs.
    """
    records, rows = list(records), []
    for record in one_configuration_per_label(records, "learning curves"):
        name = metric or record["metrics"]["main_metric"]
        for entry in record["metrics"]["evals"]:
            if entry.get(name) is not None:
                rows.append({"method": record["run"]["method"], "budget": record["run"]["budget"],
                             "seed": record["run"]["seed"], "step": entry["step"], "value": float(entry[name])})
    columns = ["method", "budget", "step", "mean", "std", "n"]
    if not rows:
        return pd.DataFrame(columns=columns)
    grouped = pd.DataFrame(rows).groupby(["method", "budget", "step"])["value"]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    labels = record_labels(records)
    order = sorted(set(zip(table["method"], table["budget"], strict=True)),
                   key=lambda mb: (method_rank(mb[0], labels), budget_rank(mb[1])))
    table["_order"] = [order.index(mb) for mb in zip(table["method"], table["budget"], strict=True)]
    return table.sort_values(["_order", "step"]).drop(columns="_order").reset_index(drop=True)[columns]


def learning_curves(records: Iterable[dict[str, Any]], metric: str | None = None, title: str | None = None,
                    save: str | Path | None = None) -> tuple[Figure, pd.DataFrame]:
    """Dev metric vs optimiser step, one line per method (x budget): the mean over seeds, a ±1 std band.

    Shows whether each run had stopped improving when it ended: a fixed-step comparison of
    methods says little about what they reach if some curves are still climbing.
    Returns the figure and the ``learning_curve_table`` it draws.
    """
    records = list(records)
    table = learning_curve_table(records, metric)
    labels = record_labels(records)
    name = metric or (records[0]["metrics"]["main_metric"] if records else "metric")
    tasks = sorted({r["run"]["task"] for r in records})
    several_budgets = {m for m, group in table.groupby("method") if group["budget"].nunique() > 1}
    styles = ("-", "--", ":", "-.")
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN, 5))
        ax = fig.subplots()
        budgets = sorted(set(table["budget"]), key=budget_rank)
        for (method, budget), curve in table.groupby(["method", "budget"], sort=False):
            seeds = int(curve["n"].max())
            label = method_label(method, labels) + (f" @ {budget}" if method in several_budgets else "")
            label += f" (n={seeds})" if seeds > 1 else " (1 seed)"
            color = method_color(method)
            style = styles[budgets.index(budget) % len(styles)] if method in several_budgets else "-"
            ax.plot(curve["step"], curve["mean"], color=color, ls=style,
                    marker="o", ms=3, lw=1.8, label=label)
            if seeds > 1:
                std = curve["std"].fillna(0).to_numpy()
                ax.fill_between(curve["step"], curve["mean"] - std, curve["mean"] + std, color=color, alpha=0.18, lw=0)
        if table.empty:
            ax.text(0.5, 0.5, "no evaluations", transform=ax.transAxes, ha="center")
        else:
            ax.legend(loc="lower right", ncol=2)
        ax.set_xlabel("training step (optimizer updates)")
        ax.set_ylabel(_metric_axis_label(tasks[0], name) if len(tasks) == 1 else metric_label(name))
        ax.set_title(title or f"{', '.join(task_label(t) for t in tasks)}: dev {metric_label(name)} over training "
                              "(mean ± std over seeds)")
        return _finish(fig, save), table


# ---------------------------------------------------------------------------- cost against quality
_BUDGET_MARKERS = ("o", "s", "^", "D", "v", "P")  # one shape per budget level, in budget order
PARETO_AXES = (("trainable_params", "trainable parameters (measured, end of training)"),
               ("gpu_hours", "GPU-hours per run (wall time × devices)"))


def pareto_points(df: pd.DataFrame, task: str, metric: str, which: str = "best",
                  protocol: str = DEFAULT_PROTOCOL) -> pd.DataFrame:
    """One point per method x budget (one configuration, ``aggregate``'s rule): the seed mean of
    ``metric``, its 95% t-interval half-width (``scipy.stats.t``; NaN for one seed), the median
    trainable count and GPU-hours per run, and whether no other point is at least as good on the
    metric with fewer parameters (``frontier_params``) or fewer GPU-hours (``frontier_gpu``)."""
    runs = of_protocol(successful(df[(df["task"] == task) & (df["metric"] == metric)]), protocol)
    points = aggregate(runs, which)
    hours = runs.assign(gpu_hours=runs["wall_time_s"].astype(float) / 3600 * runs["devices"].astype(float).fillna(1))
    hours = hours.groupby(["method", "budget"])["gpu_hours"].median()
    points = points.join(hours, on=["method", "budget"])
    q = stats.t.ppf(0.5 + CONFIDENCE / 2, points["n"].astype(float) - 1)
    points["half_width"] = np.where(points["n"] > 1, q * points["std"] / np.sqrt(points["n"].astype(float)), np.nan)
    for column, flag in (("trainable_params", "frontier_params"), ("gpu_hours", "frontier_gpu")):
        x, y = points[column].astype(float).to_numpy(), points["mean"].to_numpy()
        points[flag] = [not np.isnan(xi) and not any((x <= xi) & (y >= yi) & ((x < xi) | (y > yi)))
                        for xi, yi in zip(x, y, strict=True)]
    labels = run_labels(runs)
    points["label"] = [method_label(m, labels) for m in points["method"]]
    order = [(method_rank(m, labels), budget_rank(b)) for m, b in zip(points["method"], points["budget"], strict=True)]
    return points.assign(_order=order).sort_values("_order").drop(columns="_order").reset_index(drop=True)


def pareto_figure(df: pd.DataFrame, task: str, metric: str, which: str = "best", protocol: str = DEFAULT_PROTOCOL,
                  save: str | Path | None = None) -> tuple[Figure, pd.DataFrame]:
    """The main metric against trainable parameters and against GPU-hours (two panels, log x): one
    point per method x budget with its 95% seed interval, the Pareto frontier as a dashed line.
    Returns the figure and the :func:`pareto_points` it draws."""
    points = pareto_points(df, task, metric, which, protocol)
    with rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN * 1.4, 4.8))
        axes = fig.subplots(1, 2)
        budgets = sorted(set(points["budget"]), key=budget_rank)
        for ax, (column, xlabel), flag in zip(axes, PARETO_AXES, ("frontier_params", "frontier_gpu"), strict=True):
            drawn = points.dropna(subset=[column])
            for row in drawn.itertuples(index=False):
                where = "" if row.budget == "none" else f" @ {budget_label(row.budget)}"
                ax.errorbar(getattr(row, column), row.mean, yerr=0 if np.isnan(row.half_width) else row.half_width,
                            color=method_color(row.method), marker=_BUDGET_MARKERS[budgets.index(row.budget) % 6],
                            ms=7, capsize=3, ls="none", label=f"{row.label}{where}")
            frontier = drawn[drawn[flag]].sort_values(column)
            if len(frontier) > 1:
                ax.plot(frontier[column], frontier["mean"], color="black", ls="--", lw=1, label="Pareto frontier")
            if drawn.empty:
                ax.text(0.5, 0.5, "not recorded by these runs", transform=ax.transAxes, ha="center")
            else:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(_metric_axis_label(task, metric))
        handles = dict(zip(*reversed(axes[0].get_legend_handles_labels()), strict=True))
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.suptitle(f"{task_label(task)}: {metric_label(metric)} against cost ({which} eval, protocol {protocol}; "
                     f"bars: {CONFIDENCE:.0%} t-interval over seeds)")
        return _finish(fig, save), points
