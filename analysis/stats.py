"""Paired comparisons of a method with a reference method over the seeds both ran.

A seed fixes the data order and the task head's initialisation for every method, so the
difference of two methods at one seed removes that source of variance: the comparison is the
mean of the per-seed differences (method − reference), its 95% confidence interval, a paired
t-test, and the number of seeds both share. Everything is computed by scipy:

- interval ``t``: the t-interval of the mean difference (``scipy.stats.ttest_rel(...).confidence_interval``);
- interval ``bootstrap``: ``scipy.stats.bootstrap`` (BCa) on the per-seed differences;
- ``p``: the two-sided paired t-test (``scipy.stats.ttest_rel``);
- ``p_holm``: Holm's step-down adjustment of ``p`` across the comparisons of one table
  (:func:`holm`), so "some cell of this table differs" holds at 5% family-wise.

Only seeds present for both methods are paired; a method with fewer than two shared seeds gets
``n`` and its mean difference but no interval and no p-value (NaN). So does a method whose
difference is the same on every seed (no spread, :func:`no_spread`): the t statistic is d / 0, for
which scipy returns p = 0 (d != 0) or NaN (d = 0) and an interval of width 0, so a difference seen
on two seeds would read as certain; its p is undefined, said in ``note``, and no interval means
no ↑/↓ marker. The runs come from
``analysis.grouping.per_seed``: one configuration per label and protocol, so runs of different
configurations or protocols are never pooled or paired, and a comparison needs the same model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.grouping import per_seed

REFERENCE = "adalora"
INTERVALS = ("t", "bootstrap")
CONFIDENCE = 0.95
COLUMNS = ["n", "mean_diff", "ci_low", "ci_high", "p", "p_holm", "excludes_zero", "note", "seeds"]
NO_SPREAD = "the difference is the same on every seed: no spread, p undefined"
# Differences equal up to float rounding (metrics subtracted in binary) count as identical: scipy
# then returns a p of 1e-33 or so from a standard deviation of 1e-16, with only a RuntimeWarning.
_SAME = {"rtol": 1e-9, "atol": 1e-12}


def paired_difference(values: Sequence[float], reference: Sequence[float], interval: str = "t",
                      confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, float | int | bool | str | None]:
    """Mean of ``values - reference`` (aligned per seed), its interval, the paired t-test's p, n."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    a, b = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one value per seed on both sides, got {a.shape} and {b.shape}")
    n = len(a)
    out: dict[str, float | int | bool | str | None] = {
        "n": n, "mean_diff": float(np.mean(a - b)) if n else np.nan, "ci_low": np.nan, "ci_high": np.nan,
        "p": np.nan, "note": None}
    if n >= 2:
        diff = a - b
        if no_spread(diff):
            out["note"] = NO_SPREAD
        else:
            test = stats.ttest_rel(a, b)
            low, high = test.confidence_interval(confidence)
            if interval == "bootstrap":
                boot = stats.bootstrap((diff,), np.mean, confidence_level=confidence, rng=np.random.default_rng(seed))
                low, high = boot.confidence_interval
            out.update(ci_low=float(low), ci_high=float(high), p=float(test.pvalue))
    out["excludes_zero"] = bool(out["ci_low"] > 0 or out["ci_high"] < 0)
    return out


def no_spread(diff: np.ndarray) -> bool:
    """Whether the per-seed differences are all the same (up to float rounding): the paired t-test's
    statistic is then d / 0 and neither its p nor its interval means anything."""
    return bool(np.allclose(diff, diff[0], **_SAME))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a comparison).

    With the m p-values sorted ascending, the i-th (0-based) becomes max over j <= i of
    min(1, (m - j) p_(j)): reject where the adjusted value is below the level.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


def paired_comparisons(runs: pd.DataFrame, value: str, keys: Sequence[str], reference: str = REFERENCE,
                       interval: str = "t") -> pd.DataFrame:
    """Every method against ``reference`` at each cell: ``keys`` holds ``method`` and the cell's other
    keys (task, budget, protocol, metric); one row per method x cell where the reference ran too.

    Holm's adjustment runs over all rows returned (the comparisons of one table).
    """
    if "method" not in keys:
        raise ValueError(f"keys must include 'method' to pair methods, got {list(keys)}")
    cell = [k for k in keys if k != "method"]
    seeds = per_seed(runs, value, keys)
    rows = []
    for key, group in seeds.groupby(cell, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ref = group[group["method"] == reference]
        if ref.empty:
            continue
        ref_values = ref.set_index("seed")["value"]
        for method, mine in group[group["method"] != reference].groupby("method", sort=False):
            if set(mine["model"]) != set(ref["model"]):
                continue  # another model: not the same experiment
            mine_values = mine.set_index("seed")["value"]
            shared = sorted(set(mine_values.index) & set(ref_values.index))
            if not shared:
                continue
            result = paired_difference(mine_values.loc[shared].to_numpy(), ref_values.loc[shared].to_numpy(), interval)
            rows.append({**dict(zip(cell, key, strict=True)), "method": method, "reference": reference, **result,
                         "seeds": ",".join(str(s) for s in shared)})
    out = pd.DataFrame(rows, columns=[*cell, "method", "reference", *COLUMNS])
    out["p_holm"] = holm(out["p"].to_numpy()) if len(out) else []
    return out
