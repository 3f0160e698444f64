"""The decoder-LLM tables: math, commonsense and PEFT's method comparison, one per model.

The runs are those of the ``causal_lm`` task family; each table lays them out as the paper's Table 1
does (rows method x budget level, mean ± std over seeds, the measured trainable count, every method
compared with ``reference`` over shared seeds, paired t-test, Holm across the table):

- ``math``: every task that records lm-evaluation-harness's GSM8K scores (``gsm8k``,
  ``metamathqa_gsm8k``, their tiny twins), ``exact_match_flexible`` (the main metric, as the
  harness's leaderboard reports) with ``exact_match_strict`` beside it, in one column per task.
- ``commonsense``: every task that records an average ``avg`` over evaluation sets, one column per
  set and the average. The sets are read from the records (``<set>_<score>`` metrics), not listed
  here; the score shown per set is the one the record's ``avg`` averages (:func:`set_score`: the
  generate-then-parse ``acc_parsed`` of LLM-Adapters and DoRA, or the log-likelihood ``acc``), so
  the per-set columns add up to the average column.
- ``peft_compare``: the runs of the ``peft_compare`` sweep (PEFT's MetaMathQA setting), in the math
  layout: PEFT's own rows beside the budget- and scale-matched AdaLoRA. Its runs train another
  schedule than ``llm_math``'s, so they are kept out of the math table (pooling them would be a
  conflict of configurations) and get this one; :func:`scale_table` lists each row's update scale.

PEFT's default targets (``q_proj``, ``v_proj``) are budget levels of their own, ``llm_qv_r8`` read as
``r=8 (W_q W_v)``; a run whose method names its own targets under a level's name is a row of its own,
``r=8 on W_q,W_v`` (``analysis.labels``), never pooled with the level's run on all seven projections.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.grouping import DEFAULT_PROTOCOL
from analysis.labels import SET_SEPARATOR, TARGETS_SEPARATOR, budget_rank, method_rank, run_labels, task_label
from analysis.stats import REFERENCE
from analysis.tables.common import aggregate, assemble, of_protocol, successful, values_of
from analysis.tables.paired import compare

LLM_FAMILY = "causal_lm"
LLM_PREFIX = "llm_"  # every decoder file's name starts with it: the report page's decoder section gathers them
PEFT_COMPARE_SWEEP = "peft_compare"
# The main metric first; ``peft_accuracy`` (PEFT's method-comparison answer parse) where a task records it
# (metamathqa_gsm8k's scorer gsm8k_peft, docs/llm.md).
MATH_METRICS = ("exact_match_flexible", "exact_match_strict", "peft_accuracy")
AVERAGE = "avg"
SET_SCORES = ("acc_parsed", "acc", "acc_norm")  # a set's metric is ``<set>_<score>``; the first found wins a tie
# The order LLM-Adapters and DoRA print the commonsense sets in (their names as records may spell them).
SET_ORDER = ("boolq", "piqa", "siqa", "social_i_qa", "hellaswag", "winogrande", "arc_e", "arc_easy", "arc_c",
             "arc_challenge", "obqa", "openbookqa")
LLM_LAYOUTS = ("math", "commonsense", "peft_compare")
LLM_TITLES = {
    "math": "Decoder LLMs, math: GSM8K test exact match (flexible / strict, lm-evaluation-harness; PEFT's parse)",
    "commonsense": "Decoder LLMs, commonsense reasoning: accuracy per evaluation set and their average",
    "peft_compare": "PEFT's MetaMathQA method comparison: PEFT's rows beside the budget- and scale-matched AdaLoRA",
}


def decoder_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The successful runs of the causal-LM family, a run on its own targets under a budget row of its own."""
    runs = successful(df[df["family"] == LLM_FAMILY])
    if "targets" not in runs:
        return runs
    return runs.assign(budget=[budget if pd.isna(targets) else f"{budget}{TARGETS_SEPARATOR}{targets}"
                               for budget, targets in zip(runs["budget"], runs["targets"], strict=True)])


def set_score(metrics: dict[str, float]) -> str | None:
    """The per-set score a run's ``avg`` averages: the ``SET_SCORES`` suffix whose ``<set>_<suffix>``
    values have ``avg`` as their mean; else the first suffix the run records; None without sets."""
    found = [s for s in SET_SCORES if any(_set_metric(m, (s,)) for m in metrics)]
    for score in found:
        values = [v for m, v in metrics.items() if _set_metric(m, (score,))]
        if AVERAGE in metrics and np.isclose(np.mean(values), metrics[AVERAGE], rtol=1e-9, atol=1e-9):
            return score
    return found[0] if found else None


