"""Experiment trackers behind one small interface: ``logger=none`` (default) or ``logger=wandb``.

``result.json`` is always the record of a run; a tracker is a live view of it. The wandb
run is grouped by sweep and typed by method, so the W&B UI compares methods of one sweep;
AdaLoRA's rank per matrix and total budget are logged at every rank record, and the final
rank pattern as a table. ``WANDB_MODE`` (e.g. ``offline`` on a cluster without internet)
is left to wandb itself, and the run is finished on every path, failures included.

A resumed run continues its W&B run: the id is kept in ``<run_dir>/.wandb_run_id`` and reused
(``resume="allow"``) when the run resumes from its checkpoint; a run that starts from step 0
gets a new id, since W&B drops history logged at steps it has already seen.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WANDB_ID_FILE = ".wandb_run_id"


class Tracker:
    """No tracking: every hook is a no-op."""

    def log(self, payload: Mapping[str, Any]) -> None:
        """Receives the trainer's ``on_log`` payloads (eval records, rank records)."""

    def finish(self, record: Mapping[str, Any]) -> None:
        """Called once with the final ``result.json`` record, whatever its status."""


class WandbTracker(Tracker):
    def __init__(self, logger_cfg: Mapping[str, Any], info: Mapping[str, Any], config: Mapping[str, Any],
                 run_dir: Path, resume: bool = False):
        try:
            import wandb
        except ImportError as err:  # pragma: no cover - wandb is a core dependency
            raise RuntimeError("logger=wandb needs the wandb package: pip install wandb") from err
        self._wandb = wandb
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            id=wandb_run_id(run_dir, resume, lambda: uuid.uuid4().hex[:12]), resume="allow",
            project=logger_cfg.get("project") or "adalora",
            entity=logger_cfg.get("entity"),
            group=str(info["sweep"]),
            job_type=str(info["method"]),
            name=f"{info['task']}/{info['method']}/{info['budget']}/seed={info['seed']}",
            tags=list(logger_cfg.get("tags") or []),
            config=dict(config),
            dir=str(run_dir),
        )

    def log(self, payload: Mapping[str, Any]) -> None:
        if "eval" in payload:
            record = dict(payload["eval"])
            step = record.pop("step")
            self.run.log({f"eval/{k}": v for k, v in record.items()}, step=step)
        elif "train" in payload:
            record = dict(payload["train"])
            step = record.pop("step")
            self.run.log({f"train/{k}": v for k, v in record.items()}, step=step)
        elif "ranks" in payload:
            row = {f"rank/{name}": rank for name, rank in payload["ranks"].items()}
            row["budget/total"] = payload["budget"]
            self.run.log(row, step=payload["step"])

    def finish(self, record: Mapping[str, Any]) -> None:
        ranks = record.get("ranks") or {}
        if ranks.get("pattern"):
            types = ranks.get("weight_types") or {}
            rows = [[name, *(types.get(name) or [None, None]), rank] for name, rank in sorted(ranks["pattern"].items())]
            self.run.log({"final_rank_pattern": self._wandb.Table(columns=["matrix", "layer", "weight_type", "rank"],
                                                                  data=rows)})
        metrics = record.get("metrics") or {}
        for which in ("best", "final"):
            for key, value in (metrics.get(which) or {}).items():
                self.run.summary[f"{which}/{key}"] = value
        for key, value in (record.get("params") or {}).items():
            self.run.summary[f"params/{key}"] = value
        self.run.summary["status"] = record.get("status")
        self.run.finish(exit_code=0 if record.get("status") == "success" else 1)


def wandb_run_id(run_dir: Path, resume: bool, new_id) -> str:
    """The W&B run id of ``run_dir``: the stored one when resuming, else a new one (stored)."""
    path = Path(run_dir) / WANDB_ID_FILE
    if resume and path.exists() and path.read_text().strip():
        return path.read_text().strip()
    run_id = new_id()
    path.write_text(run_id + "\n")
    return run_id


def make_tracker(logger_cfg: Mapping[str, Any] | None, info: Mapping[str, Any], config: Mapping[str, Any],
                 run_dir: Path, resume: bool = False) -> Tracker:
    """The tracker named by ``cfg.logger.name``; ``resume`` continues the run directory's W&B run."""
    name = (logger_cfg or {}).get("name", "none")
    if name == "none":
        return Tracker()
    if name == "wandb":
        return WandbTracker(logger_cfg, info, config, run_dir, resume=resume)
    raise ValueError(f"logger.name must be 'none' or 'wandb', got {name!r} (logger=none or logger=wandb)")
