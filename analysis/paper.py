"""The numbers the AdaLoRA paper (Zhang et al., ICLR 2023) reports, as tidy data.

Every value below is transcribed from the paper's tables (reference notes §5) in the paper's
own row order and layout, so that a reader can check each line against the PDF; the parsers
turn them into one long DataFrame keyed by *our* task, method, metric and budget labels, the
same keys ``analysis.collect`` produces, so ours and the paper's numbers join directly.

Mapping choices (documented here because the paper leaves them open):

- Table 1 groups its rows by #Params: 0.30-0.33M -> ``glue_0.3m``, 0.60-0.61M -> ``glue_0.6m``,
  1.18-1.33M -> ``glue_1.2m``; Full FT and BitFit have no budget level (``none``).
- Tables 2, 4, 5 use the "% of full FT" levels -> ``qa_0.08`` ... ``qa_0.65`` (Tables 4/5 are
  GLUE tasks at those levels); Table 3's levels -> ``nlg_0.13`` ... ``nlg_2.20``; "100%" -> ``none``.
- MNLI is two metrics, ``accuracy`` (matched) and ``accuracy_mm``; Table 5's single MNLI
  number is the m/mm mean, ``accuracy_avg``. QQP and MRPC report ``accuracy`` (and QQP ``f1``);
  STS-B's "Corr" is ``combined_score`` (mean of Pearson and Spearman).
- Table 3's "R-L" -> ``rougeLsum``: its CNN/DM Full FT row equals the BART paper's numbers,
  which were computed with files2rouge, i.e. summary-level LCS over sentence splits.
- Table 1's "All Ave." is kept as task ``all`` / metric ``all_ave``. It is the mean over the 8
  tasks with MNLI = mean(m, mm) and QQP = mean(Acc, F1); that definition reproduces all 12
  rows to within 0.006 (tested), whereas MNLI-m / QQP-Acc misses by ~0.16.

Known inconsistencies of the paper (reference notes §6), kept as data in ``KNOWN_INCONSISTENCIES``
so the results notebook can print them next to the tables.
"""

from __future__ import annotations

import re

import pandas as pd

AVERAGE_TASK = "all"
AVERAGE_METRIC = "all_ave"

# Which metrics make up a task's score in Table 1's "All Ave." (see module docstring).
AVERAGE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "glue_mnli": ("accuracy", "accuracy_mm"),
    "glue_sst2": ("accuracy",),
    "glue_cola": ("matthews_correlation",),
    "glue_qqp": ("accuracy", "f1"),
    "glue_qnli": ("accuracy",),
    "glue_rte": ("accuracy",),
    "glue_mrpc": ("accuracy",),
    "glue_stsb": ("combined_score",),
}

