"""One run = one result directory. Read it top to bottom: resolve → lock → decide → record → build → train.

1. **resolve**: ``experiments.spec.resolve(cfg)``: the typed, checked :class:`RunSpec`; nothing is created
   on disk for a configuration that cannot run.
2. **lock**: an exclusive lock on ``<run_dir>/.lock``; a second job on a busy directory does not start.
3. **decide**: skip, resume, start or refuse (``experiments.decision``: a pure rule table over what the
   directory holds); unreadable records and checkpoints are moved aside (``*.corrupt-<time>``).
4. **record**: ``result.json`` says ``running`` before anything is built (``experiments.results``).
5. **build**: task, tokenizer, model, the method's layers, the trainer: all from the spec.
6. **train**: every outcome, failures and SIGINT/SIGTERM (``interrupted``) included, ends in a record with
   a status and a reason, so a sweep never loses a run.

Importable without Hydra (tests call :func:`run` with a composed config).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from adalora.methods import apply_method
from experiments import interrupts
from experiments.decision import Action, RunConflict, settle
from experiments.devices import environment, is_main_process, peak_memory_mb, reset_peak_memory, world_size
from experiments.identity import code_version, external_code
from experiments.interrupts import Interrupted
from experiments.models import load_model, load_tokenizer
from experiments.protocol import best_eval as best_eval  # re-exported: its home was here
from experiments.results import RESULT_FILE, remove_stale_temps, write_result
from experiments.run_paths import LOCK_FILE, run_lock
from experiments.spec import PROJECT_ROOT as PROJECT_ROOT  # re-exported for the tests' fixtures
from experiments.spec import (
    ConfigError,
    RunSpec,
    effective_budget,
    register_resolvers,
    resolve,
    run_dir_of,
    total_batches,
)
from experiments.spec import schedule_in_steps as _schedule_in_steps  # noqa: F401 - tests' import of it
from experiments.sweeps import LEDGER_ENV, record_outcome
from experiments.tasks import build_task
from experiments.tracking import Tracker, make_tracker
from experiments.training import CHECKPOINT_FILE, Diverged, Trainer, set_seed, total_optimizer_steps
from experiments.weights import ModelSpec, save_run_weights

__all__ = ["LOCK_FILE", "PROJECT_ROOT", "ConfigError", "RunConflict", "best_eval", "effective_budget",
           "register_resolvers", "resolve", "run", "run_identity_block"]
log = logging.getLogger("experiments.run")  # Hydra sends it to the console and <run_dir>/run.log


def run(cfg, on_log: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Execute (or skip) one run and return its record. Inside a sweep (``ADALORA_SWEEP_LEDGER`` set) every
    outcome goes to the sweep's ledger and no error escapes; a single run raises a configuration error."""
    register_resolvers()
    main, run_dir = is_main_process(), run_dir_of(cfg)
    try:
        with interrupts.handled():
            spec = resolve(cfg)  # 1. resolve
            with run_lock(run_dir, enabled=main) as acquired:  # 2. lock
                if not acquired:
                    print(f"[busy] {run_dir} is being run by another job; not starting it twice")
                    record_outcome(run_dir, "busy", None)
                    return {"status": "running"}
                record, skipped = _decide_and_run(spec, on_log, main)
    except Interrupted as err:
        if main:
            record_outcome(run_dir, "failed", "interrupted", str(err))
        raise
    except Exception as err:  # noqa: BLE001 - a sweep records every failure and goes on
        reason = f"{type(err).__name__}: {err}"
        if main:
            record_outcome(run_dir, "failed", "failed", reason)
        if not os.environ.get(LEDGER_ENV):
            raise
        print(f"[failed] {run_dir}: {reason}", flush=True)
        log.error("%s failed", run_dir, exc_info=err)
        return {"status": "failed", "reason": reason}
    if main and skipped:
        record_outcome(run_dir, "skipped", "success")
    elif main:
        record_outcome(run_dir, "done" if record["status"] == "success" else "failed", record["status"],
                       record.get("reason"))
    return record


