"""One run = one result directory: config → model + method + task → train → ``result.json``.

Importable without Hydra (tests call :func:`run` with a composed config). The run is
idempotent, and a directory holds one configuration (``experiments.identity``):

- a ``success`` record of the same configuration is skipped (``force=true`` re-runs it);
- a ``success`` or ``diverged`` record of another configuration stops the run before training,
  naming the differing keys (``RunConflict``; ``force=true`` replaces it);
- a checkpoint is resumed only if it is of the same configuration; another one stops the run
  (``force=true`` moves it aside and starts from step 0);
- a failed, OOM or interrupted record is re-run; an unreadable record or checkpoint is moved
  aside (``*.corrupt-<time>``, a checkpoint that needs more than tensors and plain types
  ``*.refused-<time>``) and the run starts cleanly.

The configuration is validated (:func:`validate_run`) before anything is created on disk. Every
outcome of a run that starts, failures and SIGINT/SIGTERM (``interrupted``) included, ends in a
``result.json`` with a status and a reason, so a sweep never loses a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import math
import os
import platform
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from omegaconf import DictConfig, OmegaConf

from adalora.budget import BUDGET_LEVELS
from adalora.methods import (
    DESCRIPTIVE_KEYS,
    MethodConfigError,
    MethodHandle,
    apply_method,
    has_size_knob,
    resolve_kind,
)
from adalora.methods.registry import settings_keys, settings_values
from adalora.methods.settings import checked_values
from experiments import interrupts
from experiments.identity import (
    IdentityMismatch,
    code_version,
    current_identity,
    describe_difference,
    identity_block,
    override_dir,
    record_identity,
    same_identity,
    unverified_note,
)
from experiments.interrupts import Interrupted
from experiments.lr_search import selected_lr
from experiments.models import load_model, load_tokenizer
from experiments.protocol import PROTOCOLS, Protocol, get_protocol
from experiments.protocol import best_eval as best_eval  # re-exported: its home was here
from experiments.results import (
    RESULT_FILE,
    move_aside,
    read_result,
    read_result_or_move_aside,
    remove_stale_temps,
    write_result,
)
from experiments.sweeps import LEDGER_ENV, record_outcome
from experiments.tasks import build_task
from experiments.tracking import Tracker, make_tracker
from experiments.training import (
    CHECKPOINT_FILE,
    Diverged,
    Trainer,
    TrainSettings,
    checkpoint_identity,
    set_seed,
    total_optimizer_steps,
)
from experiments.validation import run_input_problems, train_settings_problems
from experiments.weights import ModelSpec, save_run_weights

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = ".lock"
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainSettings)}
_MODEL_KEYS = {"cls_dropout"}
# Which task families each budget family serves (GLUE ablations use the QA "%" levels).
_BUDGET_FAMILIES = {"glue": {"glue", "qa"}, "squad": {"qa"}, "summarization": {"nlg"}}
_FAMILY_ARCHS = {"glue": {"deberta-v2", "bert"}, "squad": {"deberta-v2", "bert"}, "summarization": {"bart"}}


class ConfigError(ValueError):
    """A configuration that cannot run; raised before any training starts."""


class RunConflict(ConfigError, IdentityMismatch):
    """The run directory holds another configuration's result or checkpoint (nothing is written)."""


log = logging.getLogger("experiments.run")  # Hydra sends it to the console and <run_dir>/run.log


def effective_budget(method: str | Mapping[str, Any], budget_name: str) -> str:
    """A method without a size knob (full FT, BitFit: ``MethodHandle.has_size_knob()``) always records
    under ``none``. ``method``: the method config (``${effective_budget:${method},...}``), or a name.

    A sweep's cartesian product (methods × budgets) therefore maps every budget of a
    fixed-size method to one run directory; the repeats find it finished and skip.
    """
    if isinstance(method, DictConfig):
        method = OmegaConf.to_container(method, resolve=True)
    try:
        sized = has_size_knob(method)
    except MethodConfigError as err:
        raise ConfigError(str(err)) from err
    return budget_name if sized else "none"


def method_label(method_cfg: Mapping[str, Any]) -> str:
    """The method's display name (``label:`` of its config; default: its name)."""
    return str(method_cfg.get("label") or method_cfg.get("name"))