def _set_metric(metric: str, scores: tuple[str, ...]) -> tuple[str | None, str] | None:
    """(set, score) of a metric that is one of ``scores``: ``boolq_acc_parsed`` -> ("boolq", "acc_parsed"),
    ``exact_match_flexible`` (a task without eval sets) -> (None, ...); None for any other metric, the
    averages over sets (``avg``, ``avg_<score>``) included."""
    for score in scores:
        if metric == score:
            return None, score
        name = metric.removesuffix(f"_{score}")
        if name != metric and name and name != AVERAGE:
            return name, score
    return None


def _per_set(runs: pd.DataFrame, which: str, scores: tuple[str, ...] | None) -> pd.DataFrame:
    """The metric rows of ``scores`` (None: per run, the score its ``avg`` averages, and ``avg`` itself), the
    metric named by its score and the task by its set, ``<task>/<set>``, where a run reports several sets:
    each set a column of its own (a task with one eval set, MetaMathQA's GSM8K, keeps its task's name)."""
    rows = []
    for _, run in runs.groupby("run_dir", sort=False):
        metrics = dict(zip(run["metric"], run[f"value_{which}"], strict=True))
        chosen = scores or (set_score(metrics),)
        found = {i: _set_metric(m, chosen) for i, m in zip(run.index, run["metric"], strict=True)}
        if scores is None:
            found.update({i: (AVERAGE, AVERAGE) for i, m in zip(run.index, run["metric"], strict=True) if m == AVERAGE})
        found = {i: hit for i, hit in found.items() if hit is not None}
        several = len({name for name, _ in found.values()}) > 1
        for index, (name, score) in found.items():
            task = run.loc[index, "task"]
            rows.append({**run.loc[index].to_dict(), "metric": score,
                         "task": f"{task}{SET_SEPARATOR}{name}" if several and name else task})
    return pd.DataFrame(rows, columns=runs.columns)


def _set_key(column: tuple[str, str]) -> tuple:
    task, _, name = column[0].partition(SET_SEPARATOR)
    known = SET_ORDER.index(name) if name in SET_ORDER else len(SET_ORDER) + (name == AVERAGE)
    return (task_label(task), known, name)


def layout_values(runs: pd.DataFrame, layout: str, which: str = "best") -> pd.DataFrame:
    """The metric rows of one layout among decoder runs (``decoder_runs``), the table's columns as tasks:
    commonsense, the runs with an average over sets scored by accuracy; math and peft_compare, the runs
    scored by GSM8K's exact match (outside / inside the ``peft_compare`` sweep)."""
    values = values_of(runs, which)
    values = values[(values["sweep"] == PEFT_COMPARE_SWEEP) == (layout == "peft_compare")]
    if layout == "commonsense":
        has_sets = values.groupby("run_dir")["metric"].agg(
            lambda ms: AVERAGE in set(ms) and any(_set_metric(m, SET_SCORES) for m in ms))
        return _per_set(values[values["run_dir"].map(has_sets).astype(bool)], which, None)
    scored = np.array([_set_metric(m, MATH_METRICS) is not None for m in values["metric"]], dtype=bool)
    return _per_set(values[scored], which, MATH_METRICS)


def llm_table(values: pd.DataFrame, layout: str, model: str, which: str = "best",
              reference: str = REFERENCE) -> pd.DataFrame:
    """One model's table of one layout from its metric rows (:func:`layout_values`), compared with ``reference``."""
    agg = aggregate(values, which)
    columns = list(dict.fromkeys(zip(agg["task"], agg["metric"], strict=True)))
    if layout == "commonsense":
        columns.sort(key=_set_key)
    else:
        columns.sort(key=lambda c: (task_label(c[0]), MATH_METRICS.index(c[1])))
    labels = run_labels(values)
    rows = sorted(dict.fromkeys(zip(agg["method"], agg["budget"], strict=True)),
                  key=lambda r: (method_rank(r[0], labels), budget_rank(r[1])))
    paired = compare(values, which, rows, reference)
    out = assemble(agg, columns, rows, paper=None, paired=paired)
    protocol = values["protocol"].iloc[0] if len(values) else DEFAULT_PROTOCOL
    out.attrs.update(table=f"llm_{layout}", model=model, labels=labels, protocol=protocol, which=which,
                     reference=reference, paired=paired)
    return out


def llm_tables(df: pd.DataFrame, layout: str = "math", which: str = "best", protocol: str = DEFAULT_PROTOCOL,
               reference: str = REFERENCE) -> dict[str, pd.DataFrame]:
    """``{model: table}`` of one ``layout`` (``LLM_LAYOUTS``), in model order; empty when no decoder run has it."""
    if layout not in LLM_LAYOUTS:
        raise ValueError(f"layout must be one of {LLM_LAYOUTS}, got {layout!r}")
    values = layout_values(of_protocol(decoder_runs(df), protocol), layout, which)
    return {model: llm_table(group, layout, model, which, reference)
            for model, group in values.groupby("model", sort=True)}


