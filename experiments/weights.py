"""The trained weights of a run: what is kept, the file beside ``result.json``, and the way back.

A run keeps *what differs from its base model*: every parameter the method owns (LoRA's A and B,
AdaLoRA's P, Λ, Q, the adapters; Prune-LoRA's frozen 0/1 gates included, which a
``requires_grad`` filter would miss) and every trained parameter (the task head, BitFit's
biases; everything for full fine-tuning). It is written as safetensors with the facts needed
to rebuild the model in its metadata (the model config, the task head, the seed, the resolved
method config, the rank pattern).

The base model is *not* copied. Hub and package backbones are reloaded from their source;
tiny models are random-init, and their init is a pure function of the seed (the runner seeds
before building the model, and nothing between the seed and the model draws random numbers),
so they are rebuilt by replaying that. Either way the file stores a SHA-256 of every state
entry it does not hold, and :func:`load_run` refuses a rebuilt base whose hash differs (another
transformers version or hub revision would silently change the model otherwise).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError
from torch import nn

from adalora import trust
from adalora.methods import MethodHandle, apply_method, get_kind
from adalora.methods.storage import base_fingerprint, rank_pattern_of, read_safetensors
from experiments.identity import PROJECT_ROOT
from experiments.models import load_model
from experiments.results import RESULT_FILE
from experiments.seeding import set_seed

WEIGHTS_DIR = "weights"
WEIGHT_FILES = {"final": f"{WEIGHTS_DIR}/final.safetensors", "best": f"{WEIGHTS_DIR}/best.safetensors"}
FORMAT = "adalora-suite-weights/1"


class WeightsError(RuntimeError):
    """A run's weights are absent, or do not fit the model rebuilt from its record."""


@dataclasses.dataclass
class ModelSpec:
    """Everything needed to rebuild the adapted model of a run before its weights are loaded."""

    model: dict[str, Any]  # the model config (conf/model/*.yaml, resolved)
    head: str
    num_labels: int | None
    cls_dropout: float | None
    seed: int
    method: dict[str, Any]  # name, kind and the fully resolved settings (AdaLoRA's tinit/tfinal in steps)

    @classmethod
    def of_run(cls, model_cfg: Mapping, task, cls_dropout: float | None, seed: int, handle: MethodHandle) -> ModelSpec:
        return cls(dict(model_cfg), task.head, task.num_labels, cls_dropout, int(seed), handle.config())


def saves_weights(kind: str, save_model: bool | None) -> bool:
    """``trainer.save_model``: null keeps the weights of kinds that say so (``saves_weights_by_default``:
    the small methods, not full FT), true/false all/none."""
    return get_kind(kind).saves_weights_by_default if save_model is None else bool(save_model)


def trained_state(model: nn.Module, handle: MethodHandle) -> dict[str, torch.Tensor]:
    """CPU copies of what the run changed (``MethodHandle.trained_state``) of ``model``, the unwrapped
    training model (``handle.model``)."""
    return handle.trained_state(model)


# ---------------------------------------------------------------------------- the file
def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    try:
        tensors, meta = read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as err:  # the library's message names no file
        raise WeightsError(f"{path} cannot be read ({type(err).__name__}: {err}): the file is truncated, damaged "
                           "or not safetensors; re-run the run with force=true to write it again") from err
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a run weights file of format {FORMAT} (metadata format={meta.get('format')!r})")
    return tensors, meta


def _write_one(run_dir: Path, which: str, tensors: Mapping[str, torch.Tensor], step: int, metrics: Mapping,
               spec: ModelSpec, fingerprint: str, handle: MethodHandle) -> dict[str, Any]:
    rel = WEIGHT_FILES[which]
    meta = {"format": FORMAT, "which": which, "step": step, "metrics": dict(metrics),
            "spec": dataclasses.asdict(spec), "rank_pattern": rank_pattern_of(tensors), "base_sha256": fingerprint}
    handle.write_trained_state(run_dir / rel, tensors, meta)  # the kind's format (PEFT's beside it, kind peft)
    return {"file": rel, "step": step, "bytes": (run_dir / rel).stat().st_size, "tensors": len(tensors),
            "parameters": sum(t.numel() for t in tensors.values())}


