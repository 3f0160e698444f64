"""The decoder-LLM analysis (issue 35): the math / commonsense / PEFT-comparison tables with their paired
statistics, the allocation proof, Table 15's memory at AdaLoRA's init_r, and the report page's decoder section.

The fast tests use the committed real tiny runs (``tests/fixtures/runs``) turned into decoder records the way
``tests/test_stats.py`` derives records: a copy gets the causal-LM family, a decoder task, model and budget
level, and metric values set here, so every cell below is known. The slow tests train real tiny Llama runs
(``tiny_gsm8k``, budget ``llm_r4``) and check what their records say about memory, ranks and allocation.
"""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.collect import collect, load_records
from analysis.index_page import write_index
from analysis.labels import budget_label, budget_rank
from analysis.llm_report import write_llm_outputs
from analysis.report import Report
from analysis.tables import (
    allocation_summary,
    allocation_table,
    cost_table,
    format_table,
    llm_tables,
    paired_table,
    scale_table,
    write_table,
)
from analysis.tables.cost import MEMORY_NOTE
from analysis.tables.llm_tables import set_score

RUNS = Path(__file__).parent / "fixtures" / "runs"
SOURCE = RUNS / "fixtures" / "tiny_glue_rte"
MODEL = "llama3_2_1b"
SETS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")  # conf/task/commonsense

# GSM8K exact match (flexible, strict) per seed, as lm-evaluation-harness reports them (percent).
LORA = {0: (41.0, 38.0), 1: (42.5, 39.0), 2: (40.0, 36.5)}
ADALORA = {0: (43.0, 40.0), 1: (44.0, 40.5), 2: (43.5, 39.0)}
DORA = {0: (40.0, 37.0), 1: (41.5, 37.0)}


def _source(method: str, seed: int) -> dict:
    return json.loads((SOURCE / method / "glue_0.3m" / f"seed={seed % 2}" / "result.json").read_text())


def _decoder(root: Path, method: str, seed: int, metrics: dict[str, float], *, task: str = "gsm8k",
             budget: str = "llm_r8", model: str = MODEL, sweep: str = "llm_math", main: str | None = None,
             as_method: str | None = None, label: str | None = None, edit=None) -> dict:
    """A committed tiny run of ``method`` as a decoder run: family causal_lm, ``task`` on ``model`` at
    ``budget``, seed ``seed``, its evaluations replaced by ``metrics`` (best = final = the one eval)."""
    record = copy.deepcopy(_source(method, seed))
    name = as_method or method
    record["run"].update(family="causal_lm", task=task, budget=budget, model=model, seed=seed, sweep=sweep,
                         method=name)
    record["config"].update(seed=seed, sweep_name=sweep)
    record["config"]["method"]["name"] = name
    record["config"]["task"].update(name=task, family="causal_lm")
    record["config"]["model"]["name"] = model
    if label is not None:
        record["run"]["label"] = label
    evaluation = {"step": 8, "epoch": 1, **metrics}
    record["metrics"] = {"evals": [evaluation], "best": dict(evaluation), "final": dict(evaluation),
                         "main_metric": main or next(iter(metrics))}
    if edit is not None:
        edit(record)
    path = root / sweep / task / name / budget / f"seed={seed}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")
    return record


def _math(flex: float, strict: float) -> dict[str, float]:
    return {"exact_match_flexible": flex, "exact_match_strict": strict}


@pytest.fixture(scope="module")
def math_root(tmp_path_factory) -> Path:
    """LoRA and AdaLoRA (3 seeds) and DoRA (2 seeds) on GSM8K at r=8 on one model, LoRA at r=4 on another."""
    root = tmp_path_factory.mktemp("llm_math")
    for method, values, name in (("lora", LORA, None), ("adalora", ADALORA, None), ("lora", DORA, "peft_dora")):
        for seed, (flex, strict) in values.items():
            _decoder(root, method, seed, _math(flex, strict), as_method=name, label="DoRA" if name else None)
    for seed in (0, 1):
        _decoder(root, "lora", seed, _math(30.0 + seed, 20.0), model="qwen2_5_1_5b", budget="llm_r4")
    return root


