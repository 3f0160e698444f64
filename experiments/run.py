"""Hydra entry point: one run, or a sweep with ``-m`` / ``sweep=<name>``.

    python -m experiments.run task=glue_rte method=adalora budget=glue_0.3m seed=0
    python -m experiments.run sweep=smoke

A single run that does not end in ``success`` exits with status 1 (its status and reason are
printed, the traceback is in ``<run_dir>/run.log``); in a sweep every job runs and the sweep
exits 1 at the end (``experiments.sweeps.SweepSummary``). A configuration that cannot run is
named in one line and leaves no directory behind (Hydra creates the run directory before this
code runs, so an untouched one is removed again). SIGINT/SIGTERM end the run with one line and
exit 130/143 after recording it as ``interrupted`` (``experiments.interrupts``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.devices import assign_gpu
from experiments.interrupts import Interrupted
from experiments.runner import ConfigError, register_resolvers, run

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        assign_gpu(_gpu_slot_dir())  # launcher=joblib_gpu: this worker's GPU (no-op otherwise)
        record = run(cfg)
    except Interrupted as err:
        if not err.reported:
            print(f"[interrupted] {err}", flush=True)
        sys.exit(err.exit_code)
    except ConfigError as err:
        _remove_untouched(Path(HydraConfig.get().runtime.output_dir))
        print(f"[config error] {err}", flush=True)
        sys.exit(1)
    if record.get("status") != "success" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)
    metrics = record.get("metrics") or {}
    best = metrics.get("best") or {}
    return best.get(metrics.get("main_metric"))


def _remove_untouched(job_dir: Path) -> None:
    """Remove the job directory Hydra made, and the empty parents it made with it, if nothing but its
    empty log is in it (a conflict with an existing run's files leaves the directory as it was).

    Stops at the first directory that is not empty, and never removes the working directory or one
    above it.
    """
    log_file = job_dir / f"{HydraConfig.get().job.name}.log"
    for handler in logging.getLogger().handlers[:]:  # Hydra's file handler holds the log open
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == log_file.resolve():
            handler.close()
            logging.getLogger().removeHandler(handler)
    if not job_dir.is_dir() or any(p != log_file for p in job_dir.iterdir()):
        return
    if log_file.exists() and log_file.stat().st_size:
        return
    log_file.unlink(missing_ok=True)
    cwd = Path.cwd().resolve()
    directory = job_dir.resolve()
    while directory != directory.parent and not cwd.is_relative_to(directory):
        try:
            directory.rmdir()
        except OSError:  # not empty: someone else's directory from here up
            return
        directory = directory.parent


def _gpu_slot_dir() -> Path:
    hydra_cfg = HydraConfig.get()
    base = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else hydra_cfg.run.dir
    return Path(base) / ".gpu-slots"


_JOBLIB = ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
_SUBMITIT = ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
# launcher= choice -> (the Hydra plugin module it needs, the pip package that provides it)
_LAUNCHER_PLUGINS = {"joblib": _JOBLIB, "joblib_gpu": _JOBLIB, "slurm": _SUBMITIT, "submitit_local": _SUBMITIT}


def missing_launcher(argv: list[str]) -> str | None:
    """One line naming the pip package of a ``launcher=`` whose Hydra plugin is not installed (Hydra says only
    "Could not find 'hydra/launcher/joblib'"), else None."""
    import importlib.util

    for arg in argv:
        name = arg.partition("=")[2] if arg.startswith("launcher=") else None
        if name in _LAUNCHER_PLUGINS and importlib.util.find_spec(_LAUNCHER_PLUGINS[name][0]) is None:
            return f"launcher={name} needs its Hydra plugin: pip install {_LAUNCHER_PLUGINS[name][1]} (or launcher=local)"
    return None


if __name__ == "__main__":
    if (problem := missing_launcher(sys.argv[1:])) is not None:
        print(f"[config error] {problem}", flush=True)
        sys.exit(2)
    main()