KNOWN_INCONSISTENCIES: tuple[str, ...] = (
    "Orthogonal regulariser: the paper's Eq. 4 sums squared Frobenius norms; the code averages "
    "non-squared norms over the 2n matrices.",
    "Budget schedule: Eq. 14's numerator (t - t_i - t_f) differs from the code's (t - t_i).",
    "Adapted matrices: the paper text omits W_o; the code and the budgets include it.",
    "b(0): '1.5 x b(T)' in the paper, 2-3x in the GLUE scripts.",
    "Script vs Table 8: CoLA lr 8e-4 vs 5e-4 and gamma 0.1 vs 0.5; QQP lr 8e-4 vs 5e-4; QNLI lr "
    "5e-4 vs 1.2e-3; STS-B gamma 0.3 vs 0.1; XSum t_f 25000 vs 50000 and 25 epochs vs '15'; "
    "App. E.2 batch size 16 for NLG vs 64/32 in Table 13 and Sec. 4.3.",
    "Table 12 (NLG budgets) is a copy of Table 9 and fits neither Table 3's % levels nor "
    "BART-large's 192 matrices.",
    "Table 1 AdaLoRA-0.32M RTE 87.36 equals Table 4's 0.08% value (Table 4 gives 87.73 at 0.16%).",
    "SST-2 AdaLoRA at 0.08%: 95.52 in Table 4 vs 95.64 in Table 5.",
    "Table 14 LoRA(all) QNLI 94.31 and MRPC 90.44 vs Table 1 LoRA r=2 94.03 and 89.71.",
    "Table 14's header says LoRA on (W_q, W_k); the text says (W_q, W_v).",
    "'%' budgets use a denominator of ~207M for DeBERTaV3-base, not the stated 184M.",
    "Committed scripts that do not run as-is: MRPC and CNN/DM (--apply_rankselector), "
    "SQuAD v2.0 (--max_step 300).",
    "Text vs Table 3: '21.13 R-2 at 1.10% vs 19.89 for LoRA', but LoRA's 1.10% R-2 is 20.20 "
    "(19.89 is its 0.26% value).",
    "Text vs Table 15: '+16% on SQuADv2' training time, but the table's second dataset is SST-2.",
    "Table 1 has no LoRA/AdaLoRA row at 0.6M although Table 7 defines r=4 / b(T)=288.",
    "Table 3's 'R-L' is not specified as rougeL or rougeLsum.",
    "Baseline learning rates: Sec. 4.1 searches LoRA over {5e-5, 8e-5, 1e-4, 2e-4}, App. C.2 over "
    "{3e-5, 5e-5, 8e-5, 1e-4, 3e-4, 5e-4, 8e-4, 1e-3}; AdaLoRA's own reported best rates (e.g. STS-B "
    "2.2e-3) lie outside both (QingruZhang/AdaLoRA#11). The official LoRA SQuAD v2.0 commands use "
    "lr 8e-5 and 8 epochs, AdaLoRA's 1e-3 and 12.",
    "Baseline schedules: the paper gives no epochs for the baselines and no full-FT settings; the "
    "suite takes each from its own source (DeBERTaV3 model card, BART's fairseq recipe).",
    "Adapters: the official fork applies the adapter after the hidden dropout and initialises its "
    "up-projection from N(0, 0.02) (the fork's _init_weights), not at zero as the adapter papers' "
    "near-identity init.",
    "NLG warm-up: the summarisation scripts pass --num_warmup_steps 3000, but the scheduler was "
    "built on the unsharded step count before accelerator.prepare and ticked 8 times per optimiser "
    "step on 8 GPUs: the runs warmed up for ~375 optimiser steps.",
    "ROUGE: the summarisation script scores against the labels truncated to the max target length "
    "(64 XSum / 160 CNN/DM tokens), not the full reference summaries.",
    "Evaluation cadence differs per official script (SST-2 and MNLI every 3,000 steps, MRPC 300, "
    "CoLA/RTE 100, SQuAD v2.0 3,000); the paper does not say whether the best or last "
    "evaluation is reported.",
)

# The methods of the paper's tables, in the order its rows list them, under the names its rows print.
# These name the paper's own rows (a row of the paper with no run of ours still needs a name); a run's
# display name comes from its record (``run.label``, ``analysis.labels``), never from here.
PAPER_METHODS: dict[str, str] = {
    "full_ft": "Full FT", "bitfit": "BitFit", "adapter_houlsby": "HAdapter",
    "adapter_pfeiffer": "PAdapter", "lora": "LoRA", "adalora": "AdaLoRA",
    "prune_lora": "Prune LoRA", "adalora_sensitivity": "AdaLoRA s=I (sensitivity)",
    "adalora_magnitude": "AdaLoRA S=|λ| (magnitude)", "svd_lora": "SVD-LoRA",
    "adalora_no_orth": "AdaLoRA γ=0", "lora_regu": "LoRA_regu", "lora_qk": "LoRA (W_q,W_k)",
}

# The model each of the paper's tables reports (its Sec. 4), under the ``model`` name our records carry
# (``conf/model/*.yaml``): its numbers, and a Δ against them, are meaningful only beside runs of that
# model on that table's tasks (``analysis.tables``); a run of any other model gets tables of its own.
PAPER_BACKBONES: dict[str, str] = {
    "table1": "deberta_v3_base", "table2": "deberta_v3_base", "table3": "bart_large",
    "table4": "deberta_v3_base", "table5": "deberta_v3_base", "table14": "deberta_v3_base",
}
BACKBONE_LABELS: dict[str, str] = {"deberta_v3_base": "DeBERTaV3-base", "bart_large": "BART-large"}

