"""Every sweep file composes, every job resolves, and job directories never collide."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from adalora.runner import PROJECT_ROOT, effective_budget, register_resolvers, resolve

CONF = PROJECT_ROOT / "conf"
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
register_resolvers()


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_jobs_resolve_to_unique_run_dirs(sweep):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose(config_name="config", overrides=[f"sweep={sweep}"], return_hydra_config=True)
        params = {k: str(v).split(",") for k, v in base.hydra.sweeper.params.items()}
        keys = list(params)
        dirs: dict[str, set[str]] = {}
        jobs = list(itertools.product(*params.values()))
        sample = {jobs[0], jobs[-1]}
        for values in jobs:
            overrides = [f"sweep={sweep}"] + [f"{k}={v}" for k, v in zip(keys, values)]
            job = dict(zip(keys, values))
            if values in sample:  # the real compose path, a few jobs per sweep
                cfg = compose(config_name="config", overrides=overrides)
                resolve(cfg)
                run_dir = cfg.run_dir
            else:
                budget = effective_budget(job["method"], job.get("budget", base.budget.name))
                run_dir = str(Path(base.output_root) / base.sweep_name / job["task"] / job["method"] / budget
                              / f"seed={job.get('seed', base.seed)}")
            dirs.setdefault(run_dir, set()).add(job.get("budget", ""))
        for run_dir, budgets in dirs.items():
            if len(budgets) > 1:  # only fixed-size methods may share a directory across budgets
                assert Path(run_dir).parts[-2] == "none", run_dir
    expected = {"glue": 560, "squad": 34, "nlg": 18, "smoke": 12, "smoke_nlg": 4}
    if sweep in expected:
        assert len(dirs) == expected[sweep]


@pytest.mark.parametrize("sweep", [s for s in SWEEPS if s not in ("smoke", "smoke_nlg")])
def test_every_paper_sweep_job_resolves(sweep):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose(config_name="config", overrides=[f"sweep={sweep}"], return_hydra_config=True)
        params = {k: str(v).split(",") for k, v in base.hydra.sweeper.params.items() if k != "seed"}
        for values in itertools.product(*params.values()):
            cfg = compose(config_name="config", overrides=[f"sweep={sweep}"] + [f"{k}={v}" for k, v in zip(params, values)])
            resolve(cfg)
