"""One run = one result directory: config → model + method + task → train → ``result.json``.

Importable without Hydra (tests call :func:`run` with a composed config). The run is
idempotent: a directory whose record says ``success`` is skipped unless ``force=true``;
one with a checkpoint resumes from it; a failed one is re-run. Every outcome, failures
included, ends in a ``result.json`` with a status and a reason, so a sweep never loses a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from omegaconf import DictConfig, OmegaConf

from adalora.budget import BUDGET_LEVELS
from adalora.methods import METHODS, AdaLoRASettings, AdapterSettings, LoRASettings, apply_method
from experiments.models import load_model, load_tokenizer
from experiments.results import RESULT_FILE, is_success, read_result, write_result
from experiments.sweeps import LEDGER_ENV, record_outcome
from experiments.tasks import build_task
from experiments.tracking import Tracker, make_tracker
from experiments.training import Diverged, Trainer, TrainSettings, set_seed, total_optimizer_steps

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = ".lock"
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainSettings)}
_METHOD_KEYS = {f.name for s in (LoRASettings, AdaLoRASettings, AdapterSettings) for f in dataclasses.fields(s)}
_MODEL_KEYS = {"cls_dropout"}
# Which task families each budget family serves (GLUE ablations use the QA "%" levels).
_BUDGET_FAMILIES = {"glue": {"glue", "qa"}, "squad": {"qa"}, "summarization": {"nlg"}}
_FAMILY_ARCHS = {"glue": {"deberta-v2", "bert"}, "squad": {"deberta-v2", "bert"}, "summarization": {"bart"}}


class ConfigError(ValueError):
    """A configuration that cannot run; raised before any training starts."""


FIXED_SIZE_KINDS = ("full_ft", "bitfit")


def effective_budget(method_name: str, budget_name: str) -> str:
    """full_ft and bitfit have no budget knob: they always record under ``none``.

    A sweep's cartesian product (methods × budgets) therefore maps every budget of a
    fixed-size method to one run directory; the repeats find it finished and skip.
    """
    kind = METHODS.get(method_name, (None, None))[0]
    return "none" if kind in FIXED_SIZE_KINDS else budget_name


def register_resolvers() -> None:
    """``${project_root:}`` points configs at shipped fixtures; ``${effective_budget:m,b}`` see above."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("effective_budget"):
        OmegaConf.register_new_resolver("effective_budget", effective_budget)


# ---------------------------------------------------------------------------- resolution
def _hparams_for(task_cfg: Mapping, method_name: str, kind: str) -> dict[str, Any]:
    """Task hyperparameters for a method: ``default`` < kind (e.g. lora) < exact name."""
    hp = task_cfg.get("hparams") or {}
    merged: dict[str, Any] = {}
    for key in ("default", kind, method_name):
        block = hp.get(key) or {}
        merged.update(block)
    unknown = sorted(set(merged) - _TRAIN_KEYS - _METHOD_KEYS - _MODEL_KEYS)
    if unknown:
        raise ConfigError(f"task.hparams for {method_name!r} has unknown key(s) {unknown}")
    return merged


def _budget_knobs(kind: str, method_cfg: Mapping, budget_name: str, task_cfg: Mapping) -> dict[str, Any]:
    """Method knobs implied by the budget level, for keys the method config leaves null."""
    if kind in FIXED_SIZE_KINDS:
        return {}
    if budget_name == "none":
        raise ConfigError(f"budget=none only fits full_ft and bitfit, not method={method_cfg['name']}")
    if budget_name not in BUDGET_LEVELS:
        raise ConfigError(f"budget.name {budget_name!r} is unknown; known: {sorted(BUDGET_LEVELS)} or none")
    level = BUDGET_LEVELS[budget_name]
    family = task_cfg["family"]
    allowed = set(task_cfg.get("budget_families") or _BUDGET_FAMILIES[family])
    if level.family not in allowed:
        raise ConfigError(
            f"budget={budget_name} is a {level.family} level; task={task_cfg['name']} takes {sorted(allowed)} levels"
        )
    if kind == "lora":
        return {"r": level.lora_r}
    if kind == "adalora":
        allocate = method_cfg.get("allocate")
        if allocate is None:
            allocate = METHODS.get(method_cfg["name"], (kind, {}))[1].get("allocate", True)
        if not allocate:  # no allocation (svd_lora): the final budget r̄ per matrix from the start
            return {"init_r": level.adalora_target_r, "target_r": level.adalora_target_r}
        return {"init_r": level.adalora_init_r, "target_r": level.adalora_target_r}
    size = level.houlsby_bottleneck if method_cfg.get("placement", "houlsby") == "houlsby" else level.pfeiffer_bottleneck
    if method_cfg["name"] == "adapter_pfeiffer":
        size = level.pfeiffer_bottleneck
    if size is None:
        raise ConfigError(f"budget={budget_name} defines no adapter size (the paper runs no adapters on {family})")
    return {"bottleneck": size}


@dataclasses.dataclass
class ResolvedRun:
    method: dict[str, Any]
    train: TrainSettings
    cls_dropout: float | None


