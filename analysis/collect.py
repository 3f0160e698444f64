"""Every run directory under a results root -> tidy pandas DataFrames.

A run directory is ``<root>/<sweep>/<task>/<method>/<budget>/seed=<s>/``, or a sub-directory of it
named by result-changing command-line overrides (``seed=0/trainer.lr=0.005``). Two views:

- ``collect``: one row per run x metric (best and final value side by side), for every run
  whose record holds metrics; tables and figures filter on ``status == "success"``.
- ``run_status``: one row per run directory, including those that failed, are still running,
  or never wrote ``result.json`` (a checkpoint shows an interrupted, resumable run). A sweep
  report must show what is missing, so nothing is dropped here. Its ``conflict`` column names
  the runs that tables do not pool (``analysis.grouping``).

Both carry ``config_hash`` (the run's identity, ``experiments.identity``) and ``config_group``
(the same without the seed): tables pool runs of one group only. Schema-1 records predate the
stored identity; theirs is computed from the config they store. A record of a schema this code
does not know is refused (status ``unreadable``, with the reason) and the others are processed.
Anything that is not a run record (another tool's ``result.json``, a ``seed=abc/`` directory, a
record whose ``run.seed`` is not an integer) is skipped, named with its path on stderr, and
the rest is processed; the seed column is always an integer column. A run record with a field of
the wrong type (:func:`record_problem`: a metric that is a string, a task that is a number, a
success without metrics), or whose identity would need code imported (a schema-1 record naming a
``method.module``: ``adalora.trust``), is left out of the tables and listed as ``unreadable`` in
``run_status`` with the reason, printed once per process as one line naming its path.

A sweep folder that is a symbolic link (to another disk, a colleague's folder) is read like any
other; a directory reached twice (a link to a folder already read, a link loop) is read once.

Finding the runs is one walk of the tree, and ``make figures`` reads the records once:
:func:`collected_once` writes both frames to a snapshot that :func:`collect` and
:func:`run_status` return for the same root while it is active (``analysis.run_notebooks``
wraps the notebooks and the report page in it).

CLI: ``python -m analysis.collect <root> [--out DIR]`` writes ``results`` and ``run_status``
as parquet + CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from adalora import trust
from analysis.grouping import DEFAULT_PROTOCOL, conflict_notes, record_identity
from experiments.identity import identity_hash
from experiments.results import KNOWN_SCHEMA_VERSIONS, RESULT_FILE, STATUSES, read_result

SEED_PREFIX = "seed="
CHECKPOINT_PREFIX = "checkpoint"
RUN_KEYS = ("sweep", "task", "family", "method", "budget", "seed", "model")

# What a run's record says about the method and its cost, beside the run keys (``_record_facts``):
# its display label, the evaluation protocol, the budget's target and relative gap, the trainable
# count at the start and the end (``trainable_params``), the median optimiser-step time (evaluation
# excluded), the saved weights' size, and the devices it ran on (1 where the record does not say); the
# rank its adapter tensors are allocated at for the whole run (``rank_held``: AdaLoRA's init_r, which its
# memory follows, not the target r it prunes to), its update scale and rule (``params.update_scale``), and
# the targets where the run's method names its own (``targets``; None = the budget level's).
RECORD_FACTS = ["label", "protocol", "budget_target", "budget_gap", "trainable_start", "trainable_params",
                "step_time_median_s", "adapter_bytes", "devices", "steps", "wall_time_s", "peak_memory_mb",
                "rank_held", "update_scale", "update_rule", "targets"]
STATUS_COLUMNS = [
    *RUN_KEYS, "status", "reason", "main_metric", "main_value_best", *RECORD_FACTS, "has_checkpoint", "run_dir",
    "schema_version", "config_hash", "config_group", "conflict",
]
RESULT_COLUMNS = [
    *RUN_KEYS, "metric", "is_main", "value_best", "value_final", "best_step", *RECORD_FACTS,
    "status", "reason", "run_dir", "config_hash", "config_group",
]

# Counts and seeds stay integers even where a run lacks them (pandas would otherwise turn them to floats).
_COUNTS = {"seed": "Int64", "trainable_params": "Int64", "trainable_start": "Int64", "budget_target": "Int64",
           "steps": "Int64", "adapter_bytes": "Int64", "devices": "Int64", "rank_held": "Int64"}
_FLOATS = {"budget_gap": float, "step_time_median_s": float, "update_scale": float}
SNAPSHOT_ENV = "ADALORA_COLLECTED"  # folder of a snapshot written by collected_once
_SNAPSHOT_ROOT = "root.txt"

Loaded = tuple[Path, dict[str, Any] | None, str | None]


def find_run_dirs(root: str | Path) -> list[Path]:
    """Directories holding a ``result.json`` or named ``seed=<s>`` (a run that never wrote one).

    A ``seed=<s>`` directory whose runs live in override sub-directories is not a run itself.
    One walk of the tree (:func:`_walk`: symbolic links to directories followed, each directory
    read once); each directory with a record marks its ancestors once (linear).
    """
    root = Path(root)
    results: set[Path] = set()
    seeds: set[Path] = set()
    for here, files in _walk(root):
        if RESULT_FILE in files:
            results.add(here)
        if here.name.startswith(SEED_PREFIX):
            seeds.add(here)
    above: set[Path] = set()  # directories with a record strictly below them
    for run_dir in results:
        for parent in run_dir.parents:
            if parent in above or not parent.is_relative_to(root):
                break  # its ancestors are marked already, or it is outside the root
            above.add(parent)
    return sorted(results | (seeds - above))


def _walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """(directory, its file names) for every directory under ``root``, following symbolic links.

    A researcher who links a sweep folder into the results root (``outputs/colleague -> /shared/sweep``)
    expects its runs in the report, so links are followed; a directory reached a second time (a link
    to a folder already read, a link to an ancestor) is not read again, and the link is named once
    on stderr. Sub-directories are walked in name order, real ones before links, so a run keeps its
    real path where it has one, and the path it gets is stable.
    """
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        stat = here.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            dirs.clear()
            _report(here, f"the same directory as {here.resolve()}, read already through another path under "
                          "this root (a symbolic link); its runs are listed once")
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs.sort(key=lambda name: (os.path.islink(os.path.join(folder, name)), name))  # real paths before links
        yield here, files


def _not_a_record(record: Any) -> str | None:
    """Why a parsed ``result.json`` is no record of this suite (every record has a schema_version)."""
    if record is None:
        return None
    if not isinstance(record, dict):
        return f"{RESULT_FILE} holds a JSON {type(record).__name__}, not a run record"
    if "schema_version" not in record:
        return f"{RESULT_FILE} has no 'schema_version' of a run record (another tool's file?)"
    return None


def _not_a_run(run_dir: Path, record: Any) -> str | None:
    """Why ``run_dir`` (and its record) is not a run of this suite, or None when it is one."""
    if record is None:
        seed = _keys_from_path(run_dir)["seed"]
        return None if isinstance(seed, int) else f"directory {run_dir.name!r}: the seed is not an integer"
    if "status" not in record or not isinstance(record.get("run"), dict):
        return f"{RESULT_FILE} has no 'status' and 'run' of a run record (another tool's file?)"
    seed = record["run"].get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        return f"run.seed is {seed!r}, not an integer"
    return None


def load_records(root: str | Path, skipped: list[tuple[Path, str]] | None = None) -> Iterator[Loaded]:
    """(run dir, record or None, read error or None) for every run directory under root.

    What is not a run is left out, printed on stderr as ``[collect] skipped <path>: <why>`` and
    appended to ``skipped`` (path, why) when a list is given. A run whose record is of an unknown
    schema, has a field of the wrong type (:func:`record_problem`) or names code to compute its
    identity comes with its record None and the reason (shown as ``unreadable``), printed the same
    way, once per process.
    """
    for run_dir in find_run_dirs(root):
        try:
            record = read_result(run_dir)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            _report(run_dir / RESULT_FILE, f"not JSON ({err}); left out of the tables")
            yield run_dir, None, f"unreadable {RESULT_FILE}: {err}"
            continue
        why = _not_a_record(record) or _not_a_run(run_dir, record)
        if why is not None:
            _report(run_dir, why)
            if skipped is not None:
                skipped.append((run_dir, why))
            continue
        problem = None if record is None else _record_problem(run_dir, record)
        if problem is not None:
            _report(run_dir / RESULT_FILE, problem)
        yield run_dir, (None if problem else record), problem


def _record_problem(run_dir: Path, record: dict[str, Any]) -> str | None:
    """Why this run's record is left out of the tables (unknown schema, wrong types, names code), or None."""
    if record["schema_version"] not in KNOWN_SCHEMA_VERSIONS:
        return (f"schema_version {record['schema_version']!r} is not one this code reads "
                f"{list(KNOWN_SCHEMA_VERSIONS)}; left out (update the suite to read it)")
    problem = record_problem(record)
    if problem is not None:
        return f"{problem}; left out of the tables (fix or remove the file)"
    return _identity_problem(run_dir, record)