def _text(table: pd.DataFrame) -> pd.DataFrame:
    return format_table(table).set_index(["Method", "Budget"])


def test_llm_math_table_shows_flexible_beside_strict_mean_std_over_seeds_per_model(math_root):
    tables = llm_tables(collect(math_root), "math")
    assert list(tables) == ["llama3_2_1b", "qwen2_5_1_5b"]  # one table per model, never pooled
    text = _text(tables[MODEL])
    column = "GSM8K (EM flex/EM strict)"
    assert list(text.index) == [("LoRA", "r=8"), ("AdaLoRA", "r=8"), ("DoRA", "r=8")]
    lora_flex, lora_strict = zip(*LORA.values(), strict=True)
    assert statistics.stdev(lora_flex) == pytest.approx(1.2583057)
    assert text.loc[("AdaLoRA", "r=8"), column] == "43.50 ± 0.50 / 39.83 ± 0.76 (n=3)"
    # LoRA − AdaLoRA per seed: flexible (-2, -1.5, -3.5), whose 95% t-interval holds 0; strict (-2, -1.5, -2.5),
    # whose interval lies below 0 (↓)
    flex = scipy_stats.ttest_rel(lora_flex, [v[0] for v in ADALORA.values()]).confidence_interval()
    strict = scipy_stats.ttest_rel(lora_strict, [v[1] for v in ADALORA.values()]).confidence_interval()
    assert flex.low < 0 < flex.high and strict.high < 0
    assert text.loc[("LoRA", "r=8"), column] == "41.17 ± 1.26 / 37.83 ± 1.26↓ (n=3)"
    assert text.loc[("DoRA", "r=8"), column] == "40.75 ± 1.06 / 37.00 ± 0.00↓ (n=2)"  # strict: -3, -3.5
    counts = {_source("lora", seed)["params"]["trainable_paper"] for seed in LORA}
    assert counts == {1792} and text.loc[("LoRA", "r=8"), "#Params"] == "0.00179M"  # the count its records hold
    other = _text(tables["qwen2_5_1_5b"])
    assert other.loc[("LoRA", "r=4"), column] == "30.50 ± 0.71 / 20.00 ± 0.00 (n=2)"


def test_llm_paired_p_values_equal_scipy_and_holm_over_the_table(math_root):
    table = llm_tables(collect(math_root), "math")[MODEL]
    paired = paired_table(table).set_index(["Method", "Task"])
    assert table.attrs["reference"] == "adalora"
    p = {}
    for metric, index in (("EM flex", 0), ("EM strict", 1)):
        for name, values in (("LoRA", LORA), ("DoRA", DORA)):
            seeds = sorted(values)
            ours = [values[s][index] for s in seeds]
            reference = [ADALORA[s][index] for s in seeds]
            p[(name, metric)] = scipy_stats.ttest_rel(ours, reference).pvalue
            row = paired.loc[(name, f"GSM8K {metric}")]
            assert row["p"] == f"{p[(name, metric)]:.3g}"
            assert row["Δ mean"] == f"{np.mean(np.subtract(ours, reference)):+.2f}"
            assert row["seeds"] == ",".join(map(str, seeds))
    order = sorted(p, key=p.get)  # Holm over the table's 4 comparisons
    adjusted, running = {}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p[key]))
        adjusted[key] = running
    for key, value in adjusted.items():
        assert paired.loc[(key[0], f"GSM8K {key[1]}"), "p (Holm)"] == f"{value:.3g}"


def _sets(values: dict[str, float], parsed_offset: float = 0.0) -> dict[str, float]:
    """What a commonsense run records (experiments/tasks/causal_lm.py ``eval_set_metrics``): per set
    ``<set>_acc_parsed`` (the given values) and ``<set>_acc`` (offset); ``avg``, the mean of the sets' main
    metric (acc_parsed), and ``avg_<metric>`` for each metric every set reports."""
    metrics = {f"{name}_acc_parsed": value for name, value in values.items()}
    metrics |= {f"{name}_acc": value + parsed_offset for name, value in values.items()}
    average = float(np.mean(list(values.values())))
    return {**metrics, "avg": average, "avg_acc_parsed": average, "avg_acc": average + parsed_offset}