# Denominators of the paper's "% of full FT" budgets, used to place its points on a
# parameter axis: DeBERTaV3-base 165,888 params per unit of rank = 0.08% -> 207.36M (the
# stated 184M does not fit its own % levels); BART-large ~406M.
_PERCENT_BASE = {"deberta": 165_888 / 0.0008, "bart": 406e6}

_T1_COLUMNS = (
    ("glue_mnli", "accuracy"), ("glue_mnli", "accuracy_mm"), ("glue_sst2", "accuracy"),
    ("glue_cola", "matthews_correlation"), ("glue_qqp", "accuracy"), ("glue_qqp", "f1"),
    ("glue_qnli", "accuracy"), ("glue_rte", "accuracy"), ("glue_mrpc", "accuracy"),
    ("glue_stsb", "combined_score"), (AVERAGE_TASK, AVERAGE_METRIC),
)
# Method | budget | #Params | MNLI m/mm | SST-2 | CoLA | QQP Acc/F1 | QNLI | RTE | MRPC | STS-B | All Ave.
_TABLE1 = """
full_ft          none      184M  | 89.90/90.12 95.63 69.19 92.40/89.80 94.03 83.75 89.46 91.60 88.09
bitfit           none      0.1M  | 89.37/89.91 94.84 66.96 88.41/84.95 92.24 78.70 87.75 91.35 86.02
adapter_houlsby  glue_1.2m 1.22M | 90.13/90.17 95.53 68.64 91.91/89.27 94.11 84.48 89.95 91.48 88.12
adapter_pfeiffer glue_1.2m 1.18M | 90.33/90.39 95.61 68.77 92.04/89.40 94.29 85.20 89.46 91.54 88.24
lora             glue_1.2m 1.33M | 90.65/90.69 94.95 69.82 91.99/89.38 93.87 85.20 89.95 91.60 88.34
adalora          glue_1.2m 1.27M | 90.76/90.79 96.10 71.45 92.23/89.74 94.55 88.09 90.69 91.84 89.31
adapter_houlsby  glue_0.6m 0.61M | 90.12/90.23 95.30 67.87 91.65/88.95 93.76 85.56 89.22 91.30 87.93
adapter_pfeiffer glue_0.6m 0.60M | 90.15/90.28 95.53 69.48 91.62/88.86 93.98 84.12 89.22 91.52 88.04
adapter_houlsby  glue_0.3m 0.31M | 90.10/90.02 95.41 67.65 91.54/88.81 93.52 83.39 89.25 91.31 87.60
adapter_pfeiffer glue_0.3m 0.30M | 89.89/90.06 94.72 69.06 91.40/88.62 93.87 84.48 89.71 91.38 87.90
lora             glue_0.3m 0.33M | 90.30/90.38 94.95 68.71 91.61/88.91 94.03 85.56 89.71 91.68 88.15
adalora          glue_0.3m 0.32M | 90.66/90.70 95.80 70.04 91.78/89.16 94.49 87.36 90.44 91.63 88.86
"""

_QA_BUDGETS = ("qa_0.08", "qa_0.16", "qa_0.32", "qa_0.65")
# Method | SQuAD v1.1 EM/F1 at 0.08/0.16/0.32/0.65% | SQuAD v2.0 EM/F1 at the same levels
_TABLE2 = """
adapter_houlsby  | 84.4/91.5 85.3/92.1 86.1/92.7 86.7/92.9 | 83.4/86.6 84.3/87.3 84.9/87.9 85.4/88.3
adapter_pfeiffer | 84.4/91.7 85.9/92.5 86.2/92.8 86.6/93.0 | 84.2/87.2 84.5/87.6 84.9/87.8 84.5/87.5
lora             | 86.4/92.8 86.6/92.9 86.7/93.1 86.7/93.1 | 84.7/87.5 83.6/86.7 84.5/87.4 85.0/88.0
adalora          | 87.2/93.4 87.5/93.6 87.5/93.7 87.6/93.7 | 85.6/88.7 85.7/88.8 85.5/88.6 86.0/88.9
"""
_TABLE2_FULL_FT = {"squad_v1": (86.0, 92.7), "squad_v2": (85.4, 88.4)}

