"""The demo's analysis (``make demo``, after ``sweep=demo``): tables, budget curves, rank heatmaps.

Uses the same functions as the paper's analysis (``collect``, ``summary_table``,
``budget_curve``, ``rank_heatmap_from_runs``, ``rank_over_training``) on the runs under one
results root, writes everything into ``--out-dir`` and prints a one-screen summary::

    python -m analysis.demo --results-root outputs/demo --out-dir outputs/demo

Files (``<task>`` = bbc_topic, bbc_pair; ``<budget>`` = the sweep's budget levels):
``demo_results.md/.csv`` (main metric at the best eval: mean ± std over seeds where >1 seed,
measured trainable parameters), ``demo_results_final.md/.csv`` (at the last eval),
``demo_run_status.csv``, ``demo_budget_curve_<task>.png/.svg``,
``demo_rank_heatmap_<task>_<budget>.png/.svg`` (AdaLoRA's final rank per weight type x layer)
and ``demo_rank_over_training_<task>_<budget>.png/.svg``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from analysis.collect import collect, run_status, select_records
from analysis.figures import budget_curve, rank_heatmap_from_runs, rank_over_training, save_figure
from analysis.labels import budget_rank, task_label
from analysis.tables import present, successful, summary_table, to_markdown, write_table

PREFIX = "demo_"


def _tasks(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, main metric) of every task with successful runs, in label order."""
    mains = df.loc[df["is_main"], ["task", "metric"]].drop_duplicates()
    return sorted(mains.itertuples(index=False, name=None), key=lambda tm: task_label(tm[0]))


def write_demo_report(results_root: str | Path, out_dir: str | Path) -> dict[str, object]:
    """Write the demo's tables and figures; returns what the summary prints (tables, paths, counts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status = run_status(results_root)
    status.to_csv(out / f"{PREFIX}run_status.csv", index=False)
    df = successful(collect(results_root))
    if df.empty:
        raise SystemExit(f"no successful runs under {results_root}: run `make demo` (or sweep=demo) first")
    written: list[Path] = []
    tables = {}
    for which, stem, title in (("best", "results", "Demo: main metric at the best eval"),
                               ("final", "results_final", "Demo: main metric at the last eval")):
        tables[which] = summary_table(df, which=which)
        written += write_table(tables[which], out, f"{PREFIX}{stem}", title)
    for task, metric in _tasks(df):
        fig = budget_curve(df, task, metric, paper_tables=())
        fig.axes[0].set_xlabel("trainable parameters (measured; head excluded)")  # no paper points here
        written += save_figure(fig, out / f"{PREFIX}budget_curve_{task}")
        adalora = df[(df["task"] == task) & (df["method"] == "adalora")]
        for budget in sorted(set(adalora["budget"]), key=budget_rank):
            records = [r for r in select_records(df, task=task, budget=budget, method="adalora") if r.get("ranks")]
            if not records:
                continue
            fig, matrix = rank_heatmap_from_runs(records, task, budget)
            written += save_figure(fig, out / f"{PREFIX}rank_heatmap_{task}_{budget}")
            matrix.to_csv(out / f"{PREFIX}rank_heatmap_{task}_{budget}.csv")
            written += save_figure(rank_over_training(records[0]), out / f"{PREFIX}rank_over_training_{task}_{budget}")
    counts = status["status"].value_counts().to_dict()
    wall = status.drop_duplicates("run_dir")["wall_time_s"].sum()
    return {"tables": tables, "written": written, "counts": counts, "train_wall_s": float(wall), "runs": len(status)}


def summary_text(report: dict[str, object], out_dir: str | Path) -> str:
    """The one-screen summary ``make demo`` ends with."""
    best = present(report["tables"]["best"])
    pngs = sorted(str(p) for p in report["written"] if str(p).endswith(".png"))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items()))
    lines = [
        "",
        f"=== AdaLoRA demo: {report['runs']} runs ({counts}), "
        f"{report['train_wall_s'] / 60:.1f} min in the runs themselves ===",
        "all-MiniLM-L6-v2 fine-tuned on BBC News; cells: accuracy (%) on the validation split at the best of the",
        "evaluations (n = seeds); #Params ours = trainable parameters counted the paper's way (head excluded,",
        "AdaLoRA: the triplets it keeps).",
        "",
        to_markdown(best).rstrip(),
        "",
        f"Tables: {out_dir}/{PREFIX}results.md (best eval), {PREFIX}results_final.md (last eval)",
        "Figures:",
        *(f"  {p}" for p in pngs),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-root", default="outputs/demo", help="runs to analyse (default: outputs/demo)")
    parser.add_argument("--out-dir", default=None, help="where tables and figures go (default: the results root)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or args.results_root
    print(summary_text(write_demo_report(args.results_root, out_dir), out_dir))


if __name__ == "__main__":
    main()