def _decide_and_run(spec: RunSpec, on_log, main: bool) -> tuple[dict[str, Any], bool]:
    """(the record, whether the run was skipped as already finished)."""
    if main:
        for stale in remove_stale_temps(spec.run_dir):  # a killed writer's; we hold the lock
            print(f"[cleanup] removed the stale temp file {stale}", flush=True)
    block = spec.identity_block()
    action, record = settle(spec.run_dir, block, spec.force, main)  # 3. decide
    if action is Action.SKIP:
        print(f"[skip] {spec.run_dir} already succeeded with this configuration (force=true to re-run)")
        return record, True
    return _train(spec, block, on_log, main), False


def _train(spec: RunSpec, block: dict[str, Any], on_log, main: bool) -> dict[str, Any]:
    """4. record ``running``, 5. build, 6. train; every outcome is written (rank 0) and returned."""
    record: dict[str, Any] = {
        "status": "running", "reason": None, "run": spec.run_info(), "metrics": None, "params": None, "ranks": None,
        "train": None, "config": dict(spec.config), "overrides": spec.overrides, "identity": block,
        "env": {**environment(), **code_version(), "external_code": external_code(spec.method.get("module"))},
    }
    if main:
        write_result(spec.run_dir, record)  # 4. record
    reset_peak_memory()
    started, attempt = time.perf_counter(), _Attempt()
    try:
        _attempt(spec, block, record, attempt, on_log, main)
    finally:
        segment = time.perf_counter() - started
        record["train"] = {**(record.get("train") or {}), "wall_time_s": attempt.earlier_s + segment,
                           "segment_wall_time_s": segment, "peak_memory_mb": peak_memory_mb(),
                           "settings": dataclasses.asdict(spec.train), **_world(attempt.trainer)}
        if main:
            write_result(spec.run_dir, record)
        attempt.tracker.finish(record)
    reason = (record.get("reason") or "").strip().splitlines()[:1]
    print(f"[{record['status']}] {spec.run_dir / RESULT_FILE}" + (f": {reason[0]}" if reason else ""), flush=True)
    if attempt.interrupted is not None:
        attempt.interrupted.reported = True
        raise attempt.interrupted
    return record


@dataclasses.dataclass
class _Attempt:
    """What one training attempt leaves for its record: the tracker, the trainer, an interruption."""

    tracker: Tracker = dataclasses.field(default_factory=Tracker)
    trainer: Trainer | None = None
    earlier_s: float = 0.0  # training time a resumed checkpoint had accumulated
    interrupted: Interrupted | None = None


def _attempt(spec: RunSpec, block: dict, record: dict, attempt: _Attempt, on_log, main: bool) -> None:
    """Build and train, turning every way it ends into the record's status and reason."""
    try:
        if main:
            attempt.tracker = make_tracker(spec.logger, spec.run_info(), dict(spec.config), spec.run_dir,
                                           resume=(spec.run_dir / CHECKPOINT_FILE).exists())

        def log_payload(payload: dict[str, Any]) -> None:
            attempt.tracker.log(payload)
            if on_log is not None:
                on_log(payload)

        trainer, handle, task = build(spec, spec.run_dir, log_payload, block)  # 5. build
        attempt.trainer = trainer
        if trainer.load_checkpoint():
            attempt.earlier_s = trainer.state.elapsed_s
            print(f"[resume] {spec.run_dir} from step {trainer.state.global_step}")
        state = trainer.train()  # 6. train
        record.update(_success_fields(trainer, handle, task, state, spec))
        if main:  # the trained weights beside result.json (experiments/weights.py)
            model_spec = ModelSpec.of_run(dict(spec.model), task, spec.cls_dropout, spec.seed, handle)
            record["weights"] = save_run_weights(spec.run_dir, trainer, handle, record, model_spec)
        record["status"] = "success"
        if main and not spec.train.keep_checkpoint and trainer.checkpoint_path is not None:
            trainer.checkpoint_path.unlink(missing_ok=True)
    except Interrupted as err:  # the trainer checkpointed the step it stopped at (experiments.interrupts)
        attempt.interrupted = err
        steps = err.step if err.step is not None or attempt.trainer is None else attempt.trainer.state.global_step
        record.update(status="interrupted", reason=str(err), train={**(record.get("train") or {}), "steps": steps})
    except Diverged as err:
        record.update(status="diverged", reason=str(err))
    except torch.cuda.OutOfMemoryError as err:
        record.update(status="oom", reason=str(err).splitlines()[0])
        log.error("%s ran out of memory", spec.run_dir, exc_info=err)
    except ConfigError:
        record.update(status="failed", reason=traceback.format_exc(limit=1))
        raise
    except Exception as err:  # noqa: BLE001 - a sweep must record every failure and go on
        record.update(status="failed", reason=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=8)}")
        log.error("%s failed", spec.run_dir, exc_info=err)