# #Params | Method | XSum R-1/R-2/R-L | CNN/DM R-1/R-2/R-L
_TABLE3 = """
100%  full_ft | 45.49/22.33/37.26 44.16/21.28/40.90
2.20% lora    | 43.95/20.72/35.68 45.03/21.84/42.15
2.20% adalora | 44.72/21.46/36.46 45.00/21.89/42.16
1.10% lora    | 43.40/20.20/35.20 44.72/21.58/41.84
1.10% adalora | 44.35/21.13/36.13 44.96/21.77/42.09
0.26% lora    | 43.18/19.89/34.92 43.95/20.91/40.98
0.26% adalora | 43.55/20.17/35.20 44.39/21.28/41.50
0.13% lora    | 42.81/19.68/34.73 43.68/20.63/40.71
0.13% adalora | 43.29/19.95/35.04 43.94/20.83/40.96
"""

# variant | SST-2 Acc at .08/.16/.65% | RTE Acc | CoLA Mcc
_TABLE4 = """
prune_lora          | 94.84/94.50/94.95 86.28/86.15/87.00 66.71/69.29/69.57
adalora             | 95.52/95.80/96.10 87.36/87.73/88.09 70.21/70.04/71.45
adalora_sensitivity | 94.61/95.30/95.64 87.36/87.71/88.10 66.71/68.83/70.19
adalora_magnitude   | 95.41/95.41/95.87 87.00/86.28/88.00 67.67/68.44/70.38
"""

# variant | SST-2 Acc at .08/.16/.32/.65% | MNLI avg m/mm ("-" = not reported)
_TABLE5 = """
lora            | 94.38/94.95/-/94.95     90.19/90.34/-/90.57
lora_regu       | -/94.61/94.72/94.61     -/90.30/90.40/90.66
svd_lora        | 95.33/95.18/95.07/95.53 90.28/90.25/90.52/90.62
adalora_no_orth | 95.41/95.10/95.30/95.10 90.37/90.34/90.56/90.43
adalora         | 95.64/95.80/96.10/96.10 90.65/90.68/90.66/90.77
"""

_T14_COLUMNS = (
    ("glue_mnli", "accuracy"), ("glue_qqp", "accuracy"), ("glue_cola", "matthews_correlation"),
    ("glue_rte", "accuracy"), ("glue_qnli", "accuracy"), ("glue_sst2", "accuracy"),
    ("glue_mrpc", "accuracy"), ("glue_stsb", "combined_score"),
)
# LoRA at 0.3M on two weight types vs all six | MNLI QQP CoLA RTE QNLI SST-2 MRPC STS-B
_TABLE14 = """
lora_qk | 89.80 90.48 67.04 83.75 93.69 94.84 90.20 91.05
lora    | 90.30 91.61 68.71 85.56 94.31 94.95 90.44 91.68
"""

# Figure 2's only numeric anchors, from the text of Sec. 4.4 (SQuAD v2.0 F1, AdaLoRA).
_FIGURE2 = (("qa_0.16", "0.16%", 88.78), ("qa_4.65", "4.65%", 88.89))

# dataset | #Param | LoRA mem GB | AdaLoRA mem GB | LoRA min/epoch | AdaLoRA min/epoch
_TABLE15 = """
glue_mnli 0.08% 11.094 11.104 105 116
glue_mnli 0.16% 11.098 11.110 105 117
glue_mnli 0.65% 11.128 11.188 105 117
glue_sst2 0.08% 13.138 13.148 60 71
glue_sst2 0.16% 13.142 13.164 61 71
glue_sst2 0.65% 13.170 13.226 61 71
"""

