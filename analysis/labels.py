"""Display names and orderings shared by tables and figures.

Data stays keyed by the run labels (``glue_rte``, ``adapter_houlsby``, ``glue_0.3m``); only
what a reader sees goes through these maps, so tables and figures name things alike and an
unknown key (a new task or method) still shows, under its raw label.
"""

from __future__ import annotations

TASK_LABELS = {
    "glue_mnli": "MNLI", "glue_sst2": "SST-2", "glue_cola": "CoLA", "glue_qqp": "QQP",
    "glue_qnli": "QNLI", "glue_rte": "RTE", "glue_mrpc": "MRPC", "glue_stsb": "STS-B",
    "squad_v1": "SQuAD v1.1", "squad_v2": "SQuAD v2.0", "xsum": "XSum", "cnndm": "CNN/DM",
    "all": "All Ave.",
}

METRIC_LABELS = {
    "accuracy": "Acc", "accuracy_mm": "Acc-mm", "accuracy_avg": "Acc m/mm", "f1": "F1",
    "matthews_correlation": "Mcc", "combined_score": "Corr", "pearson": "Pearson",
    "spearmanr": "Spearman", "exact": "EM", "rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L",
    "rougeLsum": "R-Lsum",
}

METHOD_LABELS = {
    "full_ft": "Full FT", "bitfit": "BitFit", "adapter_houlsby": "HAdapter",
    "adapter_pfeiffer": "PAdapter", "lora": "LoRA", "adalora": "AdaLoRA",
    "prune_lora": "Prune LoRA", "adalora_sensitivity": "AdaLoRA s=I (sensitivity)",
    "adalora_magnitude": "AdaLoRA S=|λ| (magnitude)", "svd_lora": "SVD-LoRA",
    "adalora_no_orth": "AdaLoRA γ=0", "lora_regu": "LoRA_regu", "lora_qk": "LoRA (W_q,W_k)",
}

# Row order of tables: the paper's method order, then budgets from small to large.
METHOD_ORDER = tuple(METHOD_LABELS)


def task_label(task: str) -> str:
    """``tiny_glue_rte`` -> ``tiny RTE``: fixture and demo tasks keep their prefix visible."""
    for prefix in ("tiny_", "bbc_"):
        if task.startswith(prefix):
            return f"{prefix[:-1]} {task_label(task[len(prefix):])}"
    return TASK_LABELS.get(task, task)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_rank(method: str) -> tuple[int, str]:
    """Sort key: known methods in the paper's order, unknown ones after, alphabetically."""
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def budget_rank(budget: str) -> tuple[int, float, str]:
    """Sort key: ``none`` first (full FT, BitFit), then by the number in the label."""
    if budget == "none":
        return (0, 0.0, budget)
    number = budget.rsplit("_", 1)[-1].rstrip("m%")
    try:
        return (1, float(number), budget)
    except ValueError:
        return (2, 0.0, budget)


def budget_label(budget: str) -> str:
    """A budget as the paper writes it: ``glue_0.3m`` -> ``0.3M``, ``qa_0.08`` / ``nlg_1.10`` -> ``0.08%`` / ``1.10%``.

    ``none`` (full FT, BitFit: no budget level) shows as ``—``; an unknown label shows unchanged.
    """
    if budget == "none":
        return "—"
    family, _, number = budget.rpartition("_")
    if family == "glue" and number.endswith("m"):
        return f"{number[:-1]}M"
    if family in ("qa", "nlg"):
        return f"{number}%"
    return budget
