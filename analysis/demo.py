"""The demo's analysis (``make demo``, after its sweeps): tables, convergence, learning curves, ranks.

Uses the same functions as the paper's analysis (``collect``, ``summary_table``,
``budget_curve``, ``rank_heatmaps_by_configuration``, ``rank_over_training``) on the runs under one
results root, writes everything into ``--out-dir`` and prints a one-screen summary::

    python -m analysis.demo --results-root outputs/demo --out-dir outputs/demo

Files (``<task>`` = bbc_topic, bbc_pair; ``<budget>`` = the sweep's budget levels):
``demo_results.md/.csv`` (main metric at the best eval: mean ± std over seeds where >1 seed,
measured trainable parameters), ``demo_results_final.md/.csv`` (at the last eval),
``demo_adalora_vs_lora.md/.csv`` (the two at each task x budget both ran: mean ± std over
seeds, every seed's value, and AdaLoRA − LoRA paired by seed: mean, 95% t-interval, paired
t-test p, from ``analysis.stats``), ``demo_convergence.md/.csv`` (one line
per run: best, last two evals, verdict; ``analysis.convergence``), ``demo_run_status.csv``,
``demo_learning_curve_<task>_<budget>.png/.svg/.csv`` (dev metric vs step, every method run at
that budget plus full FT and BitFit), ``demo_budget_curve_<task>.png/.svg``,
``demo_rank_heatmap_<task>_<budget>.png/.svg`` (AdaLoRA's final rank per weight type x layer)
and ``demo_rank_over_training_<task>_<budget>.png/.svg``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.collect import collect, run_status
from analysis.convergence import TOLERANCE, convergence_table
from analysis.figures import (
    budget_curve,
    learning_curves,
    rank_heatmaps_by_configuration,
    rank_over_training,
    save_figure,
)
from analysis.labels import budget_rank, method_label, metric_label, record_labels, run_labels, task_label
from analysis.stats import paired_comparisons
from analysis.tables import present, successful, summary_table, to_markdown, write_table
from experiments.results import read_result

PREFIX = "demo_"
PAIR = ("lora", "adalora")  # the comparison the demo is about, at matched budgets


def _tasks(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, main metric) of every task with successful runs, in label order."""
    mains = df.loc[df["is_main"], ["task", "metric"]].drop_duplicates()
    return sorted(mains.itertuples(index=False, name=None), key=lambda tm: task_label(tm[0]))


def _mean_std(values: pd.Series) -> str:
    return f"{values.mean():.2f}" if len(values) < 2 else f"{values.mean():.2f} ± {values.std():.2f}"


def _paired_text(result: pd.Series) -> str:
    """``+0.40 [-0.85, +1.65]``: the paired mean difference and its 95% t-interval (none for one seed)."""
    if pd.isna(result["ci_low"]):
        return f"{result['mean_diff']:+.2f}"
    return f"{result['mean_diff']:+.2f} [{result['ci_low']:+.2f}, {result['ci_high']:+.2f}]"


