"""The per-run result record: one ``result.json`` per run directory.

A run directory is the unit of work of every sweep: the sweep skips a run whose record says
``success``, resumes one that has a checkpoint, and re-runs one that failed. The record is
therefore written atomically (temp file + ``os.replace``) so that a run killed mid-write
never leaves a truncated JSON that would look like a finished run.

The record is typed (:class:`RunRecord`, its status a :class:`Status`), written in one place
(:func:`write_result`) and read by attribute (:func:`read_record`); :func:`migrate` brings a record of
an older schema to the current one. Schema 3 adds ``train.world_size`` and ``train.devices`` (the
processes and accelerators a run trained on: GPU-hours count them) and ``env.external_code`` (the
version or source hash of a method's own module); a migrated older record has ``world_size`` null
(unknown, counted as 1).

Schema (``SCHEMA_VERSION`` 3; version 1 lacks ``identity``, ``overrides``, ``env.git_dirty``,
``env.adalora_version`` and ``train.segment_wall_time_s``, and its ``wall_time_s`` covers only
the last segment of a resumed run)::

    {
      "schema_version": 2,
      "status": "running" | "success" | "failed" | "diverged" | "oom" | "interrupted" (SIGINT/SIGTERM;
                a rerun resumes from the checkpoint written on the signal),
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
                "final_train_loss": float | null, "world_size": int, "devices": int},
      "weights": {"format": str, "base_sha256": str,
                  "final": {"file": "weights/final.safetensors", "step": int, "bytes": int,
                            "tensors": int, "parameters": int},
                  "best": {... same ...} | "final" | {"missing": str} | null}
                 | null (not kept: trainer.save_model; see experiments/weights.py),
      "config": {... resolved Hydra config ...},
      "overrides": [command-line overrides of this job],
      "identity": {"hash": str, "group": str (hash without the seed),
                   "keys": {... the result-defining config, experiments.identity ...}},
      "env": {"versions": {pkg: version}, "git_sha": str | null, "git_dirty": bool | null,
              "adalora_version": str | null, "device": str,
              "external_code": {"module": str, "distribution": str, "version": str}
                             | {"module": str, "source_sha256": str} | null}
    }

``train.wall_time_s`` is the whole run's: a resumed run adds the training time its checkpoint
had accumulated to this segment's (``train.segment_wall_time_s``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adalora.atomic import TEMP_SUFFIX, replacing

SCHEMA_VERSION = 3
KNOWN_SCHEMA_VERSIONS = (1, 2, 3)  # what experiments.spec and analysis.collect can read
RESULT_FILE = "result.json"


class Status(str, enum.Enum):
    """How a run ended (``running`` while it trains; a killed run keeps it)."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    DIVERGED = "diverged"
    OOM = "oom"
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM; a rerun resumes from the checkpoint written on the signal