def save_run_weights(run_dir: str | os.PathLike, trainer, handle: MethodHandle, record: Mapping[str, Any],
                     spec: ModelSpec) -> dict[str, Any] | None:
    """Write the final weights (and the best evaluation's, if they differ) of a finished run.

    Returns the ``weights`` block of ``result.json`` (files, steps, sizes), or None when
    ``trainer.save_model`` says this method's weights are not kept.
    """
    settings, run_dir = trainer.settings, Path(run_dir)
    if not saves_weights(handle.kind, settings.save_model):
        for rel in WEIGHT_FILES.values():  # a forced re-run must not leave an earlier run's weights behind
            (run_dir / rel).unlink(missing_ok=True)
        return None
    model = trainer.accelerator.unwrap_model(trainer.model)
    final = trained_state(model, handle)
    fingerprint = base_fingerprint(model, set(final))
    metrics = record["metrics"]
    block: dict[str, Any] = {"format": FORMAT, "base_sha256": fingerprint,
                             "final": _write_one(run_dir, "final", final, trainer.state.global_step,
                                                 metrics["final"], spec, fingerprint, handle)}
    stale = run_dir / WEIGHT_FILES["best"]
    best_step = metrics["best"].get("step")
    if not settings.save_best:
        block["best"] = None
    elif best_step == metrics["final"].get("step"):
        block["best"] = "final"  # the best evaluation is the final one: same weights, one file
    elif trainer.best is not None and trainer.best["step"] == best_step:
        block["best"] = _write_one(run_dir, "best", trainer.best["tensors"], best_step, metrics["best"], spec,
                                   fingerprint, handle)
        stale = None
    else:
        seen = None if trainer.best is None else trainer.best["step"]
        block["best"] = {"missing": f"no snapshot of the step-{best_step} evaluation (the training loop kept step {seen})"}
    if stale is not None:
        stale.unlink(missing_ok=True)  # from an earlier, forced run of this directory
    return block


# ---------------------------------------------------------------------------- the way back
@dataclasses.dataclass
class LoadedRun:
    model: nn.Module
    handle: MethodHandle
    spec: ModelSpec
    meta: dict[str, Any]


def build_base(spec: ModelSpec) -> nn.Module:
    """The run's backbone and freshly initialised task head, as the runner builds it (seed first)."""
    set_seed(spec.seed)
    return load_model(spec.model, spec.head, num_labels=spec.num_labels, dropout=spec.cls_dropout)


