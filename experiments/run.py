"""Hydra entry point: one run, or a sweep with ``-m`` / ``sweep=<name>``.

    python -m experiments.run task=glue_rte method=adalora budget=glue_0.3m seed=0
    python -m experiments.run sweep=smoke
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.runner import register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    record = run(cfg)
    metrics = record.get("metrics") or {}
    best = metrics.get("best") or {}
    return best.get(metrics.get("main_metric"))


if __name__ == "__main__":
    main()