def _report(path: Path, why: str) -> None:
    """Name a left-out path on stderr (once: :func:`print_once`)."""
    print_once(f"[collect] skipped {path}: {why}")


def print_once(line: str) -> None:
    """Print ``line`` on stderr unless this process printed it already: ``make figures`` reads the
    records (and the notebooks' notes) more than once, and a reader wants each problem said once."""
    if line not in _PRINTED:
        _PRINTED.add(line)
        print(line, file=sys.stderr)


_PRINTED: set[str] = set()


# ---------------------------------------------------------------------------- the record, as the analysis reads it
INT64 = (-(2**63), 2**63 - 1)
NUMBER = "a number that fits a float64"
_TEXT_FIELDS = ("run.sweep", "run.task", "run.family", "run.method", "run.budget", "run.model", "run.label",
                "run.protocol", "reason", "metrics.main_metric", "env.git_sha", "train.precision",
                "params.update_scale.rule")
_COUNT_FIELDS = ("run.seed", "params.trainable_paper", "params.trainable_paper_start", "params.budget_target",
                 "train.steps", "train.world_size", "weights.final.bytes", "params.update_scale.r")
_NUMBER_FIELDS = ("params.budget_gap", "train.wall_time_s", "train.peak_memory_mb", "train.step_time_s.median",
                  "params.update_scale.value", "params.update_scale.alpha")