def build_model(spec: ModelSpec) -> tuple[nn.Module, MethodHandle]:
    """The run's model before training: the base with the method applied (its init is overwritten);
    the model is ``handle.model`` (a kind may wrap the base)."""
    handle = apply_method(build_base(spec), spec.method)
    return handle.model, handle


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``result.json`` of ``run_dir`` ({} when there is none), refused with its path when unreadable."""
    result = Path(run_dir) / RESULT_FILE
    if not result.is_file():
        return {}
    try:
        record = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WeightsError(f"{result} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(record, dict):
        raise WeightsError(f"{result} is not a JSON object; it is not a run record")
    return record


def run_file(run_dir: str | os.PathLike, rel: Any, what: str) -> Path:
    """The file ``rel`` that a run's record names (its ``what``), which must lie inside ``run_dir``.

    A record travels with its folder, so it may say anything: an absolute path, a ``../x`` or a
    symlink out of the folder would make a command read a file of someone else's choosing.
    """
    run_dir = Path(run_dir)
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise WeightsError(f"{run_dir / RESULT_FILE} names {what}={rel!r}: a run's files are relative paths inside "
                           f"its directory; put back the record's own value (one of {sorted(WEIGHT_FILES.values())}) "
                           "or re-run with force=true")
    path = run_dir / rel
    check_inside(run_dir, path)
    return path


def check_inside(run_dir: str | os.PathLike, path: Path) -> None:
    """Refuse ``path`` (and, for a folder, everything in it) when it resolves outside ``run_dir``."""
    root = Path(run_dir).resolve()
    for entry in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else ())]:
        target = entry.resolve()
        if not target.is_relative_to(root):
            raise WeightsError(f"{entry} resolves to {target}, outside the run directory {run_dir}; a command reads "
                               "only files inside a run (no symlinks out of it): copy the file into the run instead")


def _weights_entry(run_dir: Path, record: Mapping[str, Any], which: str) -> Mapping[str, Any]:
    """The ``weights.<which>`` block of a record (``best`` may be stored as the final file)."""
    if which not in WEIGHT_FILES:
        raise WeightsError(f"which must be one of {sorted(WEIGHT_FILES)}, got {which!r}")
    block = record.get("weights")
    if not block or not isinstance(block, Mapping):
        raise WeightsError(
            f"{run_dir} has no saved weights (result.json has no 'weights' block): runs keep them when "
            "they succeed with trainer.save_model unset (small methods) or true; re-run with force=true"
        )
    entry = block.get(which)
    if entry == "final":
        entry = block.get("final")
    if not isinstance(entry, Mapping) or "file" not in entry:
        raise WeightsError(f"{run_dir}: no {which} weights were kept ({entry!r}); trainer.save_best=true keeps them")
    return entry


def weights_path(run_dir: str | os.PathLike, which: str = "final") -> Path:
    """The weights file of ``which`` (final | best) of a run, checked to lie inside the run directory."""
    entry = _weights_entry(Path(run_dir), read_record(run_dir), which)
    return run_file(run_dir, entry["file"], f"weights.{which}.file")


def _spec_of(path: Path, meta: Mapping[str, Any]) -> ModelSpec:
    try:
        spec = ModelSpec(**meta["spec"])
        if not isinstance(spec.model, dict) or not isinstance(spec.method, dict):
            raise TypeError("spec.model and spec.method must be mappings")
        return spec
    except (KeyError, TypeError) as err:
        raise WeightsError(f"{path} holds no valid 'spec' in its metadata ({type(err).__name__}: {err}); "
                           "it was not written by a run of this suite: re-run with force=true") from err


def _describe(method: Any, seed: Any, model: Any) -> str:
    return f"method {method!r}, seed {seed!r}, model {model!r}"


def check_matches_record(path: Path, spec: ModelSpec, meta: Mapping[str, Any], record: Mapping[str, Any],
                         entry: Mapping[str, Any]) -> None:
    """Refuse weights that belong to another run: the file's own spec (method, seed, model), its step and
    its size must be the ones the record states, before anything is built from it."""
    run = record.get("run") if isinstance(record.get("run"), Mapping) else {}
    theirs = (spec.method.get("name"), spec.seed, spec.model.get("name"))
    ours = (run.get("method"), run.get("seed"), run.get("model"))
    if any(r is not None and r != t for t, r in zip(theirs, ours, strict=True)):  # what the record states
        raise WeightsError(f"{path} holds the weights of another run ({_describe(*theirs)}) but {RESULT_FILE} "
                           f"records {_describe(*ours)}; put back this run's own weights, or re-run it with force=true")
    facts = {"step": meta.get("step"), "bytes": path.stat().st_size}
    differ = {k: (v, entry.get(k)) for k, v in facts.items() if entry.get(k) is not None and v != entry.get(k)}
    if differ:
        said = ", ".join(f"{k} {v!r} (recorded {r!r})" for k, (v, r) in differ.items())
        raise WeightsError(f"{path} is not the file {RESULT_FILE} records: {said}; put back this run's own weights, "
                           "or re-run it with force=true")


def _check_parameters(path: Path, handle: MethodHandle, entry: Mapping[str, Any]) -> None:
    """The loaded model holds as many trained parameters as the record says the run saved."""
    count = sum(t.numel() for t in handle.trained_state().values())
    if entry.get("parameters") is not None and count != entry["parameters"]:
        raise WeightsError(f"{path} rebuilds a model with {count} trained parameters, but {RESULT_FILE} records "
                           f"{entry['parameters']}; put back this run's own weights, or re-run it with force=true")


@functools.cache
def trust_suite_config() -> None:
    """Register with :mod:`adalora.trust` the model packages and method modules that the suite's own
    ``conf/model`` and ``conf/method`` files name: they are the user's configuration, so a run of
    ``model=minilm`` re-evaluates in a new process without ``ADALORA_TRUST_MODULES``."""
    for folder, key in (("model", "package"), ("method", "module")):
        for path in sorted((PROJECT_ROOT / "conf" / folder).glob("*.yaml")):
            value = OmegaConf.load(path).get(key)
            if isinstance(value, str) and value:
                trust.register(value)


def load_run(run_dir: str | os.PathLike, which: str = "final") -> LoadedRun:
    """The trained model of a run (final or best weights), on CPU, checked against its record and base.

    Every file read resolves inside ``run_dir``, the weights must be the record's (method, seed,
    model, step, size, parameter count), and the spec they carry is data: a module or model
    package it names is imported only if the user allowed it (:mod:`adalora.trust`).
    """
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    entry = _weights_entry(run_dir, record, which)
    path = run_file(run_dir, entry["file"], f"weights.{which}.file")
    check_inside(run_dir, run_dir / WEIGHTS_DIR)  # the folder beside the file too (a PEFT adapter)
    tensors, meta = read_weights(path)
    spec = _spec_of(path, meta)
    check_matches_record(path, spec, meta, record, entry)
    trust_suite_config()
    with trust.reading(str(path)):
        model, handle = build_model(spec)
    try:
        handle.load_trained_state(tensors, meta.get("base_sha256"), str(path))
    except ValueError as err:
        hint = ("train with trainer.save_model=true to keep the whole model, or restore the original versions "
                "(result.json 'env')") if "base model differs" in str(err) else "re-run with force=true"
        raise WeightsError(f"{err}; {hint}") from err
    _check_parameters(path, handle, entry)
    model.eval()
    return LoadedRun(model, handle, spec, meta)
