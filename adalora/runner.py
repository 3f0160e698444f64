"""One run = one result directory: config → model + method + task → train → ``result.json``.

Importable without Hydra (tests call :func:`run` with a composed config). The run is
idempotent: a directory whose record says ``success`` is skipped unless ``force=true``;
one with a checkpoint resumes from it; a failed one is re-run. Every outcome, failures
included, ends in a ``result.json`` with a status and a reason, so a sweep never loses a run.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import subprocess
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from adalora.budget import BUDGET_LEVELS
from adalora.methods import METHODS, AdaLoRASettings, AdapterSettings, LoRASettings, apply_method
from adalora.models import load_model, load_tokenizer
from adalora.results import RESULT_FILE, is_success, write_result
from adalora.tasks import build_task
from adalora.training import Diverged, Trainer, TrainSettings, set_seed, total_optimizer_steps

PROJECT_ROOT = Path(__file__).resolve().parents[1]
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
    except TypeError as err:
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
def run(cfg: DictConfig, on_log=None) -> dict[str, Any]:
    """Execute (or skip) one run and return its record."""
    register_resolvers()
    run_dir = Path(cfg.run_dir)
    if is_success(run_dir) and not cfg.get("force", False):
        print(f"[skip] {run_dir} already succeeded (force=true to re-run)")
        from adalora.results import read_result

        return read_result(run_dir)
    resolved = resolve(cfg)
    info = {
        "sweep": cfg.sweep_name, "task": cfg.task.name, "family": cfg.task.family, "method": cfg.method.name,
        "budget": effective_budget(cfg.method.name, cfg.budget.name), "seed": int(cfg.seed), "model": cfg.model.name,
    }
    record: dict[str, Any] = {
        "status": "running", "reason": None, "run": info, "metrics": None, "params": None, "ranks": None,
        "train": None, "config": OmegaConf.to_container(cfg, resolve=True), "env": _environment(),
    }
    write_result(run_dir, record)
    started = time.perf_counter()
    try:
        trainer, handle, task = _build(cfg, resolved, run_dir, on_log)
        resumed = trainer.load_checkpoint()
        if resumed:
            print(f"[resume] {run_dir} from step {trainer.state.global_step}")
        state = trainer.train()
        record.update(_success_fields(trainer, handle, task, state))
        record["status"] = "success"
    except Diverged as err:
        record.update(status="diverged", reason=str(err))
    except torch.cuda.OutOfMemoryError as err:
        record.update(status="oom", reason=str(err).splitlines()[0])
    except ConfigError:
        record.update(status="failed", reason=traceback.format_exc(limit=1))
        write_result(run_dir, record)
        raise
    except Exception as err:  # noqa: BLE001 - a sweep must record every failure and go on
        record.update(status="failed", reason=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=8)}")
    finally:
        record["train"] = {**(record.get("train") or {}), "wall_time_s": time.perf_counter() - started,
                           "peak_memory_mb": _peak_memory_mb()}
    write_result(run_dir, record)
    print(f"[{record['status']}] {run_dir / RESULT_FILE}")
    return record


def _build(cfg: DictConfig, resolved: ResolvedRun, run_dir: Path, on_log):
    set_seed(int(cfg.seed))  # before the model and adapters are built (init draws random numbers)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    task = build_task(OmegaConf.to_container(cfg.task, resolve=True))
    tokenizer = load_tokenizer(model_cfg)
    model = load_model(model_cfg, task.head, num_labels=task.num_labels, dropout=resolved.cls_dropout)
    train_data = task.train_dataset(tokenizer)
    batches = math.ceil(len(train_data) / resolved.train.batch_size)
    total = total_optimizer_steps(batches, resolved.train)
    method_cfg = _schedule_in_steps(resolved.method, total)
    handle = apply_method(model, method_cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

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
        "train": {"steps": state.global_step, "final_train_loss": state.train_loss, "total_steps": trainer.total_steps},
    }
