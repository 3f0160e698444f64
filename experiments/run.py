"""Hydra entry point: one run, or a sweep with ``-m`` / ``sweep=<name>``.

    python -m experiments.run task=glue_rte method=adalora budget=glue_0.3m seed=0
    python -m experiments.run sweep=smoke

A single run that does not end in ``success`` exits with status 1 (its status and reason are
printed, the traceback is in ``<run_dir>/run.log``); in a sweep every job runs and the sweep
exits 1 at the end (``experiments.sweeps.SweepSummary``).
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.runner import register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    record = run(cfg)
    if record.get("status") != "success" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)
    metrics = record.get("metrics") or {}
    best = metrics.get("best") or {}
    return best.get(metrics.get("main_metric"))


if __name__ == "__main__":
    main()