def adalora_vs_lora(df: pd.DataFrame) -> pd.DataFrame:
    """LoRA and AdaLoRA at every task x budget both ran: mean ± std (ddof=1) over seeds, each seed, and
    the paired comparison.

    The comparison row pairs the runs by seed (a seed fixes the head initialisation and the batch
    order for both methods): AdaLoRA − LoRA over the seeds both have, its 95% t-interval and the
    paired t-test's p (``analysis.stats``, the same code as the tables' ``*_paired`` companions).
    """
    main = successful(df)
    main = main[main["is_main"] & main["method"].isin(PAIR)]
    reference, method = PAIR
    cells = ["task", "budget", "protocol"]
    compared = {which: paired_comparisons(main, f"value_{which}", [*cells, "method"], reference=reference)
                .set_index(["task", "budget"]) for which in ("best", "final")}
    labels = run_labels(main)
    rows: list[dict[str, Any]] = []
    for (task, budget), group in sorted(main.groupby(["task", "budget"]), key=lambda kv: (task_label(kv[0][0]),
                                                                                          budget_rank(kv[0][1]))):
        if set(group["method"]) != set(PAIR) or (task, budget) not in compared["best"].index:
            continue
        by = {m: group[group["method"] == m].set_index("seed").sort_index() for m in PAIR}
        for name in PAIR:
            runs = by[name]
            rows.append({"task": task_label(task), "budget": budget, "method": method_label(name, labels),
                         "n": len(runs), "best": _mean_std(runs["value_best"]), "final": _mean_std(runs["value_final"]),
                         "p (paired t)": "", "best per seed": " / ".join(f"{v:.2f}" for v in runs["value_best"]),
                         "seeds": ",".join(str(s) for s in runs.index),
                         "#Params": f"{runs['trainable_params'].median() / 1e6:.3f}M"})
        best, final = compared["best"].loc[(task, budget)], compared["final"].loc[(task, budget)]
        seeds = [int(s) for s in best["seeds"].split(",")]
        delta = by[method].loc[seeds, "value_best"] - by[reference].loc[seeds, "value_best"]
        rows.append({"task": task_label(task), "budget": budget,
                     "method": f"{method_label(method, labels)} − {method_label(reference, labels)} (paired by seed, "
                               "95% CI)",
                     "n": int(best["n"]), "best": _paired_text(best), "final": _paired_text(final),
                     "p (paired t)": "" if pd.isna(best["p"]) else f"{best['p']:.3g}",
                     "best per seed": " / ".join(f"{v:+.2f}" for v in delta), "seeds": best["seeds"], "#Params": ""})
    return pd.DataFrame(rows, columns=["task", "budget", "method", "n", "best", "final", "p (paired t)",
                                       "best per seed", "seeds", "#Params"])


def _write_flat(table: pd.DataFrame, out: Path, stem: str, title: str) -> list[Path]:
    """A table that is already what a reader sees: ``<stem>.csv`` and ``<stem>.md``."""
    paths = [out / f"{stem}.csv", out / f"{stem}.md"]
    table.to_csv(paths[0], index=False, encoding="utf-8")
    paths[1].write_text(to_markdown(table, title), encoding="utf-8")
    return paths


