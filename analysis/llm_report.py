"""The decoder-LLM part of ``make figures``: its tables, the allocation proof and a rank heatmap per run.

The results-tables notebook (``analysis/notebooks/results_tables.py``) calls :func:`write_llm_outputs`; everything it writes is named
``llm_*`` (``analysis.tables.llm_tables.LLM_PREFIX``), which is how the report page (``analysis.index_page``) gathers its "Decoder
LLMs" section. Where the results hold no decoder run, nothing is written, not even a note: the page
then has no such section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.figures import rank_heatmap
from analysis.labels import budget_label, method_label, record_labels, task_label
from analysis.report import Report
from analysis.stats import REFERENCE
from analysis.tables import (
    LLM_LAYOUTS,
    allocation_summary,
    allocation_table,
    decoder_runs,
    llm_stem,
    llm_tables,
    llm_title,
    protocols_present,
    scale_table,
)
from analysis.tables.llm_tables import LLM_FAMILY, LLM_PREFIX

ALLOCATION_STEM = f"{LLM_PREFIX}allocation"
SCALES_STEM = f"{LLM_PREFIX}peft_compare_scales"
ALLOCATION_TITLE = "Proof that allocation ran: every rank-adaptive decoder run"


def write_llm_outputs(report: Report, df: pd.DataFrame, records: Iterable[Mapping[str, Any]],
                      reference: str = REFERENCE) -> list[str]:
    """Write every decoder table (per layout, protocol, model; best and final eval; the paired comparisons
    beside the best), PEFT's comparison's scales, the allocation proof and one final-rank heatmap per
    successful rank-adaptive decoder run; returns the stems written (none without decoder runs)."""
    stems: list[str] = []
    runs = decoder_runs(df)
    for protocol in protocols_present(runs):
        tag = "" if protocol == "paper" else f"_{protocol}"
        for layout in LLM_LAYOUTS:
            for which in ("best", "final"):
                for model, table in llm_tables(df, layout, which, protocol, reference).items():
                    stem = llm_stem(layout, model, tag)
                    report.results(table, stem, f"{llm_title(layout, model)} ({which} eval, protocol {protocol})")
                    stems.append(f"{stem}_{which}")
    scales = scale_table(df)
    if len(scales):
        report.table(scales, SCALES_STEM, "PEFT's MetaMathQA comparison: each row's update scale "
                     "(params.update_scale), the rank its tensors are held at and its trainable counts")
        stems.append(SCALES_STEM)
    decoder = [r for r in records if (r.get("run") or {}).get("family") == LLM_FAMILY]
    proof = allocation_table(decoder)
    if len(proof):
        proof.attrs["note"] = allocation_summary(proof)
        report.table(proof, ALLOCATION_STEM, ALLOCATION_TITLE)
        stems.append(ALLOCATION_STEM)
    stems += _heatmaps(report, decoder)
    return stems


def heatmap_stem(record: Mapping[str, Any]) -> str:
    run = record["run"]
    return (f"{LLM_PREFIX}rank_heatmap_{run['task']}_{run['method']}_{run['budget']}_{run['model']}"
            f"_seed{run['seed']}")


def _heatmaps(report: Report, records: list[Mapping[str, Any]]) -> list[str]:
    """One final-rank heatmap (weight type x layer: the seven projections of a Llama) per successful run
    that proves its allocation, with its matrix as CSV."""
    stems = []
    labels = record_labels(records)
    for record in records:
        ranks = record.get("ranks") or {}
        if record.get("status") != "success" or not ranks.get("allocation") or not ranks.get("pattern"):
            continue
        run = record["run"]
        title = (f"{method_label(run['method'], labels)} final ranks: {task_label(run['task'])} @ "
                 f"{budget_label(run['budget'])}, {run['model']}, seed {run['seed']}")
        fig, matrix = rank_heatmap(ranks["pattern"], ranks["weight_types"], title)
        stem = heatmap_stem(record)
        report.figure(fig, stem)
        matrix.to_csv(Path(report.out) / f"{stem}.csv", encoding="utf-8")
        stems.append(stem)
    return stems