def register_resolvers() -> None:
    """``${project_root:}`` points configs at shipped fixtures; ``${effective_budget:m,b}`` see above;
    ``${selected_lr:task,method,budget,fallback}`` the lr chosen by ``make lr-search``."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("effective_budget"):
        OmegaConf.register_new_resolver("effective_budget", effective_budget)
    if not OmegaConf.has_resolver("override_dir"):
        OmegaConf.register_new_resolver("override_dir", override_dir)
    if not OmegaConf.has_resolver("selected_lr"):  # the baselines' searched lr (experiments/lr_search.py)
        OmegaConf.register_new_resolver("selected_lr", selected_lr)


# ---------------------------------------------------------------------------- resolution
def _hparams_for(task_cfg: Mapping, method_name: str, blocks: tuple[str, ...]) -> dict[str, Any]:
    """Task hyperparameters for a method: ``default`` < the kind's blocks (``hparams_blocks``: e.g. lora;
    the peft kind's LoRA-family rows: lora, peft) < exact name."""
    hp = task_cfg.get("hparams") or {}
    merged: dict[str, Any] = {}
    for key in ("default", *blocks, method_name):
        block = hp.get(key) or {}
        merged.update(block)
    unknown = sorted(set(merged) - _TRAIN_KEYS - settings_keys() - _MODEL_KEYS)
    if unknown:
        raise ConfigError(f"task.hparams for {method_name!r} has unknown key(s) {unknown}")
    return merged


def budget_level(kind: type[MethodHandle], method_cfg: Mapping, budget_name: str, task_cfg: Mapping):
    """The budget level a sized method trains at (None for a fixed-size one), checked against the task."""
    if not kind.has_size_knob():
        return None
    if budget_name == "none":
        raise ConfigError(f"budget=none only fits methods without a size knob (full_ft, bitfit), "
                          f"not method={method_cfg['name']}")
    if budget_name not in BUDGET_LEVELS:
        raise ConfigError(f"budget.name {budget_name!r} is unknown; known: {sorted(BUDGET_LEVELS)} or none")
    level = BUDGET_LEVELS[budget_name]
    family = task_cfg["family"]
    allowed = set(task_cfg.get("budget_families") or _BUDGET_FAMILIES[family])
    if level.family not in allowed:
        raise ConfigError(
            f"budget={budget_name} is a {level.family} level; task={task_cfg['name']} takes {sorted(allowed)} levels"
        )
    return level


def _budget_knobs(kind: type[MethodHandle], values: Mapping, level) -> dict[str, Any]:
    """Method knobs the budget level implies without the model (the kind's ``budget_knobs``); a kind
    whose rule needs the model gets them in ``apply_method``."""
    if level is None:
        return {}
    try:
        return kind.budget_knobs(level, values, None)
    except MethodConfigError as err:
        raise ConfigError(str(err)) from err


@dataclasses.dataclass
class ResolvedRun:
    method: dict[str, Any]
    train: TrainSettings
    cls_dropout: float | None
    protocol: Protocol = PROTOCOLS["paper"]  # experiments/protocol.py: which split selects, which reports
    budget: Any = None  # the BudgetLevel a sized method trains at; None for fixed-size methods


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
    try:
        name, kind, defaults = resolve_kind(method_cfg)
    except MethodConfigError as err:
        raise ConfigError(str(err)) from err
    task_dict = OmegaConf.to_container(task, resolve=True)
    hp = _hparams_for(task_dict, name, kind.hparams_blocks({**defaults, **method_cfg}))
    # The task's hyperparameters give the kind's own settings only (a shared ``default`` block may hold
    # other kinds' keys); the method config's set keys all pass, so a misspelt one is an error.
    own = {f.name for f in dataclasses.fields(kind.settings_cls)}
    method = {**{k: v for k, v in hp.items() if k in own}, **{k: v for k, v in method_cfg.items() if v is not None}}
    level = budget_level(kind, method_cfg, cfg.budget.name, task_dict)
    values = {**defaults, **{k: v for k, v in method.items() if k not in DESCRIPTIVE_KEYS}}
    for key, value in _budget_knobs(kind, values, level).items():
        method.setdefault(key, value)
    trainer = {k: v for k, v in hp.items() if k in _TRAIN_KEYS}
    trainer.update({k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None})
    for key in ("lr", "batch_size"):
        if key not in trainer:
            raise ConfigError(f"trainer.{key} is not set by task.hparams or the command line (trainer.{key}=...)")
    try:
        settings = TrainSettings(**trainer)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad trainer config: {err}") from err
    problems = train_settings_problems(settings)
    if problems:
        raise ConfigError("invalid trainer setting(s): " + "; ".join(problems))
    try:
        protocol = get_protocol(cfg.get("protocol"))
        protocol.check(task_dict)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return ResolvedRun(method=method, train=settings, cls_dropout=hp.get("cls_dropout"), protocol=protocol,
                       budget=level)


