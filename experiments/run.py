"""Hydra entry point: one run, or a sweep with ``-m`` / ``sweep=<name>``.

    python -m experiments.run task=glue_rte method=adalora budget=glue_0.3m seed=0
    python -m experiments.run sweep=smoke

A single run that does not end in ``success`` exits with status 1 (its status and reason are
printed, the traceback is in ``<run_dir>/run.log``); in a sweep every job runs and the sweep
exits 1 at the end (``experiments.sweeps.SweepSummary``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.devices import assign_gpu
from experiments.runner import register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    assign_gpu(_gpu_slot_dir())  # launcher=joblib_gpu: this worker's GPU (no-op otherwise)
    record = run(cfg)
    if record.get("status") != "success" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)
    metrics = record.get("metrics") or {}
    best = metrics.get("best") or {}
    return best.get(metrics.get("main_metric"))


def _gpu_slot_dir() -> Path:
    hydra_cfg = HydraConfig.get()
    base = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else hydra_cfg.run.dir
    return Path(base) / ".gpu-slots"


if __name__ == "__main__":
    main()
