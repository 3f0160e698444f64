"""Display names and orderings shared by tables and figures.

Data stays keyed by the run keys (``glue_rte``, ``adapter_houlsby``, ``glue_0.3m``); only
what a reader sees goes through these functions, so tables and figures name things alike and an
unknown key (a new task) still shows, under its raw name. A method is shown under the label its
runs record (``run.label``: a user's method names itself), the paper's own rows under the names
the paper prints (``analysis.paper.PAPER_METHODS``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from analysis.paper import PAPER_METHODS

TASK_LABELS = {
    "glue_mnli": "MNLI", "glue_sst2": "SST-2", "glue_cola": "CoLA", "glue_qqp": "QQP",
    "glue_qnli": "QNLI", "glue_rte": "RTE", "glue_mrpc": "MRPC", "glue_stsb": "STS-B",
    "squad_v1": "SQuAD v1.1", "squad_v2": "SQuAD v2.0", "xsum": "XSum", "cnndm": "CNN/DM",
    "all": "All Ave.",
    "gsm8k": "GSM8K", "metamathqa_gsm8k": "MetaMathQA→GSM8K", "commonsense": "Commonsense",
}

# The evaluation sets of a multi-set task (``commonsense``: ``<set>_<score>`` metrics), in the order
# LLM-Adapters and DoRA print them, and their names there; ``avg`` is the task's average over its sets.
SET_LABELS = {
    "boolq": "BoolQ", "piqa": "PIQA", "siqa": "SIQA", "social_i_qa": "SIQA", "hellaswag": "HellaSwag",
    "winogrande": "WinoGrande", "arc_e": "ARC-e", "arc_easy": "ARC-e", "arc_c": "ARC-c", "arc_challenge": "ARC-c",
    "obqa": "OBQA", "openbookqa": "OBQA", "avg": "Avg.",
}
SET_SEPARATOR = "/"  # ``commonsense/boolq``: one evaluation set of a task, a column of its own

METRIC_LABELS = {
    "accuracy": "Acc", "accuracy_mm": "Acc-mm", "accuracy_avg": "Acc m/mm", "f1": "F1",
    "matthews_correlation": "Mcc", "combined_score": "Corr", "pearson": "Pearson",
    "spearmanr": "Spearman", "exact": "EM", "rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L",
    "rougeLsum": "R-Lsum",
    "exact_match_flexible": "EM flex", "exact_match_strict": "EM strict", "acc": "Acc", "acc_norm": "Acc-norm",
    "acc_parsed": "Acc parsed", "peft_accuracy": "PEFT acc", "avg": "Avg.",
}

# Row order of tables: the paper's methods in its order, then any other method, then budgets small to large.
METHOD_ORDER = tuple(PAPER_METHODS)
# A budget level run on other targets than the level's own (the decoders' ``qv`` option) is a row of
# its own: ``llm_r8@W_q,W_v`` (``analysis.tables.llm_tables``).
TARGETS_SEPARATOR = "@"
# A decoder budget level on a named target set (``llm_qv_r8``: conf/budget, ``targets: qv``) reads as its file's label.
TARGET_SET_LABELS = {"qv": "W_q W_v"}


def task_label(task: str) -> str:
    """``tiny_glue_rte`` -> ``tiny RTE``: fixture and demo tasks keep their prefix visible;
    ``commonsense/boolq`` (one evaluation set of a task) -> ``Commonsense BoolQ``."""
    if SET_SEPARATOR in task:
        parent, _, part = task.partition(SET_SEPARATOR)
        return f"{task_label(parent)} {SET_LABELS.get(part, part)}"
    for prefix in ("tiny_", "bbc_"):
        if task.startswith(prefix):
            return f"{prefix[:-1]} {task_label(task[len(prefix):])}"
    return TASK_LABELS.get(task, task)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def method_label(method: str, labels: Mapping[str, str] | None = None) -> str:
    """A method's display name: the label its runs record (``labels``: method -> label, from
    :func:`run_labels`), else the name the paper prints for its own rows, else the method name."""
    if labels and labels.get(method):
        return labels[method]
    return PAPER_METHODS.get(method, method)


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    """method -> the label its runs record (``analysis.collect``'s ``label`` column: ``run.label``,
    else ``config.method.label``, else the method name); the first one seen where runs disagree."""
    if "label" not in runs or runs.empty:
        return {}
    named = runs.dropna(subset=["label"]).drop_duplicates("method")
    return dict(zip(named["method"], named["label"], strict=True))


def record_labels(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """method -> label for run records, as :func:`run_labels` does for a frame (``run.label``, else
    ``config.method.label``); methods whose records name none are left to :func:`method_label`."""
    labels: dict[str, str] = {}
    for record in records:
        run, config = record.get("run") or {}, (record.get("config") or {}).get("method") or {}
        label = run.get("label") or config.get("label")
        if label:
            labels.setdefault(run.get("method"), label)
    return labels


def is_paper_method(method: str) -> bool:
    return method in PAPER_METHODS


def method_rank(method: str, labels: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Sort key: the paper's methods in its order, any other after them, by display name."""
    if method in METHOD_ORDER:
        return (METHOD_ORDER.index(method), "")
    return (len(METHOD_ORDER), method_label(method, labels).lower())


def budget_rank(budget: str) -> tuple[int, float, str]:
    """Sort key: ``none`` first (full FT, BitFit), then by the number in the label (``llm_r8``: 8; a
    decoder row on other targets, ``llm_r8@W_q,W_v``, after the level's row on all seven)."""
    if budget == "none":
        return (0, 0.0, budget)
    number = budget.partition(TARGETS_SEPARATOR)[0].rsplit("_", 1)[-1].rstrip("m%")
    number = number[1:] if number.startswith("r") else number
    try:
        return (1, float(number), budget)
    except ValueError:
        return (2, 0.0, budget)


def budget_label(budget: str) -> str:
    """A budget as the paper writes it: ``glue_0.3m`` -> ``0.3M``, ``qa_0.08`` / ``nlg_1.10`` -> ``0.08%`` / ``1.10%``;
    a decoder level as its file's label: ``llm_r8`` -> ``r=8``, ``llm_qv_r8`` -> ``r=8 (W_q W_v)`` (a run whose
    method names its own targets: ``llm_r8@W_q,W_v`` -> ``r=8 on W_q,W_v``).

    ``none`` (full FT, BitFit: no budget level) shows as ``—``; an unknown label shows unchanged.
    """
    if budget == "none":
        return "—"
    if TARGETS_SEPARATOR in budget:
        level, _, targets = budget.partition(TARGETS_SEPARATOR)
        return f"{budget_label(level)} on {targets}"
    family, _, number = budget.rpartition("_")
    if family.startswith("llm") and number[1:].isdigit():  # llm_r8; llm_qv_r8: the level on PEFT's q/v targets
        targets = family.removeprefix("llm").lstrip("_")
        return f"r={number[1:]}" + (f" ({TARGET_SET_LABELS.get(targets, targets)})" if targets else "")
    if family == "glue" and number.endswith("m"):
        return f"{number[:-1]}M"
    if family in ("qa", "nlg"):
        return f"{number}%"
    return budget