def _present_convergence(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    shown = table.copy()
    shown["task"] = [task_label(t) for t in shown["task"]]
    shown["method"] = [method_label(m, labels) for m in shown["method"]]
    for column in ("best", "previous", "last", "gap"):
        shown[column] = [f"{v:.2f}" for v in shown[column]]
    return shown


def write_demo_report(results_root: str | Path, out_dir: str | Path,
                      tolerance: float = TOLERANCE) -> dict[str, object]:
    """Write the demo's tables and figures; returns what the summary prints (tables, paths, counts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status = run_status(results_root)
    status.to_csv(out / f"{PREFIX}run_status.csv", index=False, encoding="utf-8")
    df = successful(collect(results_root))
    if df.empty:
        raise SystemExit(f"no successful runs under {results_root}: run `make demo` (or sweep=demo) first")
    records = [read_result(d) for d in sorted(set(df["run_dir"]))]
    written: list[Path] = []
    tables: dict[str, pd.DataFrame] = {}
    for which, stem, title in (("best", "results", "Demo: main metric at the best eval"),
                               ("final", "results_final", "Demo: main metric at the last eval")):
        tables[which] = summary_table(df, which=which)
        written += write_table(tables[which], out, f"{PREFIX}{stem}", title)
    tables["pair"] = adalora_vs_lora(df)
    written += _write_flat(tables["pair"], out, f"{PREFIX}adalora_vs_lora",
                           "Demo: AdaLoRA vs LoRA at matched budgets (main metric, mean ± std over seeds; AdaLoRA − "
                           "LoRA paired by seed with its 95% t-interval and paired t-test p)")
    tables["convergence"] = convergence_table(records, tolerance)
    written += _write_flat(_present_convergence(tables["convergence"], record_labels(records)), out,
                           f"{PREFIX}convergence",
                           f"Demo: convergence per run (converged = last two evals within {tolerance:g} "
                           "point(s) of the best)")
    for task, metric in _tasks(df):
        fig = budget_curve(df, task, metric, paper_tables=())
        fig.axes[0].set_xlabel("trainable parameters (measured; head excluded)")  # no paper points here
        written += save_figure(fig, out / f"{PREFIX}budget_curve_{task}")
        task_records = [r for r in records if r["run"]["task"] == task]
        budgeted = sorted({r["run"]["budget"] for r in task_records} - {"none"}, key=budget_rank) or ["none"]
        for budget in budgeted:
            curve_records = [r for r in task_records if r["run"]["budget"] in (budget, "none")]
            unbudgeted = " (full FT, BitFit: no budget)" if any(r["run"]["budget"] == "none" for r in curve_records) else ""
            title = f"{task_label(task)} @ {budget}{unbudgeted}: dev {metric_label(metric)}, mean ± std over seeds"
            fig, curve = learning_curves(curve_records, title=title)
            written += save_figure(fig, out / f"{PREFIX}learning_curve_{task}_{budget}")
            curve.to_csv(out / f"{PREFIX}learning_curve_{task}_{budget}.csv", index=False, encoding="utf-8")
        adalora = df[(df["task"] == task) & (df["method"] == "adalora")]
        for budget in sorted(set(adalora["budget"]), key=budget_rank):
            for suffix, fig, matrix, first in rank_heatmaps_by_configuration(records, task, budget):
                stem = f"{task}_{budget}{suffix}"
                written += save_figure(fig, out / f"{PREFIX}rank_heatmap_{stem}")
                matrix.to_csv(out / f"{PREFIX}rank_heatmap_{stem}.csv", encoding="utf-8")
                written += save_figure(rank_over_training(first), out / f"{PREFIX}rank_over_training_{stem}")
    counts = status["status"].value_counts().to_dict()
    wall = status.drop_duplicates("run_dir")["wall_time_s"].sum()
    return {"tables": tables, "written": written, "counts": counts, "train_wall_s": float(wall),
            "runs": len(status), "tolerance": tolerance, "labels": record_labels(records)}


def _convergence_lines(table: pd.DataFrame, tolerance: float, labels: dict[str, str]) -> list[str]:
    """One line per run, so a reader sees at a glance whether the comparison is between finished runs."""
    lines = []
    for row in table.itertuples(index=False):
        mark = "ok " if row.verdict == "converged" else "NOT"
        lines.append(f"  [{mark}] {task_label(row.task):10} {method_label(row.method, labels):9} {row.budget:10} "
                     f"seed {row.seed}: best {row.best:6.2f} @ {row.best_step}, last two {row.previous:6.2f} "
                     f"{row.last:6.2f} ({row.verdict})")
    done = int((table["verdict"] == "converged").sum())
    lines.append(f"  {done} of {len(table)} runs converged (last two evals within {tolerance:g} point(s) of "
                 "the run's best)")
    return lines


def summary_text(report: dict[str, object], out_dir: str | Path) -> str:
    """The one-screen summary ``make demo`` ends with."""
    best = present(report["tables"]["best"])
    pngs = sorted(str(p) for p in report["written"] if str(p).endswith(".png"))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items()))
    pair = report["tables"]["pair"]
    lines = [
        "",
        f"=== AdaLoRA demo: {report['runs']} runs ({counts}), "
        f"{report['train_wall_s'] / 60:.1f} min in the runs themselves ===",
        "all-MiniLM-L6-v2 fine-tuned on BBC News; cells: accuracy (%) on the validation split at the best of the",
        "evaluations (mean ± std over n seeds); #Params ours = trainable parameters counted the paper's way",
        "(head excluded, AdaLoRA: the triplets it keeps).",
        "",
        to_markdown(best).rstrip(),
        "",
        "AdaLoRA vs LoRA at matched budgets (best / last eval, mean ± std over seeds; the last line of each",
        "task x budget: AdaLoRA − LoRA paired by seed, mean [95% t-interval], and the paired t-test's p;",
        "an interval that excludes 0 is a difference the seeds support):",
        "",
        to_markdown(pair).rstrip() if len(pair) else "  (no task x budget with both LoRA and AdaLoRA runs)",
        "",
        "Convergence per run:",
        *_convergence_lines(report["tables"]["convergence"], report["tolerance"], report.get("labels", {})),
        "",
        f"Tables: {out_dir}/{PREFIX}results.md (best eval), {PREFIX}results_final.md (last eval), "
        f"{PREFIX}adalora_vs_lora.md, {PREFIX}convergence.md",
        "Figures:",
        *(f"  {p}" for p in pngs),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-root", default="outputs/demo", help="runs to analyse (default: outputs/demo)")
    parser.add_argument("--out-dir", default=None, help="where tables and figures go (default: the results root)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"convergence: the last two evals within this many points of the best (default {TOLERANCE:g})")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or args.results_root
    print(summary_text(write_demo_report(args.results_root, out_dir, args.tolerance), out_dir))


if __name__ == "__main__":
    main()