# The LoRA paper's RoBERTa rows (Hu et al. 2021, "LoRA", arXiv:2106.09685, Table 2; GLUE dev), the rows that
# sweep=glue_roberta runs beside AdaLoRA and the PEFT methods. Data only: not yet parsed into paper_results().
# Columns map to our metrics: MNLI accuracy (the paper: "overall (matched and mismatched)"), SST-2 accuracy,
# MRPC accuracy, CoLA matthews_correlation, QNLI accuracy, QQP accuracy, RTE accuracy, STS-B pearson.
# LoRA rows: median over 5 seeds (the paper's ± omitted). Marker: * = numbers the LoRA paper takes from prior
# work; † = its Houlsby et al. (2019)-like setup on RoBERTa-large; - = none. adapter_drop is AdapterDrop
# (Rücklé et al. 2020), a method the suite does not run. Budget: glue_0.3m is LoRA r=2 on the six weight types
# (RoBERTa-base 331,776; RoBERTa-large 884,736), the LoRA paper's LoRA r=8 on W_q, W_v (294,912 / 786,432).
# model | method | budget | marker | #Params | MNLI SST-2 MRPC CoLA QNLI QQP RTE STS-B
_LORA_TABLE2_ROBERTA = """
roberta_base  full_ft          none      * 125.0M | 87.6 94.8 90.2 63.6 92.8 91.9 78.7 91.2
roberta_base  bitfit           none      * 0.1M   | 84.7 93.7 92.7 62.0 91.8 84.0 81.5 90.8
roberta_base  adapter_drop     glue_0.3m * 0.3M   | 87.1 94.2 88.5 60.8 93.1 90.2 71.5 89.7
roberta_base  adapter_drop     -         * 0.9M   | 87.3 94.7 88.4 62.6 93.0 90.6 75.9 90.3
roberta_base  lora             glue_0.3m - 0.3M   | 87.5 95.1 89.7 63.4 93.3 90.8 86.6 91.5
roberta_large full_ft          none      * 355.0M | 90.2 96.4 90.9 68.0 94.7 92.2 86.6 92.4
roberta_large lora             glue_0.3m - 0.8M   | 90.6 96.2 90.9 68.2 94.9 91.6 87.4 92.6
roberta_large adapter_pfeiffer -         † 3.0M   | 90.2 96.1 90.2 68.3 94.8 91.9 83.8 92.1
roberta_large adapter_pfeiffer glue_0.3m † 0.8M   | 90.5 96.6 89.7 67.8 94.8 91.7 80.1 91.9
roberta_large adapter_houlsby  -         † 6.0M   | 89.9 96.2 88.7 66.5 94.7 92.1 83.4 91.0
roberta_large adapter_houlsby  glue_0.3m † 0.8M   | 90.3 96.3 87.7 66.3 94.7 91.5 72.9 91.5
roberta_large lora             glue_0.3m † 0.8M   | 90.6 96.2 90.2 68.2 94.8 91.6 85.2 92.3
"""

COLUMNS = ["table", "task", "method", "budget", "params_label", "metric", "value"]


def _lines(block: str) -> list[list[str]]:
    """Non-empty lines of a transcription block, split into their ``|``-separated fields."""
    return [[field.strip() for field in line.split("|")] for line in block.strip().splitlines()]


def _numbers(field: str) -> list[float | None]:
    """``"90.30/90.38 94.95"`` -> [90.30, 90.38, 94.95]; ``-`` (not reported) -> None."""
    return [None if tok == "-" else float(tok) for tok in re.split(r"[\s/]+", field)]


def _qa_budget(label: str) -> str:
    return "none" if label == "100%" else f"qa_{label.rstrip('%')}"


def _nlg_budget(label: str) -> str:
    return "none" if label == "100%" else f"nlg_{label.rstrip('%')}"


def _table1() -> list[tuple]:
    rows = []
    for head, values in _lines(_TABLE1):
        method, budget, params = head.split()
        for (task, metric), value in zip(_T1_COLUMNS, _numbers(values), strict=True):
            rows.append(("table1", task, method, budget, params, metric, value))
    return rows


def _table2() -> list[tuple]:
    rows = []
    for task, (em, f1) in _TABLE2_FULL_FT.items():
        rows += [("table2", task, "full_ft", "none", "100%", "exact", em),
                 ("table2", task, "full_ft", "none", "100%", "f1", f1)]
    for method, v1, v2 in _lines(_TABLE2):
        for task, field in (("squad_v1", v1), ("squad_v2", v2)):
            values = _numbers(field)
            for i, budget in enumerate(_QA_BUDGETS):
                label = budget.removeprefix("qa_") + "%"
                rows += [("table2", task, method, budget, label, "exact", values[2 * i]),
                         ("table2", task, method, budget, label, "f1", values[2 * i + 1])]
    return rows