def build(spec: RunSpec, run_dir: Path, on_log, identity: dict[str, Any] | None = None):
    """Task, tokenizer, model, the method's layers and the trainer, all from ``spec`` (seeded first: inits draw)."""
    set_seed(spec.seed)
    task = build_task(dict(spec.task))
    spec.protocol.prepare(task)
    tokenizer = load_tokenizer(dict(spec.model))
    model = load_model(dict(spec.model), task.head, num_labels=task.num_labels, dropout=spec.cls_dropout)
    train_data = task.train_dataset(tokenizer)
    total = total_optimizer_steps(total_batches(len(train_data), spec.train.batch_size, world_size()), spec.train)
    handle = apply_method(model, spec.schedule(total), budget=spec.budget)
    # This rank's device (cuda:<local rank> under DDP), the same singleton state as the Trainer's.
    device = PartialState(cpu=not torch.cuda.is_available()).device
    evaluate, report = spec.protocol.evaluators(task, tokenizer, spec.train.eval_batch_size, device)
    trainer = Trainer(handle.model, handle, train_data, task.collator(tokenizer), spec.train, seed=spec.seed,
                      evaluate=evaluate, main_metric=task.main_metric, checkpoint_dir=run_dir, on_log=on_log,
                      identity=identity or spec.identity_block(), report=report)
    if trainer.total_steps != total:
        raise RuntimeError(f"step count mismatch: planned T={total}, trainer T={trainer.total_steps}")
    return trainer, handle, task


def _build(cfg, spec: RunSpec, run_dir: Path, on_log):
    """The call the tests of other modules make (``_build(cfg, resolve(cfg), ...)``): :func:`build` of the spec."""
    return build(spec, run_dir, on_log)


def run_identity_block(cfg) -> dict[str, Any]:
    """The identity (hash, seedless group hash, keys) of this run's configuration and data content."""
    register_resolvers()
    return resolve(cfg).identity_block()


def _success_fields(trainer: Trainer, handle, task, state, spec: RunSpec) -> dict[str, Any]:
    pattern = handle.rank_pattern()
    ranks = None if pattern is None else {  # allocation: a rank-adaptive run's proof that it allocated
        "pattern": pattern, "history": state.rank_history, "allocation": state.allocation,
        "weight_types": {n: list(v) for n, v in handle.weight_types.items()}}
    return {
        "metrics": spec.protocol.metrics(trainer, task.main_metric), "params": handle.parameter_counts(), "ranks": ranks,
        "train": {"steps": state.global_step, "final_train_loss": state.train_loss, "total_steps": trainer.total_steps,
                  "step_time_s": state.step_time_summary(), "precision": trainer.settings.precision,
                  "tf32": trainer.settings.tf32, "task": task.ran()},
    }


def _world(trainer: Trainer | None) -> dict[str, int]:
    """``world_size`` (processes that trained) and ``devices`` (GPUs: one per process; 0 on CPU)."""
    world = trainer.accelerator.num_processes if trainer is not None else world_size()
    return {"world_size": world, "devices": world if torch.cuda.is_available() else 0}