_BLOCK_FIELDS = ("run", "metrics", "metrics.best", "metrics.final", "params", "train", "train.step_time_s",
                 "weights", "env", "env.versions", "config", "identity", "identity.keys", "params.update_scale")


def record_problem(record: dict[str, Any]) -> str | None:
    """The first field of a run record the analysis cannot use, said in one line; None when it can.

    This is the analysis's view of the record schema (``experiments.results`` writes the record and
    documents it): only the fields that collect, the tables, the figures and the report page read,
    each of the type they assume. A field may be absent or null (older records lack some) except
    what a result needs: a ``success`` record has ``metrics`` with a ``main_metric``, its value in
    ``metrics.best`` and a list of ``metrics.evals``. Metric values are numbers a float holds
    (``NaN`` included: a run may measure it); counts and the seed fit int64 (the frames' integer
    columns). ``record`` already has a ``status`` and a ``run`` object (:func:`_not_a_run`).
    """
    if record["status"] not in STATUSES:
        return f"status is {_shown(record['status'])}, not one of {list(STATUSES)}"
    for path in _BLOCK_FIELDS:
        value = _field(record, path)
        if value is not None and not isinstance(value, dict):
            return f"{path} is {_shown(value)}, not an object"
    checks = ((_TEXT_FIELDS, _is_text, "a string"), (_COUNT_FIELDS, _is_count, "an integer that fits int64"),
              (_NUMBER_FIELDS, _is_number, NUMBER))
    for paths, check, kind in checks:
        for path in paths:
            value = _field(record, path)
            if value is not None and not check(value):
                return f"{path} is {_shown(value)}, not {kind}"
    return _metrics_problem(record.get("metrics"), success=record["status"] == "success")


def _metrics_problem(metrics: dict[str, Any] | None, success: bool) -> str | None:
    """What is wrong with the ``metrics`` block (its objects' types are checked already), or None."""
    if metrics is None:
        return "status is 'success' but the record has no metrics" if success else None
    main = metrics.get("main_metric")
    if success and main is None:
        return "status is 'success' but metrics.main_metric is missing"
    if success and (metrics.get("best") or {}).get(main) is None:
        return f"status is 'success' but metrics.best has no value of its main metric {main!r}"
    evals = metrics.get("evals")
    if (success or evals is not None) and not (isinstance(evals, list) and all(isinstance(e, dict) for e in evals)):
        return f"metrics.evals is {_shown(evals)}, not a list of evaluations"
    blocks = [(name, metrics.get(name) or {}) for name in ("best", "final")]
    blocks += [(f"evals[{i}]", entry) for i, entry in enumerate(evals or [])]
    for name, block in blocks:
        for metric, value in block.items():
            if value is not None and not _is_number(value):
                return f"metrics.{name}.{metric} is {_shown(value)}, not {NUMBER}"
    return None


