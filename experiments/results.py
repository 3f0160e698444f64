"""The per-run result record: one ``result.json`` per run directory.

A run directory is the unit of work of every sweep: the sweep skips a run whose record says
``success``, resumes one that has a checkpoint, and re-runs one that failed. The record is
therefore written atomically (temp file + ``os.replace``) so that a run killed mid-write
never leaves a truncated JSON that would look like a finished run.

Schema (``SCHEMA_VERSION`` 1)::

    {
      "schema_version": 1,
      "status": "running" | "success" | "failed" | "diverged" | "oom",
      "reason": null | "<why it failed>",
      "run": {"sweep": str, "task": str, "family": str, "method": str, "budget": str,
              "seed": int, "model": str},
      "metrics": {"evals": [{"step": int, "epoch": float, <metric>: float, ...}],
                  "best": {<metric>: float, "step": int}, "final": {<metric>: float},
                  "main_metric": str},
      "params": {"trainable_paper": int, "trainable_total": int, "total": int,
                 "adapted_matrices": int},
      "ranks": {"pattern": {<matrix name>: int}, "history": [{"step": int, "budget": int,
                "ranks": {<matrix name>: int}}], "weight_types": {<matrix name>: [layer, type]}}
               | null,
      "train": {"steps": int, "wall_time_s": float, "peak_memory_mb": float,
                "final_train_loss": float | null},
      "weights": {"format": str, "base_sha256": str,
                  "final": {"file": "weights/final.safetensors", "step": int, "bytes": int,
                            "tensors": int, "parameters": int},
                  "best": {... same ...} | "final" | {"missing": str} | null}
                 | null (not kept: trainer.save_model; see experiments/weights.py),
      "config": {... resolved Hydra config ...},
      "env": {"versions": {pkg: version}, "git_sha": str | null, "device": str}
    }
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
STATUSES = ("running", "success", "failed", "diverged", "oom")


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, default=_json_default)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    """Serialise numpy / torch scalars that end up in metric dicts."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_result(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Validate the minimal schema and write ``result.json`` atomically."""
    status = record.get("status")
    if status not in STATUSES:
        raise ValueError(f"result.status must be one of {STATUSES}, got {status!r}")
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(run_dir) / RESULT_FILE
    atomic_write_json(path, record)
    return path


def read_result(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Return the record of a run directory, or None when the run never wrote one."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        return None
    with open(path) as fh:
        return json.load(fh)


def is_success(run_dir: str | os.PathLike) -> bool:
    record = read_result(run_dir)
    return record is not None and record.get("status") == "success"
