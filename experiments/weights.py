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
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from adalora.methods import MethodHandle, apply_method, get_kind
from adalora.methods.storage import base_fingerprint, rank_pattern_of, read_safetensors
from experiments.models import load_model

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
    from experiments.training import set_seed  # here: experiments.training imports this module

    set_seed(spec.seed)
    return load_model(spec.model, spec.head, num_labels=spec.num_labels, dropout=spec.cls_dropout)


def build_model(spec: ModelSpec) -> tuple[nn.Module, MethodHandle]:
    """The run's model before training: the base with the method applied (its init is overwritten);
    the model is ``handle.model`` (a kind may wrap the base)."""
    handle = apply_method(build_base(spec), spec.method)
    return handle.model, handle


def weights_path(run_dir: str | os.PathLike, which: str = "final") -> Path:
    """The weights file of ``which`` (final | best) of a run; best may be stored as the final file."""
    if which not in WEIGHT_FILES:
        raise WeightsError(f"which must be one of {sorted(WEIGHT_FILES)}, got {which!r}")
    run_dir = Path(run_dir)
    result = run_dir / "result.json"
    record = json.loads(result.read_text()) if result.is_file() else {}
    block = record.get("weights")
    if not block:
        raise WeightsError(
            f"{run_dir} has no saved weights (result.json has no 'weights' block): runs keep them when "
            "they succeed with trainer.save_model unset (small methods) or true; re-run with force=true"
        )
    entry = block.get(which)
    if entry == "final":
        entry = block["final"]
    if not isinstance(entry, Mapping) or "file" not in entry:
        raise WeightsError(f"{run_dir}: no {which} weights were kept ({entry!r}); trainer.save_best=true keeps them")
    return run_dir / entry["file"]


def load_run(run_dir: str | os.PathLike, which: str = "final") -> LoadedRun:
    """The trained model of a run (final or best weights), on CPU, checked against its base."""
    path = weights_path(run_dir, which)
    tensors, meta = read_weights(path)
    spec = ModelSpec(**meta["spec"])
    model, handle = build_model(spec)
    try:
        handle.load_trained_state(tensors, meta["base_sha256"], str(path))
    except ValueError as err:
        raise WeightsError(f"{err}. Train with trainer.save_model=true to keep the whole model, or restore the "
                           "original versions (result.json 'env')") from err
    model.eval()
    return LoadedRun(model, handle, spec, meta)
