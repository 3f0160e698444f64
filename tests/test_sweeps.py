"""The sweep files (conf/sweep/*.yaml, whatever is there): every job composes and resolves, a run
directory means exactly one run, and the paper sweeps expand to the run counts their headers state.

No training. A sweep is expanded the way Hydra's basic sweeper does it (experiments.sweeps.expand_sweep):
parsed by Hydra's override parser (so ``a,b``, ``glob(...)`` and ``range(...)`` all work), then the
cartesian product. A real ``compose`` costs ~0.2 s here, too slow for the ~650 jobs of all sweeps,
so each sweep is composed once and a job's overrides are applied to that config with OmegaConf: a
config-group choice (``task=glue_rte``) swaps in the group file, any other key is set to Hydra's
parse of its value. ``test_shortcut_equals_real_compose`` composes sample jobs of every sweep for
real and checks that both paths give the same config and run directory.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.runner import PROJECT_ROOT, effective_budget, register_resolvers, resolve
from experiments.sweeps import expand_sweep
from tests.conftest import compose

CONF = PROJECT_ROOT / "conf"
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
GROUPS = {p.name for p in CONF.iterdir() if p.is_dir()}
ROOT_NODES = OmegaConf.load(CONF / "config.yaml")  # the entry config's own values, under every group file
register_resolvers()

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


@dataclass(frozen=True)
class Job:
    overrides: tuple[str, ...]  # as Hydra's sweeper hands them to the job (after sweep=<name>)
    task: str
    method: str
    budget: str  # cfg.budget.name, before effective_budget
    seed: int
    run_dir: str
    identity: str  # the resolved run config, minus the sweep's name and the budget's label
    lr: float | None = None  # an explicit trainer.lr (the lr_search_* sweeps), part of what a run is
    effective: str = ""  # effective_budget of the job's method config (a yaml-only row has no registered name)
    model: str | None = None  # the model of a sweep that lists several (llm_math): part of what a run is

    @property
    def key(self) -> tuple:
        key = (self.task, self.method, self.effective, self.seed)
        key = key if self.lr is None else (*key, self.lr)
        return key if self.model is None else (*key, self.model)

    @property
    def fixed_size(self) -> bool:
        return self.effective == "none"


# ------------------------------------------------------------------------------------- expansion
def _compose(sweep: str, overrides: list[str] = ()) -> DictConfig:
    return compose([f"sweep={sweep}", *overrides], return_hydra_config=True)


@functools.cache
def _group_option(group: str, option: str) -> DictConfig | None:
    """A group file, when swapping it in is exactly what Hydra does (no defaults list, no package header)."""
    path = CONF / group / f"{option}.yaml"
    if "@package" in path.read_text():
        return None
    node = OmegaConf.load(path)
    return None if "defaults" in node else node


def _split(overrides: list[str], sweep_raw: DictConfig) -> tuple[tuple[str, ...], list[tuple[str, object]]] | None:
    """(config-group choices, other ``key=value`` pairs with Hydra's parse of the value), or None
    where only a real compose is faithful (``+``/``~`` overrides, package renames, group files with
    a defaults list, a sweep file that edits a swept group's content)."""
    groups, values = [], []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.type != OverrideType.CHANGE or override.package is not None:
            return None
        if key in GROUPS:
            if key in sweep_raw or _group_option(key, override.get_value_element_as_str()) is None:
                return None
            groups.append(f"{key}={override.get_value_element_as_str()}")
        else:
            values.append((key, override.value()))
    return tuple(groups), values


def _with_groups(base: DictConfig, groups: tuple[str, ...]) -> DictConfig:
    """``base`` with the group files swapped in: what Hydra's defaults list does for a plain group file, merged
    over conf/config.yaml's own node of that group (``model.use_kernels``), which comes first (``_self_``)."""
    cfg = copy.deepcopy(base)
    with open_dict(cfg):
        for choice in groups:
            key, option = choice.split("=", 1)
            cfg[key] = OmegaConf.merge(ROOT_NODES.get(key) or {}, _group_option(key, option))
    return cfg


def _slim(cfg: DictConfig) -> DictConfig:
    """The config with only the part of the hydra node that places the job (copying it all is slow)."""
    slim = OmegaConf.create({k: v for k, v in cfg.items_ex(resolve=False) if k != "hydra"})
    slim.hydra = {"sweep": OmegaConf.to_container(cfg.hydra.sweep, resolve=False)}
    return slim


def _job(cfg: DictConfig, overrides: list[str]) -> Job:
    """The job as the harness resolves it (``resolve`` raises ConfigError on a job that could not run); its
    identity is the config ``resolve`` produced (resolved once, not converted a second time here)."""
    config = resolve(cfg).config
    run_dir = str(config["run_dir"])
    hydra_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    assert hydra_dir == Path(run_dir), f"Hydra's job dir {hydra_dir} != run_dir {run_dir} ({overrides})"
    identity = {k: v for k, v in config.items() if k not in ("sweep_name", "run_dir", "budget")}
    identity["effective_budget"] = effective_budget(config["method"], config["budget"]["name"])
    return Job(tuple(overrides), config["task"]["name"], config["method"]["name"], config["budget"]["name"],
               int(config["seed"]), run_dir, json.dumps(identity, sort_keys=True, default=str), config["trainer"]["lr"],
               identity["effective_budget"], config["model"]["name"] if any(o.startswith("model=") for o in overrides) else None)


@functools.cache
def sweep_jobs(sweep: str) -> tuple[Job, ...]:
    """Every job of a sweep: one compose, then each job's overrides applied with OmegaConf (the group
    files swapped in once per combination of group choices, the other values set in place, since
    every job of that combination sets the same keys); a real compose where that is not faithful."""
    sweep_raw = OmegaConf.load(CONF / "sweep" / f"{sweep}.yaml")
    jobs = []
    base = _compose(sweep)
    assert base.hydra.mode == RunMode.MULTIRUN, f"{sweep}: set hydra.mode: MULTIRUN"
    base_slim, by_groups = _slim(base), {}
    for overrides in expand_sweep(base.hydra.sweeper.params, []):
        split = _split(overrides, sweep_raw)
        if split is None:
            jobs.append(_job(_compose(sweep, overrides), overrides))
            continue
        groups, values = split
        if groups not in by_groups:
            by_groups[groups] = _with_groups(base_slim, groups)
        cfg = by_groups[groups]
        for key, value in values:
            OmegaConf.update(cfg, key, value, merge=False, force_add=False)
        jobs.append(_job(cfg, overrides))
    return tuple(jobs)


def _sample(jobs: tuple[Job, ...]) -> list[Job]:
    return list({j.overrides: j for j in (jobs[0], jobs[len(jobs) // 2], jobs[-1])}.values())


# ------------------------------------------------------------------------------------- tests
@pytest.mark.slow  # expands whole sweeps through Hydra: minutes in all
@pytest.mark.parametrize("sweep", SWEEPS)
def test_shortcut_equals_real_compose(sweep):
    jobs = sweep_jobs(sweep)
    for job in _sample(jobs):
        assert _job(_compose(sweep, list(job.overrides)), list(job.overrides)) == job, job.overrides


@pytest.mark.slow  # expands whole sweeps through Hydra: minutes in all
@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_job_resolves_to_its_own_run_dir(sweep):
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
def test_glue_and_glue_baselines_are_table_1():
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
def test_a_run_dir_means_one_configuration_across_all_sweeps():
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