def test_commonsense_table_reads_the_sets_from_the_records_in_the_papers_order(tmp_path):
    values = {0: dict(zip(SETS, (70.0, 80.0, 75.0, 85.0, 78.0, 82.0, 66.0, 74.0), strict=True)),
              1: dict(zip(SETS, (72.0, 81.0, 76.0, 86.0, 80.0, 84.0, 68.0, 78.0), strict=True))}
    for seed, sets in values.items():
        shuffled = dict([*reversed(sets.items()), ("newset", 50.0 + seed)])  # record order is not the table's
        _decoder(tmp_path, "adalora", seed, _sets(shuffled, parsed_offset=-10.0), task="commonsense",
                 sweep="llm_commonsense", main="avg")
    table = llm_tables(collect(tmp_path), "commonsense")[MODEL]
    text = _text(table)
    labels = ["BoolQ", "PIQA", "SIQA", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c", "OBQA", "newset", "Avg."]
    assert [c for c in text.columns if c.startswith("Commonsense")] == [f"Commonsense {lb}" for lb in labels]
    row = text.loc[("AdaLoRA", "r=8")]
    assert row["Commonsense BoolQ"] == "71.00 ± 1.41 (n=2)"  # acc_parsed, the score avg averages
    assert row["Commonsense OBQA"] == "76.00 ± 2.83 (n=2)"  # avg_acc_parsed / avg_acc are no sets
    averages = [np.mean([*values[s].values(), 50.0 + s]) for s in (0, 1)]
    assert row["Commonsense Avg."] == f"{np.mean(averages):.2f} ± {np.std(averages, ddof=1):.2f} (n=2)"


def test_set_score_is_the_score_the_average_averages():
    parsed = _sets({"boolq": 60.0, "piqa": 80.0}, parsed_offset=5.0)
    assert set_score(parsed) == "acc_parsed"
    by_acc = {**parsed, "avg": 75.0}  # (65 + 85) / 2: the log-likelihood accuracy is averaged
    assert set_score(by_acc) == "acc"
    assert set_score({"exact_match_flexible": 1.0}) is None


def test_a_run_whose_method_names_its_own_targets_is_a_row_of_its_own_not_a_conflict(tmp_path):
    def qv(record: dict) -> None:
        record["config"]["method"]["targets"] = ["W_q", "W_v"]
    for seed in (0, 1):
        _decoder(tmp_path, "lora", seed, _math(40.0 + seed, 30.0))
        _decoder(tmp_path, "lora", seed, _math(35.0 + seed, 25.0), edit=qv, sweep="llm_math_qv")
    text = _text(llm_tables(collect(tmp_path), "math")[MODEL])
    assert list(text.index) == [("LoRA", "r=8"), ("LoRA", "r=8 on W_q,W_v")]
    assert text.loc[("LoRA", "r=8 on W_q,W_v"), "GSM8K (EM flex/EM strict)"] == "35.50 ± 0.71 / 25.00 ± 0.00 (n=2)"


def test_budget_levels_order_by_rank_and_read_as_their_files_label():
    levels = ["llm_r32", "llm_r4", "llm_r16@W_q,W_v", "llm_r16", "llm_r8"]
    assert sorted(levels, key=budget_rank) == ["llm_r4", "llm_r8", "llm_r16", "llm_r16@W_q,W_v", "llm_r32"]
    shown = [budget_label(b) for b in ("llm_r4", "llm_qv_r8", "llm_r32@W_q,W_v", "glue_0.3m")]
    assert shown == ["r=4", "r=8 (W_q W_v)", "r=32 on W_q,W_v", "0.3M"]  # llm_qv_r8.yaml's label: r=8 (W_q W_v)


def _metamath(flex: float, strict: float) -> dict[str, float]:
    """MetaMathQA -> GSM8K records its one eval set's scores (conf/task/metamathqa_gsm8k.yaml ``eval_sets.gsm8k``)."""
    return {"gsm8k_exact_match_flexible": flex, "gsm8k_exact_match_strict": strict, "avg": flex,
            "avg_exact_match_flexible": flex, "avg_exact_match_strict": strict}


def test_peft_compare_runs_get_their_own_table_with_each_rows_update_scale(tmp_path):
    def scale(alpha: float, r: int, rule: str):
        return lambda record: record["params"].update(update_scale={"value": alpha / r, "rule": rule, "alpha": alpha,
                                                                    "r": r})
    for seed in (0, 1):
        _decoder(tmp_path, "lora", seed, _metamath(47.8 - seed, 45.0), sweep="peft_compare", task="metamathqa_gsm8k",
                 budget="llm_qv_r32", edit=scale(64, 32, "alpha/r"))
        _decoder(tmp_path, "adalora", seed, _metamath(37.3 + seed, 35.0), sweep="peft_compare", as_method="peft_adalora",
                 label="AdaLoRA (PEFT)", task="metamathqa_gsm8k", budget="llm_qv_r32", edit=scale(8, 64, "alpha/init_r"))
        _decoder(tmp_path, "adalora", seed, _metamath(48.0 + seed, 46.0), sweep="peft_compare", task="metamathqa_gsm8k",
                 budget="llm_qv_r32", edit=scale(96, 48, "alpha/init_r"))
        _decoder(tmp_path, "lora", seed, _metamath(50.0, 48.0), task="metamathqa_gsm8k", budget="llm_r32")  # llm_math's
    df = collect(tmp_path)
    compare = _text(llm_tables(df, "peft_compare")[MODEL])
    column = "MetaMathQA→GSM8K (EM flex/EM strict)"
    qv = "r=32 (W_q W_v)"  # conf/sweep/peft_compare.yaml: budget llm_qv_r32, PEFT's q_proj / v_proj
    assert list(compare.index) == [("LoRA", qv), ("AdaLoRA", qv), ("AdaLoRA (PEFT)", qv)]
    assert compare.loc[("AdaLoRA (PEFT)", qv), column] == "37.80 ± 0.71 / 35.00 ± 0.00 (n=2)"
    assert compare.loc[("LoRA", qv), column] == "47.30 ± 0.71 / 45.00 ± 0.00 (n=2)"
    math = _text(llm_tables(df, "math")[MODEL])  # the sweep's runs are kept out of the math table
    assert list(math.index) == [("LoRA", "r=32")] and math.iloc[0][column] == "50.00 ± 0.00 / 48.00 ± 0.00 (n=2)"
    scales = scale_table(df).reset_index().set_index("method")
    assert list(scales.index) == ["lora", "adalora", "peft_adalora"]
    assert scales.loc["peft_adalora", "update_rule"] == "alpha/init_r = 8/64"
    assert scales.loc["peft_adalora", "update_scale"] == 0.125 and scales.loc["lora", "update_scale"] == 2.0
    assert scales.loc["adalora", "rank_held"] == 48 and scales.loc["adalora", "n"] == 2


def test_math_table_shows_pefts_answer_parse_where_a_run_records_it(tmp_path):
    """metamathqa_gsm8k's scorer (gsm8k_peft) records PEFT's own accuracy beside the harness's two: a third score."""
    for seed in (0, 1):
        _decoder(tmp_path, "lora", seed, {**_metamath(50.0, 48.0), "gsm8k_peft_accuracy": 49.0 + seed},
                 task="metamathqa_gsm8k", budget="llm_r32")
    math = _text(llm_tables(collect(tmp_path), "math")[MODEL])
    assert math.iloc[0]["MetaMathQA→GSM8K (EM flex/EM strict/PEFT acc)"] == \
        "50.00 ± 0.00 / 48.00 ± 0.00 / 49.50 ± 0.71 (n=2)"


def _proof(runs: int, changes: list[int], must: bool = True):
    def edit(record: dict) -> None:
        pattern = record["ranks"]["pattern"]
        record["ranks"]["allocation"] = {"allocator_runs": runs, "rank_changes": changes, "final_pattern": pattern,
                                         "ranks_must_change": must}
    return edit


def test_allocation_table_counts_allocator_runs_rank_changes_and_runs_that_never_allocated(tmp_path):
    _decoder(tmp_path, "adalora", 0, _math(40.0, 30.0), edit=_proof(8, [3, 5]))
    _decoder(tmp_path, "adalora", 1, _math(41.0, 31.0), edit=_proof(8, [5]))

    def never(record: dict) -> None:
        record.update(status="failed", reason="AllocationNotRun: method 'peft_adalora': its budget schedule must "
                      "have changed the ranks ...: PEFT's update_and_allocate(global_step) was never called")
        record["ranks"] = None
    _decoder(tmp_path, "adalora", 0, _math(0.0, 0.0), as_method="peft_adalora", edit=never)
    _decoder(tmp_path, "lora", 0, _math(40.0, 30.0))  # no allocator: not in the table
    table = allocation_table(r for _, r, _ in load_records(tmp_path) if r is not None)
    assert list(table["method"]) == ["adalora", "adalora", "peft_adalora"]
    assert list(table["allocator runs"].astype(object).fillna(-1)) == [8, 8, -1]
    assert list(table["changed at steps"]) == ["3, 5", "5", ""]
    start = sum(_source("adalora", 0)["ranks"]["history"][0]["ranks"].values())
    assert table.loc[0, "total rank start"] == start
    assert table.loc[0, "total rank end"] == sum(_source("adalora", 0)["ranks"]["pattern"].values())
    assert "update_and_allocate" in table.loc[2, "reason"]
    assert allocation_summary(table).startswith("3 rank-adaptive decoder run(s): the allocator ran 16 time(s) in "
                                                "all; 2 run(s) changed ranks; 1 failed")


def test_table15_says_its_memory_is_at_the_rank_held(tmp_path):
    def held(r: int):
        return lambda record: record["params"].update(update_scale={"value": 16 / r, "rule": "alpha/r", "alpha": 16,
                                                                    "r": r})
    _decoder(tmp_path, "lora", 0, _math(40.0, 30.0), edit=held(8))
    table = cost_table(collect(tmp_path), include_paper=False)
    assert table["rank held"].tolist() == [8]
    assert table.attrs["note"] == MEMORY_NOTE
    written = write_table(table, tmp_path / "out", "table15_cost", "Table 15")
    assert MEMORY_NOTE in written[1].read_text(encoding="utf-8")


def test_report_page_has_a_decoder_section_only_when_decoder_runs_are_present(math_root, tmp_path):
    for seed in (0, 1):
        _decoder(math_root, "adalora", seed, _math(43.0, 40.0), budget="llm_r16", edit=_proof(8, [3]))
    records = [r for _, r, _ in load_records(math_root) if r is not None]
    out = tmp_path / "with"
    stems = write_llm_outputs(Report(out, "llm_tables"), collect(math_root), records)
    assert {"llm_math_llama3_2_1b_best", "llm_allocation", "llm_rank_heatmap_gsm8k_adalora_llm_r16_llama3_2_1b_seed1"
            } <= set(stems)
    page = write_index(math_root, out).read_text(encoding="utf-8")
    assert '<section id="decoder-llms">' in page and 'href="#decoder-llms"' in page
    assert ("<strong>Allocation:</strong> 2 rank-adaptive decoder run(s): the allocator ran 16 time(s) in all; "
            "2 run(s) changed ranks; 0 failed") in page
    assert 'id="llm_math_llama3_2_1b_paired"' in page and 'src="llm_rank_heatmap_gsm8k_adalora_llm_r16_' in page
    section = page[page.index('<section id="decoder-llms">'):page.index('<h2 id="figures">')]
    assert section.count("<img ") == 2  # a heatmap per AdaLoRA run that proves its allocation

    without = tmp_path / "without"  # the paper's task families only: no decoder file, no section
    paper_runs = RUNS / "fixtures"
    assert write_llm_outputs(Report(without, "llm_tables"), collect(paper_runs),
                             [r for _, r, _ in load_records(paper_runs) if r is not None]) == []
    assert not list(without.glob("llm_*"))
    page = write_index(paper_runs, without).read_text(encoding="utf-8")
    assert "decoder-llms" not in page and "Decoder LLMs" not in page


def test_a_decoder_sweep_run_that_never_wrote_its_record_is_listed_under_its_sweep_and_model(tmp_path):
    """The decoder sweeps' run_dir puts the model above the task (conf/sweep/llm_math.yaml): a run with no
    result.json yet is listed with its keys from that path, not with the model taken for the sweep."""
    from analysis.collect import run_status

    (tmp_path / "llm_math" / "tiny_llama" / "gsm8k" / "lora" / "llm_r8" / "seed=2").mkdir(parents=True)
    (tmp_path / "glue" / "glue_rte" / "lora" / "glue_0.3m" / "seed=0").mkdir(parents=True)  # the paper's layout
    rows = run_status(tmp_path).set_index("sweep")
    assert rows.loc["llm_math", ["model", "task", "method", "budget", "seed", "status"]].tolist() == [
        "tiny_llama", "gsm8k", "lora", "llm_r8", 2, "missing"]
    assert rows.loc["glue", ["task", "method", "budget", "seed"]].tolist() == ["glue_rte", "lora", "glue_0.3m", 0]
    assert pd.isna(rows.loc["glue", "model"])


# ------------------------------------------------------------------------- real tiny decoder runs
PROJECTIONS = ["W_q", "W_k", "W_v", "W_o", "W_gate", "W_up", "W_down"]
STEPS = 6


@pytest.mark.slow
def test_table15_memory_of_a_real_tiny_adalora_run_is_that_of_its_init_r_tensors(tmp_path):
    """LoRA and AdaLoRA at r=4 on a tiny Llama: AdaLoRA holds init_r = 1.5 r = 6 triplets per matrix all run
    (its final weights keep every one, pruned ones masked), so Table 15 shows rank held 6 and the count of
    those tensors as 'trainable start', beside the smaller count it is budgeted at ('trainable end')."""
    from safetensors import safe_open

    from experiments.runner import run
    from tests.conftest import compose

    for method in ("lora", "adalora"):
        record = run(compose(["task=tiny_gsm8k", "model=tiny_llama", f"method={method}", "budget=llm_r4",
                              f"output_root={tmp_path / 'runs'}", "trainer.progress=false",
                              f"trainer.max_steps={STEPS}", "sweep_name=llm_math"]))
        assert record["status"] == "success", record["reason"]
    held = {}
    for path in (tmp_path / "runs").rglob("final.safetensors"):
        with safe_open(str(path), "pt") as weights:
            tensors = {name: weights.get_tensor(name) for name in weights.keys()}
        method = path.relative_to(tmp_path / "runs").parts[2]
        held[method] = sum(t.numel() for t in tensors.values())
        if method == "adalora":
            assert {t.shape[0] for n, t in tensors.items() if n.endswith("lora_E")} == {6}  # init_r, never cut
    table = cost_table(collect(tmp_path / "runs"), include_paper=False).reset_index().set_index("method")
    assert table.loc["lora", "rank held"] == 4 and table.loc["adalora", "rank held"] == 6
    assert table.loc["adalora", "trainable start"] == held["adalora"]  # the init_r tensors' count: 6 x ... + Λ
    assert table.loc["adalora", "trainable end"] < held["adalora"]
    assert table.loc["lora", "trainable start"] == table.loc["lora", "trainable end"] == held["lora"]
    assert table.loc["adalora", "memory MB"] > 0 and table.loc["adalora", "GPU-h/run"] > 0

    out = tmp_path / "figures"
    records = [r for _, r, _ in load_records(tmp_path / "runs") if r is not None]
    stems = write_llm_outputs(Report(out, "llm_tables"), collect(tmp_path / "runs"), records)
    heatmap = next(s for s in stems if s.startswith("llm_rank_heatmap_tiny_gsm8k_adalora_llm_r4_tiny_llama"))
    matrix = pd.read_csv(out / f"{heatmap}.csv", index_col=0)
    assert list(matrix.index) == PROJECTIONS and list(matrix.columns) == ["0", "1"]  # 7 projections x 2 layers
    adalora = next(r for r in records if r["run"]["method"] == "adalora")
    assert matrix.to_numpy().sum() == sum(adalora["ranks"]["pattern"].values())
    proof = allocation_table(records).set_index("method").loc["adalora"]
    assert proof["allocator runs"] == STEPS and proof["rank changes"] == len(adalora["ranks"]["allocation"]["rank_changes"])
    assert proof["total rank start"] == 6 * len(PROJECTIONS) * 2