def _table3() -> list[tuple]:
    rows = []
    for head, values in _lines(_TABLE3):
        label, method = head.split()
        numbers = _numbers(values)
        for t, task in enumerate(("xsum", "cnndm")):
            for m, metric in enumerate(("rouge1", "rouge2", "rougeLsum")):
                rows.append(("table3", task, method, _nlg_budget(label), label, metric, numbers[3 * t + m]))
    return rows


def _per_budget_table(name: str, block: str, columns: tuple[tuple[str, str], ...],
                      budgets: tuple[str, ...]) -> list[tuple]:
    """Tables 4 and 5: per variant, one ``a/b/c`` group per task over the budget levels."""
    rows = []
    for method, values in _lines(block):
        numbers = iter(_numbers(values))
        for task, metric in columns:
            for budget in budgets:
                value = next(numbers)
                if value is not None:
                    label = budget.removeprefix("qa_") + "%"
                    rows.append((name, task, method, budget, label, metric, value))
    return rows


def _table14() -> list[tuple]:
    rows = []
    for method, values in _lines(_TABLE14):
        for (task, metric), value in zip(_T14_COLUMNS, _numbers(values), strict=True):
            rows.append(("table14", task, method, "glue_0.3m", "0.3M", metric, value))
    return rows


def _figure2() -> list[tuple]:
    return [("figure2", "squad_v2", "adalora", budget, label, "f1", value) for budget, label, value in _FIGURE2]


def paper_results() -> pd.DataFrame:
    """All accuracy numbers of Tables 1-5 and 14 (plus Figure 2's two anchors), one row per value."""
    rows = (
        _table1() + _table2() + _table3()
        + _per_budget_table("table4", _TABLE4, (("glue_sst2", "accuracy"), ("glue_rte", "accuracy"),
                                                ("glue_cola", "matthews_correlation")),
                            ("qa_0.08", "qa_0.16", "qa_0.65"))
        + _per_budget_table("table5", _TABLE5, (("glue_sst2", "accuracy"), ("glue_mnli", "accuracy_avg")),
                            _QA_BUDGETS)
        + _table14() + _figure2()
    )
    return pd.DataFrame(rows, columns=COLUMNS)


def paper_cost() -> pd.DataFrame:
    """Table 15 (one V100, training only): peak memory and minutes per epoch, LoRA vs AdaLoRA."""
    rows = []
    for line in _TABLE15.strip().splitlines():
        task, label, lora_mem, ada_mem, lora_min, ada_min = line.split()
        for method, mem, minutes in (("lora", lora_mem, lora_min), ("adalora", ada_mem, ada_min)):
            rows.append(("table15", task, method, _qa_budget(label), label, float(mem), float(minutes)))
    return pd.DataFrame(rows, columns=["table", "task", "method", "budget", "params_label",
                                       "peak_memory_gb", "time_per_epoch_min"])


def paper_params(params_label: str, task: str) -> float:
    """The paper's #Params label as a parameter count, to place its points on our x axis.

    ``"0.33M"`` is absolute; ``"0.08%"`` is relative to the backbone of the task (BART-large
    for XSum / CNN-DM, DeBERTaV3-base otherwise) with the denominators in ``_PERCENT_BASE``.
    """
    if params_label.endswith("M"):
        return float(params_label[:-1]) * 1e6
    if params_label.endswith("%"):
        backbone = "bart" if task in ("xsum", "cnndm") else "deberta"
        return float(params_label[:-1]) / 100 * _PERCENT_BASE[backbone]
    raise ValueError(f"unrecognised #Params label {params_label!r}")


def paper_percent(params_label: str, task: str) -> float:
    """The paper's #Params label as a percentage of the backbone (``"0.33M"`` -> 0.16 for DeBERTaV3-base)."""
    if params_label.endswith("%"):
        return float(params_label[:-1])
    backbone = "bart" if task in ("xsum", "cnndm") else "deberta"
    return 100 * paper_params(params_label, task) / _PERCENT_BASE[backbone]
