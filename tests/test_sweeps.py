"""The sweep files (conf/sweep/*.yaml, whatever is there): every job composes and resolves, a run
directory means exactly one run, and the paper sweeps expand to the run counts their headers state.

No training. Each sweep is expanded once per test run by the ``sweep_jobs`` fixture (tests/sweep_jobs.py:
one compose per sweep, each job's overrides applied with OmegaConf, every job resolved by the harness's
``resolve()``). ``test_shortcut_equals_real_compose`` composes sample jobs of every sweep for real and
checks that both paths give the same config and run directory.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from experiments.runner import effective_budget
from tests import parse_caches
from tests.sweep_jobs import CONF, Job, expand_jobs, job_of, shared_sweep_jobs, sweep_compose

SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))

GLUE_TASKS = ["glue_mnli", "glue_sst2", "glue_cola", "glue_qqp", "glue_qnli", "glue_rte", "glue_mrpc", "glue_stsb"]
GLUE_BUDGETED = ["lora", "adalora", "adapter_houlsby", "adapter_pfeiffer"]
GLUE_BUDGETS = ["glue_0.3m", "glue_0.6m", "glue_1.2m"]
SEEDS = 5
# Distinct run directories per sweep; sweeps not listed (e.g. a later demo.yaml) get the generic checks only.
EXPECTED_RUNS = {
    "glue": len(GLUE_TASKS) * len(GLUE_BUDGETED) * len(GLUE_BUDGETS) * SEEDS,  # 480
    "glue_baselines": len(GLUE_TASKS) * 2 * SEEDS,  # 80 (full_ft, bitfit)
    "glue_heldout": len(GLUE_TASKS) * len(GLUE_BUDGETED) * len(GLUE_BUDGETS) * SEEDS,  # 480: Table 1, protocol=heldout
    "glue_heldout_baselines": len(GLUE_TASKS) * 2 * SEEDS,  # 80
    "squad": 2 * 4 * 4 + 2,  # 34: 4 budgeted methods x 4 levels per task + one full_ft per task
    "nlg": 2 * 2 * 4 + 2,  # 18: LoRA/AdaLoRA x 4 levels per task + one full_ft per task
    "budget_curves": 2 * 2 * 4,  # 16: {MNLI, SQuAD v2} x {LoRA, AdaLoRA} x 4 qa levels
    "smoke": 2 * 6,
    "smoke_nlg": 4,
    # the baselines' learning-rate search: one run per grid value (trainer.lr), seed 0
    "lr_search_glue": len(GLUE_TASKS) * 7 * len(GLUE_BUDGETS) * 9,  # 1512: LoRA, Houlsby, Pfeiffer + 4 PEFT rows
    "lr_search_squad": 2 * 7 * 4 * 4,  # 224
    "lr_search_nlg": 2 * 5 * 4 * 4,  # 160: LoRA + 4 PEFT rows
    # PEFT's methods beside Tables 1-3 (docs/peft_methods.md): DoRA, PiSSA, rsLoRA, LoRA+, PEFT's AdaLoRA
    "glue_peft": len(GLUE_TASKS) * 5 * len(GLUE_BUDGETS) * SEEDS,  # 600
    "squad_peft": 2 * 5 * 4,  # 40
    "nlg_peft": 2 * 5 * 4,  # 40
    # the LoRA paper's GLUE setting on RoBERTa-base: LoRA, AdaLoRA and the 5 PEFT rows at glue_0.3m
    "glue_roberta": len(GLUE_TASKS) * 7 * 1 * SEEDS,  # 280
}


def _sample(jobs: tuple[Job, ...]) -> list[Job]:
    return list({j.overrides: j for j in (jobs[0], jobs[len(jobs) // 2], jobs[-1])}.values())


# ------------------------------------------------------------------------------------- tests
@pytest.mark.slow  # expands whole sweeps through Hydra: minutes in all
@pytest.mark.parametrize("sweep", SWEEPS)
def test_shortcut_equals_real_compose(sweep, sweep_jobs):
    """The expansion's jobs (the shortcut, with the session's parse caches) equal Hydra's and OmegaConf's own."""
    jobs = sweep_jobs(sweep)
    with parse_caches.uncached():
        for job in _sample(jobs):
            assert job_of(sweep_compose(sweep, list(job.overrides)), list(job.overrides)) == job, job.overrides


def test_jobs_read_back_from_the_shared_file_equal_the_expanded_ones(tmp_path):
    """The workers that did not expand a sweep read its jobs from the shared JSON file: the same jobs, with their
    lr grid values (floats) and override tuples, as expanding it again."""
    built = shared_sweep_jobs.__wrapped__(tmp_path, "lr_search_nlg")  # expands, writes the file
    read = shared_sweep_jobs.__wrapped__(tmp_path, "lr_search_nlg")  # reads it
    assert (tmp_path / "lr_search_nlg" / "jobs.json").is_file() and len(read) == 160
    assert read == built == expand_jobs("lr_search_nlg")
    assert all(isinstance(j.overrides, tuple) and isinstance(j.lr, float) for j in read)


@pytest.mark.slow  # expands whole sweeps through Hydra: minutes in all
@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_job_resolves_to_its_own_run_dir(sweep, sweep_jobs):
    """Run dirs <-> (task, method, effective budget, seed); only full_ft/bitfit share one, across budgets."""
    jobs = sweep_jobs(sweep)
    assert jobs, f"{sweep} expands to no job"
    assert len({j.overrides for j in jobs}) == len(jobs), f"{sweep} lists a value twice"
    by_dir: dict[str, list[Job]] = {}
    for job in jobs:
        by_dir.setdefault(job.run_dir, []).append(job)
        assert Path(job.run_dir).parts[-4:] == (job.task, job.method, job.key[2], f"seed={job.seed}")
    for run_dir, sharing in by_dir.items():
        assert len({j.key for j in sharing}) == 1, f"{run_dir} holds different runs: {[j.overrides for j in sharing]}"
        if len(sharing) > 1:
            assert all(j.fixed_size for j in sharing), f"{run_dir} shared by a budgeted method"
            assert len({j.budget for j in sharing}) == len(sharing), f"{run_dir}: the same job twice"
    assert len({j.key for j in jobs}) == len(by_dir)
    if sweep in EXPECTED_RUNS:
        assert len(by_dir) == EXPECTED_RUNS[sweep]


@pytest.mark.parametrize("sweep", sorted(set(EXPECTED_RUNS) & set(SWEEPS) - {"smoke", "smoke_nlg"}))
def test_paper_sweep_headers_state_command_count_and_cost(sweep):
    text = (CONF / "sweep" / f"{sweep}.yaml").read_text()
    header = text[: text.index("defaults:")]
    assert header.startswith("# @package _global_\n")
    assert f"python -m experiments.run sweep={sweep}" in header
    assert re.search(rf"\b{EXPECTED_RUNS[sweep]} distinct run", header), "state the number of distinct runs"
    assert "GPU-h" in header, "state a GPU-hour estimate"


@pytest.mark.slow  # expands whole sweeps through Hydra: minutes in all
def test_glue_and_glue_baselines_are_table_1(sweep_jobs):
    """The two GLUE files together: 8 tasks x 6 methods x 3 budgets x 5 seeds -> 560 distinct runs, one tree."""
    jobs = sweep_jobs("glue") + sweep_jobs("glue_baselines")
    methods = [*GLUE_BUDGETED, "full_ft", "bitfit"]
    want = {(t, m, effective_budget(m, b), s)
            for t, m, b, s in itertools.product(GLUE_TASKS, methods, GLUE_BUDGETS, range(SEEDS))}
    assert {j.key for j in jobs} == want and len(want) == 560
    assert len({j.run_dir for j in jobs}) == 560
    assert {Path(j.run_dir).parts[-5] for j in jobs} == {"glue"}
    assert all(j.budget == "none" for j in sweep_jobs("glue_baselines"))  # one job per run, no duplicates


@pytest.mark.slow  # expands whole sweeps through Hydra: minutes in all
def test_a_run_dir_means_one_configuration_across_all_sweeps(sweep_jobs):
    """Identical runs in two sweep files share a directory (budget_curves' SQuAD v2 runs are sweep=squad's)."""
    dirs_of: dict[str, set[str]] = {}
    identity_of: dict[str, set[str]] = {}
    for sweep in SWEEPS:
        for job in sweep_jobs(sweep):
            dirs_of.setdefault(job.identity, set()).add(job.run_dir)
            identity_of.setdefault(job.run_dir, set()).add(job.identity)
    assert [d for d in dirs_of.values() if len(d) > 1] == []
    assert [d for d, ids in identity_of.items() if len(ids) > 1] == []
    if {"budget_curves", "squad"} <= set(SWEEPS):
        curves = {j.run_dir for j in sweep_jobs("budget_curves") if j.task == "squad_v2"}
        assert len(curves) == 8 and curves <= {j.run_dir for j in sweep_jobs("squad")}