_ANY_T = 10**12  # a training length for checking method knobs before the data fixes T


def validate_run(cfg: DictConfig) -> ResolvedRun:
    """Every check that needs neither data nor model, before anything is created on disk:
    the seed and the run-path names, :func:`resolve`, and the method's knobs as the method will
    parse them (fractional ``tinit``/``tfinal`` are checked against T when the data gives it; a size
    knob that the count rule sets from the model is checked when the model exists)."""
    problems = run_input_problems(cfg)
    if problems:
        raise ConfigError("invalid setting(s): " + "; ".join(problems))
    resolved = resolve(cfg)
    try:
        name, kind, defaults = resolve_kind(resolved.method)
        values = settings_values(_schedule_in_steps(resolved.method, _ANY_T), defaults)
        if kind.size_knob is not None and kind.size_knob not in values and resolved.budget is not None:
            checked_values(kind.settings_cls, values, f"method {name!r} ({kind.kind})")
        else:
            kind.parse_settings(values, name)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad method config: {err}") from err
    return resolved


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
def _environment() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "datasets", "accelerate", "hydra-core", "adalora"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"
    return {"versions": versions, "device": device, "python": platform.python_version()}


_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_memory() -> None:
    """Start this run's peak from now: a serial sweep runs many runs in one process.

    CUDA: ``reset_peak_memory_stats``. CPU on Linux: writing 5 to ``/proc/self/clear_refs``
    resets the peak resident set size (VmHWM) that :func:`_peak_memory_mb` reads.
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        _PROC_CLEAR_REFS.write_text("5")


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    with contextlib.suppress(OSError):
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    import resource  # no /proc (macOS): the process-lifetime peak, not reset between runs

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


def run_identity_block(cfg: DictConfig) -> dict[str, Any]:
    """The identity (hash, seedless group hash, keys) of this run's configuration and data content."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return identity_block(current_identity(config, effective_budget(config["method"], cfg.budget.name)))


@dataclasses.dataclass
class _Plan:
    skip: dict[str, Any] | None  # the finished record to return instead of running
    resume: bool  # a checkpoint of this configuration is there


def _plan(run_dir: Path, block: dict[str, Any], force: bool, main: bool) -> _Plan:
    """Skip, resume or start, from what the directory holds (the rules are in the module docstring).

    Only rank 0 moves files aside; the other ranks reach the same decision read-only.
    """
    record = read_result_or_move_aside(run_dir) if main else _read_quietly(run_dir)
    if record is not None and record.get("status") in ("success", "diverged"):
        stored = record_identity(record)
        same = stored is not None and same_identity(stored, block["keys"])
        if not same and not force:
            raise RunConflict(describe_difference(f"{record['status']} result", run_dir / RESULT_FILE,
                                                  stored or {}, block["keys"]))
        if same and record["status"] == "success" and not force:
            _note_unverified(run_dir / RESULT_FILE, stored, block["keys"], main)
            return _Plan(skip=record, resume=False)
    checkpoint = run_dir / CHECKPOINT_FILE
    readable, stored_block = checkpoint_identity(checkpoint, move=main)
    if not readable:
        return _Plan(skip=None, resume=False)
    if stored_block and same_identity(stored_block.get("keys") or {}, block["keys"]):
        _note_unverified(checkpoint, stored_block["keys"], block["keys"], main)
        return _Plan(skip=None, resume=True)
    if force:
        if main:
            moved = move_aside(checkpoint, "stale")
            print(f"[force] {checkpoint} belongs to another configuration; moved to {moved.name}, "
                  "training from step 0", flush=True)
        return _Plan(skip=None, resume=False)
    if not stored_block:
        raise RunConflict(f"{checkpoint} carries no configuration hash (written by an older version), so it "
                          "cannot be checked against this configuration. Ways out: force=true (train from step 0), "
                          "or another sweep_name=... or output_root=...")
    raise RunConflict(describe_difference("checkpoint", checkpoint, stored_block.get("keys") or {}, block["keys"]))


def _note_unverified(path: Path, stored: Mapping[str, Any], current: Mapping[str, Any], main: bool) -> None:
    note = unverified_note(path, stored, current)
    if note and main:
        print(note, flush=True)