def _field(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path; None where it, or a block above it, is absent or not an object."""
    value: Any = record
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]


def _is_number(value: Any) -> bool:
    """A JSON number a float64 holds (a bool is no number; an integer of 400 digits overflows a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _shown(value: Any) -> str:
    """A value in a one-line message: its repr cut to 40 characters, and its JSON type."""
    if value is None:
        return "null"
    text = repr(value)
    text = text if len(text) <= 40 else f"{text[:37]}..."
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number"}
    return f"{text} ({kinds.get(type(value), type(value).__name__)})"


def stored_or_computed_identity(run_dir: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`analysis.grouping.record_identity` of a record read from disk, as data: computing a
    schema-1 record's identity resolves its method, and a ``method.module`` it names is refused
    (``adalora.trust.UntrustedCode``), never imported."""
    with trust.reading(run_dir / RESULT_FILE):
        return record_identity(record)


def _identity_problem(run_dir: Path, record: dict[str, Any]) -> str | None:
    """Why the record's identity cannot be had without importing code it names, or None."""
    try:
        stored_or_computed_identity(run_dir, record)
    except trust.UntrustedCode as err:
        return str(err)
    return None


def _keys_from_path(run_dir: Path) -> dict[str, Any]:
    """Run keys from the directory layout, for runs whose record is missing or unreadable."""
    parts = run_dir.parts
    at = max((i for i, part in enumerate(parts) if part.startswith(SEED_PREFIX)), default=len(parts) - 1)
    keys: dict[str, Any] = dict.fromkeys(RUN_KEYS)
    seed = parts[at].removeprefix(SEED_PREFIX)
    keys["seed"] = int(seed) if parts[at].startswith(SEED_PREFIX) and seed.isdigit() else None
    if keys["seed"] is not None and not _is_count(keys["seed"]):
        keys["seed"] = None  # beyond int64: no integer column holds it
    above = list(reversed(parts[:at]))
    if len(above) > 4 and above[3] in _model_names():  # <sweep>/<model>/<task>/... (the decoder sweeps' run_dir)
        keys["model"] = above.pop(3)
    for name, part in zip(("budget", "method", "task", "sweep"), above, strict=False):
        keys[name] = part
    return keys


def _model_names() -> set[str]:
    """The model configs the suite ships (``conf/model/<name>.yaml``), by file name only: a sweep whose
    run_dir puts the model above the task (``llm_math``) lays its runs out so."""
    return {path.stem for path in (Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml")}


def _has_checkpoint(run_dir: Path) -> bool:
    """The training loop writes ``checkpoint.pt`` (experiments.training.CHECKPOINT_FILE); one moved
    aside as corrupt or as another configuration's (``.corrupt-*``, ``.stale-*``) does not count."""
    return any(p.name.startswith(CHECKPOINT_PREFIX) and ".corrupt-" not in p.name and ".stale-" not in p.name
               for p in run_dir.iterdir())


def _status_row(run_dir: Path, record: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    row = dict.fromkeys(STATUS_COLUMNS)
    row.update(_keys_from_path(run_dir))
    checkpoint = _has_checkpoint(run_dir)
    row.update(run_dir=str(run_dir), has_checkpoint=checkpoint)
    if record is None:
        if error is not None:
            row.update(status="unreadable", reason=error)
        elif checkpoint:
            row.update(status="incomplete", reason=f"no {RESULT_FILE}; checkpoint present (resumable)")
        else:
            row.update(status="missing", reason=f"no {RESULT_FILE} and no checkpoint")
        return row
    row.update({k: v for k, v in record.get("run", {}).items() if k in RUN_KEYS})
    identity = stored_or_computed_identity(run_dir, record)
    if identity is not None:
        row.update(config_hash=identity_hash(identity), config_group=identity_hash(identity, with_seed=False),
                   identity=identity)
    row["schema_version"] = record.get("schema_version")
    metrics = record.get("metrics") or {}
    main = metrics.get("main_metric")
    row.update(status=record.get("status"), reason=record.get("reason"), main_metric=main,
               main_value_best=(metrics.get("best") or {}).get(main), **_record_facts(record))
    return row


def _record_facts(record: dict[str, Any]) -> dict[str, Any]:
    """The ``RECORD_FACTS`` of a record; None where an older record lacks a field (shown as n/a)."""
    run, params, train = record.get("run") or {}, record.get("params") or {}, record.get("train") or {}
    method_config = (record.get("config") or {}).get("method") or {}
    final_weights = (record.get("weights") or {}).get("final")
    return {
        "label": run.get("label") or method_config.get("label"),  # None: shown as analysis.labels.method_label says
        "protocol": run.get("protocol") or DEFAULT_PROTOCOL,
        "budget_target": params.get("budget_target"), "budget_gap": params.get("budget_gap"),
        "trainable_start": params.get("trainable_paper_start"), "trainable_params": params.get("trainable_paper"),
        "step_time_median_s": (train.get("step_time_s") or {}).get("median"),
        # the file of the final weights: the method's tensors and the trained head, not the base model
        "adapter_bytes": final_weights.get("bytes") if isinstance(final_weights, dict) else None,
        "devices": train.get("world_size") or 1,
        "steps": train.get("steps"), "wall_time_s": train.get("wall_time_s"),
        "peak_memory_mb": train.get("peak_memory_mb"),
        **_scale_facts(params.get("update_scale")), "targets": run_targets(record),
    }


def _scale_facts(scale: dict[str, Any] | None) -> dict[str, Any]:
    """``rank_held``, ``update_scale`` and ``update_rule`` (``alpha/init_r = 16/6``) of ``params.update_scale``:
    the rank in the scale's rule is the one the kind allocates its tensors at (LoRA r, AdaLoRA init_r)."""
    if not scale:
        return {"rank_held": None, "update_scale": None, "update_rule": None}
    rule, alpha, r = scale.get("rule"), scale.get("alpha"), scale.get("r")
    shown = f"{rule} = {alpha:g}/{r}" if rule and alpha is not None and r is not None else rule
    return {"rank_held": r, "update_scale": scale.get("value"), "update_rule": shown}


def run_targets(record: dict[str, Any]) -> str | None:
    """The weight types a run's method config names itself (``method.targets``), joined by ``,``; None where
    it adapts its budget level's (a level on other targets, ``llm_qv_r8``, is named so already). A method
    that narrows its targets under the level's name is another row than the level's own run."""
    method = (record.get("config") or {}).get("method")
    targets = method.get("targets") if isinstance(method, dict) else None
    if isinstance(targets, str) and targets:
        return targets
    if isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
        return ",".join(targets)
    return None


def run_status(root: str | Path) -> pd.DataFrame:
    """One row per run directory, whatever its state (success, failed, running, incomplete, missing)."""
    snapshot = _from_snapshot(root, "run_status")
    return snapshot if snapshot is not None else status_frame(load_records(root))


def status_frame(loaded: Iterable[Loaded]) -> pd.DataFrame:
    """:func:`run_status` of records already loaded (:func:`load_records`)."""
    rows = [_status_row(run_dir, record, error) for run_dir, record, error in loaded]
    for row, note in zip(rows, conflict_notes(rows), strict=True):
        row["conflict"] = note
    return pd.DataFrame(rows, columns=STATUS_COLUMNS).astype({**_COUNTS, **_FLOATS})


def _metric_rows(run_dir: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric of a record: its value at the best eval and at the last one."""
    status = _status_row(run_dir, record, None)
    metrics = record.get("metrics") or {}
    best, final = metrics.get("best") or {}, metrics.get("final") or {}
    names = [m for m in dict.fromkeys([*best, *final]) if m not in ("step", "epoch")]  # where, not how well
    base = {k: status[k] for k in (*RUN_KEYS, *RECORD_FACTS, "status", "reason", "run_dir", "config_hash",
                                   "config_group")}
    return [
        {**base, "metric": name, "is_main": name == metrics.get("main_metric"),
         "value_best": best.get(name), "value_final": final.get(name), "best_step": best.get("step")}
        for name in names
    ]


def collect(root: str | Path) -> pd.DataFrame:
    """One tidy row per run x metric, for every readable record that holds metrics."""
    snapshot = _from_snapshot(root, "results")
    return snapshot if snapshot is not None else results_frame(load_records(root))


def results_frame(loaded: Iterable[Loaded]) -> pd.DataFrame:
    """:func:`collect` of records already loaded (:func:`load_records`)."""
    rows = []
    for run_dir, record, _ in loaded:
        if record is not None:
            rows += _metric_rows(run_dir, record)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return df.astype({**_COUNTS, **_FLOATS, "best_step": "Int64", "is_main": bool, "value_best": float,
                      "value_final": float})


# ---------------------------------------------------------------------------- read once
def _snapshot_of(root: str | Path) -> Path | None:
    """The active snapshot's folder (:data:`SNAPSHOT_ENV`) if it was taken of ``root``."""
    folder = os.environ.get(SNAPSHOT_ENV)
    marker = Path(folder) / _SNAPSHOT_ROOT if folder else None
    if marker is None or not marker.is_file() or marker.read_text(encoding="utf-8") != str(Path(root).resolve()):
        return None
    return marker.parent


def _from_snapshot(root: str | Path, name: str) -> pd.DataFrame | None:
    folder = _snapshot_of(root)
    return None if folder is None else pd.read_parquet(folder / f"{name}.parquet")


@contextlib.contextmanager
def collected_once(root: str | Path) -> Iterator[Path]:
    """Read the records under ``root`` once; inside the block (child processes included, e.g. notebook
    kernels) :func:`collect` and :func:`run_status` of ``root`` return that snapshot."""
    active = os.environ.get(SNAPSHOT_ENV)
    taken = _snapshot_of(root)
    if taken is not None:
        yield taken  # an outer block took it already
        return
    with tempfile.TemporaryDirectory(prefix="adalora-collected-") as folder:
        loaded = list(load_records(root))
        results_frame(loaded).to_parquet(Path(folder) / "results.parquet", index=False)
        status_frame(loaded).to_parquet(Path(folder) / "run_status.parquet", index=False)
        (Path(folder) / _SNAPSHOT_ROOT).write_text(str(Path(root).resolve()), encoding="utf-8")
        os.environ[SNAPSHOT_ENV] = folder
        try:
            yield Path(folder)
        finally:
            if active is None:
                os.environ.pop(SNAPSHOT_ENV, None)
            else:
                os.environ[SNAPSHOT_ENV] = active


def select_records(runs: pd.DataFrame | Iterable[dict[str, Any]], **keys: Any) -> list[dict[str, Any]]:
    """Records of the successful runs matching ``keys`` (e.g. task=..., budget=..., method=...).

    ``runs`` is a frame from ``collect``/``run_status`` (records are read from ``run_dir``) or
    records already in memory; both give the same list, in run-directory order.
    """
    if isinstance(runs, pd.DataFrame):
        match = runs[(runs["status"] == "success")]
        for key, value in keys.items():
            match = match[match[key] == value]
        return [read_result(d) for d in sorted(set(match["run_dir"]))]
    return [r for r in runs if r.get("status") == "success"
            and all(r.get("run", {}).get(k) == v for k, v in keys.items())]


def save(df: pd.DataFrame, out_dir: str | Path, name: str = "results") -> list[Path]:
    """Write ``<name>.parquet`` (typed, for code) and ``<name>.csv`` (for people and diffs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.parquet", out_dir / f"{name}.csv"]
    df.to_parquet(paths[0], index=False)
    df.to_csv(paths[1], index=False)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="results root, e.g. outputs")
    parser.add_argument("--out", default=None, help="output folder (default: <root>/collected)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.root) / "collected"
    skipped: list[tuple[Path, str]] = []
    loaded = list(load_records(args.root, skipped))
    results, status = results_frame(loaded), status_frame(loaded)
    written = save(results, out, "results") + save(status, out, "run_status")
    counts = status["status"].value_counts().to_dict()
    print(f"{len(status)} runs {counts}; {len(skipped)} skipped (not runs, listed above); {len(results)} metric rows -> "
          + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
