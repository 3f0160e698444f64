"""Has a run converged? A check on its dev-metric history, one verdict per run.

A run has *converged* when its main metric has stopped rising: the last two evaluations lie
within ``tolerance`` points of its best (and so of each other). The verdict says which way a
run fails it: ``rising`` (the last evaluation gained more than ``tolerance`` on the one before:
more steps would likely help) or ``fell`` (it is more than ``tolerance`` below its best:
overfitting or noise after a peak). Fewer than three evaluations cannot show a plateau
(``too few evals``). A fixed-step comparison of methods means something only when every run
passes, which is why ``make demo`` prints this verdict beside every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from analysis.labels import budget_rank, method_rank

TOLERANCE = 1.0  # points of the main metric (accuracy in %)
MIN_EVALS = 3
VERDICTS = ("converged", "rising", "fell", "too few evals")
COLUMNS = ["task", "method", "budget", "seed", "steps", "evals", "best", "best_step", "previous", "last",
           "gap", "verdict"]


def convergence_verdict(values: list[float], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Best, the last two values, the gap (best − the lower of the last two) and the verdict."""
    if len(values) < MIN_EVALS:
        last = values[-1] if values else float("nan")
        return {"best": max(values, default=float("nan")), "previous": float("nan"), "last": last,
                "gap": float("nan"), "verdict": "too few evals"}
    previous, last, best = values[-2], values[-1], max(values)
    gap = best - min(previous, last)
    if gap <= tolerance:
        verdict = "converged"
    elif last - previous > tolerance:
        verdict = "rising"
    else:
        verdict = "fell"
    return {"best": best, "previous": previous, "last": last, "gap": gap, "verdict": verdict}


def run_convergence(record: Mapping[str, Any], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """One row for a successful run record: its keys, eval count, best step and verdict."""
    metrics = record["metrics"]
    main = metrics["main_metric"]
    evals = [e for e in metrics["evals"] if e.get(main) is not None]
    row = {k: record["run"][k] for k in ("task", "method", "budget", "seed")}
    row.update(steps=(record.get("train") or {}).get("steps"), evals=len(evals),
               best_step=max(evals, key=lambda e: e[main])["step"] if evals else None)
    row.update(convergence_verdict([float(e[main]) for e in evals], tolerance))
    return row


def convergence_table(records: Iterable[Mapping[str, Any]], tolerance: float = TOLERANCE) -> pd.DataFrame:
    """One row per run (columns ``COLUMNS``), by task, then the tables' method and budget order, then seed."""
    rows = sorted((run_convergence(r, tolerance) for r in records),
                  key=lambda r: (r["task"], method_rank(r["method"]), budget_rank(r["budget"]), r["seed"]))
    return pd.DataFrame(rows, columns=COLUMNS)
