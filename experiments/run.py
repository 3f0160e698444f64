"""Hydra entry point: one run, or a sweep with ``-m`` / ``sweep=<name>``.

    python -m experiments.run task=glue_rte method=adalora budget=glue_0.3m seed=0
    python -m experiments.run sweep=smoke
"""

from __future__ import annotations

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
    metrics = record.get("metrics") or {}
    best = metrics.get("best") or {}
    return best.get(metrics.get("main_metric"))


def _gpu_slot_dir() -> Path:
    hydra_cfg = HydraConfig.get()
    base = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else hydra_cfg.run.dir
    return Path(base) / ".gpu-slots"


if __name__ == "__main__":
    main()