def resolve(cfg: DictConfig) -> ResolvedRun:
    """Merge budget, task hyperparameters and explicit overrides; validate before training.

    Precedence, lowest first: trainer defaults < task.hparams < explicit non-null
    ``trainer.*`` / ``method.*`` values from the config or the command line.
    """
    task, method_cfg = cfg.task, OmegaConf.to_container(cfg.method, resolve=True)
    family = task.family
    if family not in _BUDGET_FAMILIES:
        raise ConfigError(f"task.family {family!r} must be one of {sorted(_BUDGET_FAMILIES)}")
    if cfg.model.arch not in _FAMILY_ARCHS[family]:
        raise ConfigError(f"task={task.name} ({family}) needs a model with arch in {sorted(_FAMILY_ARCHS[family])}, "
                          f"got model={cfg.model.name} ({cfg.model.arch})")
    name = method_cfg.get("name")
    kind = method_cfg.get("kind") or METHODS.get(name, (None, None))[0]
    if kind is None:
        raise ConfigError(f"method.name {name!r} is not registered; known: {sorted(METHODS)}")
    task_dict = OmegaConf.to_container(task, resolve=True)
    hp = _hparams_for(task_dict, name, kind)
    method = {**{k: v for k, v in hp.items() if k in _METHOD_KEYS}, **{k: v for k, v in method_cfg.items() if v is not None}}
    for key, value in _budget_knobs(kind, method_cfg, cfg.budget.name, task_dict).items():
        method.setdefault(key, value)
    if kind not in ("adalora", "lora"):
        method = {k: v for k, v in method.items() if k not in _METHOD_KEYS - {f.name for f in dataclasses.fields(AdapterSettings)}}
        if kind != "adapter":
            method = {k: v for k, v in method.items() if k in ("name", "kind")}
    elif kind == "lora":
        lora_keys = {f.name for f in dataclasses.fields(LoRASettings)} | {"name", "kind"}
        method = {k: v for k, v in method.items() if k in lora_keys}
    trainer = {k: v for k, v in hp.items() if k in _TRAIN_KEYS}
    trainer.update({k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None})
    for key in ("lr", "batch_size"):
        if key not in trainer:
            raise ConfigError(f"trainer.{key} is not set by task.hparams or the command line (trainer.{key}=...)")
    try:
        settings = TrainSettings(**trainer)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad trainer config: {err}") from err
    return ResolvedRun(method=method, train=settings, cls_dropout=hp.get("cls_dropout"))


def _schedule_in_steps(method: dict[str, Any], total_steps: int) -> dict[str, Any]:
    """AdaLoRA's tinit/tfinal may be given as fractions of T (tiny and demo tasks)."""
    out = dict(method)
    for key in ("tinit", "tfinal"):
        value = out.get(key)
        if isinstance(value, float) and 0 < value < 1:
            out[key] = int(round(value * total_steps))
    if "tinit" in out and "tfinal" in out and out["tinit"] + out["tfinal"] >= total_steps:
        raise ConfigError(
            f"method.tinit + method.tfinal = {out['tinit']} + {out['tfinal']} must be < T = {total_steps} "
            "optimiser steps (AdaLoRA needs a budget-decrease phase); shorten them or train longer"
        )
    return out


# ---------------------------------------------------------------------------- provenance
def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _environment() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "datasets", "accelerate", "hydra-core", "adalora"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"
    return {"versions": versions, "git_sha": _git_sha(), "device": device, "python": platform.python_version()}


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- the run
def _is_main_process() -> bool:
    """Rank 0 under torchrun / ``accelerate launch`` (the only rank that writes records)."""
    return int(os.environ.get("RANK", "0")) == 0


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def _run_lock(run_dir: Path, enabled: bool) -> Iterator[bool]:
    """An exclusive, non-blocking lock on ``run_dir/.lock``; yields whether it was acquired.

    Parallel launchers may start the same run twice (a sweep relaunched while the first is
    still running); the second job must not train into the same directory. The kernel drops
    the lock when its holder dies, so a killed job never leaves a stale lock.
    """
    if not enabled:
        yield True
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run(cfg: DictConfig, on_log=None) -> dict[str, Any]:
    """Execute (or skip) one run and return its record.

    Inside a sweep (``ADALORA_SWEEP_LEDGER`` set) every outcome is appended to the sweep's
    ledger, and a configuration error fails this job only; a single run raises it.
    """
    register_resolvers()
    run_dir = Path(cfg.run_dir)
    main = _is_main_process()
    force = bool(cfg.get("force", False))
    with _run_lock(run_dir, enabled=main) as acquired:
        if not acquired:
            print(f"[busy] {run_dir} is being run by another job; not starting it twice")
            record_outcome(run_dir, "busy", None)
            return read_result(run_dir) or {"status": "running"}
        if is_success(run_dir) and not force:
            print(f"[skip] {run_dir} already succeeded (force=true to re-run)")
            if main:
                record_outcome(run_dir, "skipped", "success")
            return read_result(run_dir)
        try:
            record = _run_unlocked(cfg, run_dir, on_log, main)
        except ConfigError as err:
            if main:
                record_outcome(run_dir, "failed", "failed", f"ConfigError: {err}")
            if not os.environ.get(LEDGER_ENV):
                raise
            print(f"[failed] {run_dir}: ConfigError: {err}")
            return {"status": "failed", "reason": f"ConfigError: {err}"}
    if main:
        outcome = "done" if record["status"] == "success" else "failed"
        record_outcome(run_dir, outcome, record["status"], record.get("reason"))
    return record