def llm_stem(layout: str, model: str, tag: str = "") -> str:
    """``llm_math_tiny_llama`` (+ the protocol tag); ``_best`` / ``_final`` / ``_paired`` follow. Every
    decoder file starts with ``llm_``: the report page gathers them in its decoder section."""
    return f"{LLM_PREFIX}{layout}_{model}{tag}"


def llm_title(layout: str, model: str) -> str:
    return f"{LLM_TITLES[layout]}, model {model}"


def scale_table(df: pd.DataFrame, protocol: str = DEFAULT_PROTOCOL) -> pd.DataFrame:
    """Per decoder row of the ``peft_compare`` sweep (model, task, method, budget): the update scale its runs
    trained at (``params.update_scale``: LoRA alpha/r, AdaLoRA alpha/init_r), the rank its tensors are held
    at, the trainable count at the start and the end, and its seeds, so "scale-matched" can be checked."""
    runs = of_protocol(decoder_runs(df), protocol)
    runs = runs[runs["sweep"] == PEFT_COMPARE_SWEEP].drop_duplicates("run_dir")
    columns = ["model", "task", "method", "budget", "label", "update_rule", "update_scale", "rank_held",
               "trainable_start", "trainable_params", "n"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    keys = ["model", "task", "method", "budget"]
    out = runs.groupby(keys, sort=False).agg(
        label=("label", "first"), update_rule=("update_rule", "first"), update_scale=("update_scale", "median"),
        rank_held=("rank_held", "median"), trainable_start=("trainable_start", "median"),
        trainable_params=("trainable_params", "median"), n=("seed", "nunique")).reset_index()
    out["_order"] = [(m, method_rank(me), budget_rank(b)) for m, me, b in
                     zip(out["model"], out["method"], out["budget"], strict=True)]
    out = out.sort_values("_order", kind="stable").drop(columns="_order")
    return out[columns].set_index(keys)


ALLOCATION_COLUMNS = ["model", "task", "method", "budget", "seed", "status", "allocator runs", "rank changes",
                      "changed at steps", "must change", "total rank start", "total rank end", "reason"]


def _allocation_not_run(record: Mapping[str, Any]) -> bool:
    """Whether a failed run failed because its allocator never changed a rank (``AllocationNotRun``). Asked of
    failed runs only: the allocator's module imports torch, which the analysis of successful runs never loads."""
    from adalora.allocator import AllocationNotRun

    return AllocationNotRun.__name__ in str(record.get("reason") or "")


def allocation_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The proof that allocation ran, one row per rank-adaptive decoder run (its record has ``ranks.allocation``,
    or it failed because its ranks never changed): how often the allocator ran, at which steps the ranks
    changed, whether its schedule says they must, and the total rank at the first and the last step.
    A run whose ranks had to change and did not has failed with the likely cause (``reason``)."""
    rows = []
    for record in records:
        run = record.get("run") or {}
        ranks = record.get("ranks") or {}
        proof = ranks.get("allocation")
        not_run = record.get("status") != "success" and _allocation_not_run(record)
        if run.get("family") != LLM_FAMILY or not (isinstance(proof, dict) or not_run):
            continue
        proof = proof if isinstance(proof, dict) else {}
        history = ranks.get("history") or []
        changes = list(proof.get("rank_changes") or [])
        rows.append({
            "model": run.get("model"), "task": run.get("task"), "method": run.get("method"), "budget": run.get("budget"),
            "seed": run.get("seed"), "status": record.get("status"), "allocator runs": proof.get("allocator_runs"),
            "rank changes": len(changes), "changed at steps": ", ".join(map(str, changes)),
            "must change": proof.get("ranks_must_change"),
            "total rank start": sum(history[0]["ranks"].values()) if history else None,
            "total rank end": sum((proof.get("final_pattern") or {}).values()) if proof.get("final_pattern") else None,
            "reason": record.get("reason") if record.get("status") != "success" else None})
    out = pd.DataFrame(rows, columns=ALLOCATION_COLUMNS)
    out = out.astype({"seed": "Int64", "allocator runs": "Int64", "rank changes": "Int64",
                      "total rank start": "Int64", "total rank end": "Int64"})
    return out.sort_values(["model", "task", "method", "budget", "seed"], kind="stable", ignore_index=True)


def allocation_summary(table: pd.DataFrame) -> str:
    """One line over :func:`allocation_table`: runs, allocator calls in all, runs whose ranks changed, and the
    runs that failed because their ranks had to change and did not."""
    changed = int((table["rank changes"] > 0).sum())
    failed = int((table["status"] != "success").sum())
    return (f"{len(table)} rank-adaptive decoder run(s): the allocator ran {int(table['allocator runs'].sum())} "
            f"time(s) in all; {changed} run(s) changed ranks; {failed} failed because the ranks their schedule "
            "must have changed did not (reason: the likely cause, e.g. update_and_allocate never called)")
