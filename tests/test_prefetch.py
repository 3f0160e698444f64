"""``experiments.prefetch``: which models and datasets a sweep needs, loading them, offline errors."""

from __future__ import annotations

import pytest

from experiments.prefetch import items_for_sweeps, main

GLUE = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"]


def _listing(sweeps, overrides=()):
    return sorted((i.kind, i.label) for i in items_for_sweeps(sweeps, list(overrides)))


@pytest.mark.slow
def test_glue_sweeps_need_one_model_and_the_eight_glue_datasets():
    assert _listing(["glue", "glue_baselines"]) == sorted(
        [("model", "microsoft/deberta-v3-base")] + [("dataset", f"nyu-mll/glue ({t})") for t in GLUE])


def test_qa_and_nlg_sweeps_list_every_hub_id_once_per_head():
    assert _listing(["squad", "nlg"]) == sorted([
        ("model", "microsoft/deberta-v3-base"), ("model", "facebook/bart-large"),
        ("dataset", "rajpurkar/squad"), ("dataset", "rajpurkar/squad_v2"),
        ("dataset", "EdinburghNLP/xsum"), ("dataset", "abisee/cnn_dailymail (3.0.0)")])


def test_overrides_narrow_the_listing_like_the_sweep():
    assert _listing(["glue"], ["task=glue_rte"]) == [("dataset", "nyu-mll/glue (rte)"),
                                                    ("model", "microsoft/deberta-v3-base")]


def test_prefetch_loads_local_items_and_succeeds(capsys):
    assert main(["smoke", "smoke_nlg"]) == 0
    out = capsys.readouterr().out
    assert "[ok]      dataset  tiny_xsum: local files" in out and "all 6 items are in the cache" in out


def test_missing_hub_items_offline_fail_with_the_prefetch_hint(capsys):
    assert main(["budget_curves", "-o", "task=glue_rte"]) == 1  # conftest sets HF_HUB_OFFLINE=1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("[missing]")]
    assert len(lines) == 2 and all("make prefetch" in line for line in lines)
    assert "model    microsoft/deberta-v3-base" in lines[0] and "dataset  nyu-mll/glue (rte)" in lines[1]
    assert "2 of 2 items could not be fetched" in captured.err