def _run_unlocked(cfg: DictConfig, run_dir: Path, on_log, main: bool) -> dict[str, Any]:
    resolved = resolve(cfg)
    info = {
        "sweep": cfg.sweep_name, "task": cfg.task.name, "family": cfg.task.family, "method": cfg.method.name,
        "budget": effective_budget(cfg.method.name, cfg.budget.name), "seed": int(cfg.seed), "model": cfg.model.name,
    }
    config = OmegaConf.to_container(cfg, resolve=True)
    record: dict[str, Any] = {
        "status": "running", "reason": None, "run": info, "metrics": None, "params": None, "ranks": None,
        "train": None, "config": config, "env": _environment(),
    }
    if main:
        write_result(run_dir, record)
    started = time.perf_counter()
    tracker = Tracker()
    try:
        if main:
            tracker = make_tracker(config.get("logger"), info, config, run_dir)

        def log(payload: dict[str, Any]) -> None:
            tracker.log(payload)
            if on_log is not None:
                on_log(payload)

        trainer, handle, task = _build(cfg, resolved, run_dir, log)
        resumed = trainer.load_checkpoint()
        if resumed:
            print(f"[resume] {run_dir} from step {trainer.state.global_step}")
        state = trainer.train()
        record.update(_success_fields(trainer, handle, task, state))
        record["status"] = "success"
        if main and not resolved.train.keep_checkpoint and trainer.checkpoint_path is not None:
            trainer.checkpoint_path.unlink(missing_ok=True)
    except Diverged as err:
        record.update(status="diverged", reason=str(err))
    except torch.cuda.OutOfMemoryError as err:
        record.update(status="oom", reason=str(err).splitlines()[0])
    except ConfigError:
        record.update(status="failed", reason=traceback.format_exc(limit=1))
        if main:
            write_result(run_dir, record)
        tracker.finish(record)
        raise
    except Exception as err:  # noqa: BLE001 - a sweep must record every failure and go on
        record.update(status="failed", reason=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=8)}")
    finally:
        record["train"] = {**(record.get("train") or {}), "wall_time_s": time.perf_counter() - started,
                           "peak_memory_mb": _peak_memory_mb()}
    if main:
        write_result(run_dir, record)
    tracker.finish(record)
    print(f"[{record['status']}] {run_dir / RESULT_FILE}")
    return record


def _build(cfg: DictConfig, resolved: ResolvedRun, run_dir: Path, on_log):
    set_seed(int(cfg.seed))  # before the model and adapters are built (init draws random numbers)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    task = build_task(OmegaConf.to_container(cfg.task, resolve=True))
    tokenizer = load_tokenizer(model_cfg)
    model = load_model(model_cfg, task.head, num_labels=task.num_labels, dropout=resolved.cls_dropout)
    train_data = task.train_dataset(tokenizer)
    # Under DDP each rank steps through its shard of the batches (accelerate's even_batches).
    batches = math.ceil(math.ceil(len(train_data) / resolved.train.batch_size) / _world_size())
    total = total_optimizer_steps(batches, resolved.train)
    method_cfg = _schedule_in_steps(resolved.method, total)
    handle = apply_method(model, method_cfg)
    # This rank's device (cuda:<local rank> under DDP), the same singleton state as the Trainer's.
    device = PartialState(cpu=not torch.cuda.is_available()).device

    def evaluate(m):
        return task.evaluate(m, tokenizer, resolved.train.eval_batch_size, device)

    trainer = Trainer(
        model, handle, train_data, task.collator(tokenizer), resolved.train, seed=int(cfg.seed), evaluate=evaluate,
        main_metric=task.main_metric, checkpoint_dir=run_dir, on_log=on_log,
    )
    if trainer.total_steps != total:
        raise RuntimeError(f"step count mismatch: planned T={total}, trainer T={trainer.total_steps}")
    return trainer, handle, task


def _success_fields(trainer: Trainer, handle, task, state) -> dict[str, Any]:
    evals = state.evals
    main = task.main_metric
    best = max(evals, key=lambda e: e.get(main, float("-inf")))
    ranks = None
    if handle.kind == "adalora":
        ranks = {
            "pattern": handle.rank_pattern(),
            "history": state.rank_history,
            "weight_types": {n: list(v) for n, v in handle.weight_types.items()},
        }
    return {
        "metrics": {"evals": evals, "best": best, "final": evals[-1], "main_metric": main},
        "params": handle.parameter_counts(),
        "ranks": ranks,
        "train": {"steps": state.global_step, "final_train_loss": state.train_loss, "total_steps": trainer.total_steps,
                  "step_time_s": state.step_time_summary(), "precision": trainer.settings.precision,
                  "tf32": trainer.settings.tf32},
    }