STATUSES = tuple(s.value for s in Status)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One ``result.json``, typed: the analysis, the lr search and re-evaluation read it by attribute."""

    status: Status
    run: Mapping[str, Any]
    config: Mapping[str, Any]
    reason: str | None = None
    metrics: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None
    ranks: Mapping[str, Any] | None = None
    train: Mapping[str, Any] | None = None
    weights: Mapping[str, Any] | None = None
    overrides: list[str] | None = None
    identity: Mapping[str, Any] | None = None
    env: Mapping[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # keys another tool added: kept, not lost

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RunRecord:
        """The typed record of a dict of any known schema (:func:`migrate`); a bad one is a ValueError naming the key."""
        record = migrate(record)
        try:
            status = Status(record.get("status"))
        except ValueError:
            raise ValueError(f"result.status must be one of {list(STATUSES)}, got {record.get('status')!r}") from None
        for key in ("run", "config"):
            if not isinstance(record.get(key, {}), Mapping):
                raise ValueError(f"result.{key} must be a mapping, got {type(record.get(key)).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"status", "extra"}
        known = {k: v for k, v in record.items() if k in names}
        extra = {k: v for k, v in record.items() if k not in names and k != "status"}
        return cls(status=status, extra=extra, **{"run": {}, "config": {}, **known})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, keys in the schema's order, ``schema_version`` first."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["status"] = self.status.value
        return {"schema_version": out.pop("schema_version"), **out, **self.extra}

    @property
    def world_size(self) -> int:
        """Processes the run trained on (1 for a record older than schema 3: unknown, counted as one)."""
        return int((self.train or {}).get("world_size") or 1)


def migrate(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record of any known schema in the current one: the one place old schemas are read.

    Schema 1 and 2 lack ``train.world_size``/``train.devices`` (null: unknown) and ``env.external_code``;
    their identity stays what they store, or what ``experiments.spec.record_identity`` computes from
    their config. A newer, unknown schema is refused: this code cannot know what it means.
    """
    version = record.get("schema_version", 1)
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise ValueError(f"result.schema_version {version!r} is not one this code reads ({list(KNOWN_SCHEMA_VERSIONS)})")
    out = dict(record)
    if version < 3 and isinstance(out.get("train"), Mapping):
        out["train"] = {"world_size": None, "devices": None, **out["train"]}
    out["schema_version"] = version  # kept: an old record's hashes were taken over what it stores
    return out
def remove_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temp files a killed writer left in ``run_dir`` (and its ``weights/``); returns them.

    Called by the run holding the directory's lock, so no live writer owns them.
    """
    run_dir = Path(run_dir)
    stale = [p for d in (run_dir, run_dir / "weights") for p in d.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    stale += [p for p in (run_dir / f"checkpoint{TEMP_SUFFIX}",) if p.is_file()]  # older versions' checkpoint temp
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    with replacing(path) as tmp, open(tmp, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=False, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())


def move_aside(path: str | os.PathLike, why: str = "corrupt") -> Path:
    """Rename ``path`` to ``<name>.<why>-<time>``: out of the run's way, kept for inspection."""
    path = Path(path)
    stem = f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = path.with_name(stem), 1
    while target.exists():
        target, n = path.with_name(f"{stem}-{n}"), n + 1
    os.replace(path, target)
    return target


def _json_default(obj: Any) -> Any:
    """Serialise numpy / torch scalars that end up in metric dicts."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_result(run_dir: str | os.PathLike, record: RunRecord | Mapping[str, Any]) -> Path:
    """Write ``result.json`` atomically, the one writer of records: a dict is typed first (status checked)."""
    if not isinstance(record, RunRecord):
        record = RunRecord.from_dict({"schema_version": SCHEMA_VERSION, **record})
    path = Path(run_dir) / RESULT_FILE
    atomic_write_json(path, record.to_dict())
    return path


def read_record(run_dir: str | os.PathLike) -> RunRecord | None:
    """The typed record of a run directory (any known schema, migrated), or None when it has none."""
    record = read_result(run_dir)
    return None if record is None else RunRecord.from_dict(record)


def read_result(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Return the record of a run directory, or None when the run never wrote one."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        return None
    with open(path) as fh:
        return json.load(fh)


def read_result_or_move_aside(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``read_result``, but a record that cannot be parsed is moved aside (and said so): a run then
    starts cleanly instead of failing on it at every rerun, ``force=true`` included."""
    path = Path(run_dir) / RESULT_FILE
    try:
        record = read_result(run_dir)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        moved = move_aside(path)
        print(f"[corrupt] {path} cannot be read ({type(err).__name__}: {err}); moved to {moved.name}, "
              "running it again", flush=True)
        return None
    if record is not None and not isinstance(record, dict):
        moved = move_aside(path)
        print(f"[corrupt] {path} is not a JSON object; moved to {moved.name}, running it again", flush=True)
        return None
    return record


def is_success(run_dir: str | os.PathLike) -> bool:
    record = read_result(run_dir)
    return record is not None and record.get("status") == "success"