def _read_quietly(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_result(run_dir)
    except ValueError:
        return None


def run(cfg: DictConfig, on_log=None) -> dict[str, Any]:
    """Execute (or skip) one run and return its record.

    Inside a sweep (``ADALORA_SWEEP_LEDGER`` set) every outcome is appended to the sweep's
    ledger and no error escapes (the sweep must reach its summary); a single run raises a
    configuration error or a conflict with the directory's contents.
    """
    register_resolvers()
    run_dir = Path(cfg.run_dir)
    main = _is_main_process()
    force = bool(cfg.get("force", False))
    in_sweep = bool(os.environ.get(LEDGER_ENV))
    try:
        with interrupts.handled():
            resolved = validate_run(cfg)  # nothing is created for a configuration that cannot run
            with _run_lock(run_dir, enabled=main) as acquired:
                if not acquired:
                    print(f"[busy] {run_dir} is being run by another job; not starting it twice")
                    record_outcome(run_dir, "busy", None)
                    return {"status": "running"}
                if main:
                    for stale in remove_stale_temps(run_dir):  # a killed writer's; we hold the lock
                        print(f"[cleanup] removed the stale temp file {stale}", flush=True)
                plan = _plan(run_dir, run_identity_block(cfg), force, main)
                if plan.skip is not None:
                    print(f"[skip] {run_dir} already succeeded with this configuration (force=true to re-run)")
                    if main:
                        record_outcome(run_dir, "skipped", "success")
                    return plan.skip
                record = _run_unlocked(cfg, resolved, run_dir, on_log, main, plan.resume)
    except Interrupted as err:
        if main:
            record_outcome(run_dir, "failed", "interrupted", str(err))
        raise
    except Exception as err:  # noqa: BLE001 - a sweep records every failure and goes on
        reason = f"{type(err).__name__}: {err}"
        if main:
            record_outcome(run_dir, "failed", "failed", reason)
        if not in_sweep:
            raise
        print(f"[failed] {run_dir}: {reason}", flush=True)
        log.error("%s failed", run_dir, exc_info=err)
        return {"status": "failed", "reason": reason}
    if main:
        outcome = "done" if record["status"] == "success" else "failed"
        record_outcome(run_dir, outcome, record["status"], record.get("reason"))
    return record


def _job_overrides() -> list[str] | None:
    """The command-line overrides of this job (what Hydra kept in ``.hydra/overrides.yaml``)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _run_unlocked(cfg: DictConfig, resolved: ResolvedRun, run_dir: Path, on_log, main: bool,
                  resume: bool = False) -> dict[str, Any]:
    info = {
        "sweep": cfg.sweep_name, "task": cfg.task.name, "family": cfg.task.family, "method": cfg.method.name,
        "budget": "none" if resolved.budget is None else cfg.budget.name, "seed": int(cfg.seed), "model": cfg.model.name,
        "label": method_label(cfg.method), "protocol": resolved.protocol.name,
    }
    config = OmegaConf.to_container(cfg, resolve=True)
    record: dict[str, Any] = {
        "status": "running", "reason": None, "run": info, "metrics": None, "params": None, "ranks": None,
        "train": None, "config": config, "overrides": _job_overrides(), "identity": run_identity_block(cfg),
        "env": {**_environment(), **code_version()},
    }
    if main:
        write_result(run_dir, record)
    _reset_peak_memory()
    started = time.perf_counter()
    earlier_segments_s = 0.0  # training time a resumed checkpoint had accumulated
    tracker = Tracker()
    interrupted: Interrupted | None = None
    trainer: Trainer | None = None
    try:
        if main:
            tracker = make_tracker(config.get("logger"), info, config, run_dir, resume=resume)

        def log_payload(payload: dict[str, Any]) -> None:
            tracker.log(payload)
            if on_log is not None:
                on_log(payload)

        trainer, handle, task = _build(cfg, resolved, run_dir, log_payload)
        resumed = trainer.load_checkpoint()
        if resumed:
            earlier_segments_s = trainer.state.elapsed_s
            print(f"[resume] {run_dir} from step {trainer.state.global_step}")
        state = trainer.train()
        record.update(_success_fields(trainer, handle, task, state, resolved.protocol))
        if main:  # the trained weights beside result.json (experiments/weights.py)
            spec = ModelSpec.of_run(OmegaConf.to_container(cfg.model, resolve=True), task, resolved.cls_dropout,
                                    int(cfg.seed), handle)
            record["weights"] = save_run_weights(run_dir, trainer, handle, record, spec)
        record["status"] = "success"
        if main and not resolved.train.keep_checkpoint and trainer.checkpoint_path is not None:
            trainer.checkpoint_path.unlink(missing_ok=True)
    except Interrupted as err:  # the trainer checkpointed the step it stopped at (experiments.interrupts)
        interrupted = err
        steps = err.step if err.step is not None or trainer is None else trainer.state.global_step
        record.update(status="interrupted", reason=str(err), train={**(record.get("train") or {}), "steps": steps})
    except Diverged as err:
        record.update(status="diverged", reason=str(err))
    except torch.cuda.OutOfMemoryError as err:
        record.update(status="oom", reason=str(err).splitlines()[0])
        log.error("%s ran out of memory", run_dir, exc_info=err)
    except ConfigError:
        record.update(status="failed", reason=traceback.format_exc(limit=1))
        if main:
            write_result(run_dir, record)
        tracker.finish(record)
        raise
    except Exception as err:  # noqa: BLE001 - a sweep must record every failure and go on
        record.update(status="failed", reason=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=8)}")
        log.error("%s failed", run_dir, exc_info=err)
    finally:
        segment = time.perf_counter() - started
        record["train"] = {**(record.get("train") or {}), "wall_time_s": earlier_segments_s + segment,
                           "segment_wall_time_s": segment, "peak_memory_mb": _peak_memory_mb()}
    if main:
        write_result(run_dir, record)
    tracker.finish(record)
    reason = (record.get("reason") or "").strip().splitlines()[:1]
    print(f"[{record['status']}] {run_dir / RESULT_FILE}" + (f": {reason[0]}" if reason else ""), flush=True)
    if interrupted is not None:
        interrupted.reported = True
        raise interrupted
    return record


def _build(cfg: DictConfig, resolved: ResolvedRun, run_dir: Path, on_log):
    set_seed(int(cfg.seed))  # before the model and adapters are built (init draws random numbers)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    task = build_task(OmegaConf.to_container(cfg.task, resolve=True))
    resolved.protocol.prepare(task)
    tokenizer = load_tokenizer(model_cfg)
    model = load_model(model_cfg, task.head, num_labels=task.num_labels, dropout=resolved.cls_dropout)
    train_data = task.train_dataset(tokenizer)
    # Under DDP each rank steps through its shard of the batches (accelerate's even_batches).
    batches = math.ceil(math.ceil(len(train_data) / resolved.train.batch_size) / _world_size())
    total = total_optimizer_steps(batches, resolved.train)
    method_cfg = _schedule_in_steps(resolved.method, total)
    handle = apply_method(model, method_cfg, budget=resolved.budget)
    # This rank's device (cuda:<local rank> under DDP), the same singleton state as the Trainer's.
    device = PartialState(cpu=not torch.cuda.is_available()).device

    evaluate, report = resolved.protocol.evaluators(task, tokenizer, resolved.train.eval_batch_size, device)
    trainer = Trainer(
        handle.model, handle, train_data, task.collator(tokenizer), resolved.train, seed=int(cfg.seed), evaluate=evaluate,
        main_metric=task.main_metric, checkpoint_dir=run_dir, on_log=on_log, identity=run_identity_block(cfg),
        report=report,
    )
    if trainer.total_steps != total:
        raise RuntimeError(f"step count mismatch: planned T={total}, trainer T={trainer.total_steps}")
    return trainer, handle, task


def _success_fields(trainer: Trainer, handle, task, state, protocol: Protocol) -> dict[str, Any]:
    ranks = None
    pattern = handle.rank_pattern()
    if pattern is not None:
        ranks = {
            "pattern": pattern,
            "history": state.rank_history,
            "weight_types": {n: list(v) for n, v in handle.weight_types.items()},
            "allocation": state.allocation,  # a rank-adaptive run's proof that it allocated (training.py)
        }
    return {
        "metrics": protocol.metrics(trainer, task.main_metric),
        "params": handle.parameter_counts(),
        "ranks": ranks,
        "train": {"steps": state.global_step, "final_train_loss": state.train_loss, "total_steps": trainer.total_steps,
                  "step_time_s": state.step_time_summary(), "precision": trainer.settings.precision,
                  "tf32": trainer.settings.tf32},
    }
