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
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from adalora.methods import MethodHandle, apply_method
from experiments.models import load_model
from experiments.results import replacing

WEIGHTS_DIR = "weights"
WEIGHT_FILES = {"final": f"{WEIGHTS_DIR}/final.safetensors", "best": f"{WEIGHTS_DIR}/best.safetensors"}
FORMAT = "adalora-suite-weights/1"
SMALL_KINDS = ("lora", "adalora", "adapter", "bitfit")


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
        method = {"name": handle.name, "kind": handle.kind, **dataclasses.asdict(handle.settings)}
        return cls(dict(model_cfg), task.head, task.num_labels, cls_dropout, int(seed), method)


def saves_weights(kind: str, save_model: bool | None) -> bool:
    """``trainer.save_model``: null keeps the small methods' weights (not full FT's), true/false all/none."""
    return kind in SMALL_KINDS if save_model is None else bool(save_model)


def method_owned_names(handle: MethodHandle) -> list[str]:
    """Parameters of the method's own layers (everything in them but the wrapped base layer)."""
    names = []
    for module_name, module in handle.adapted.items():
        for name, _ in module.named_parameters():
            if not name.startswith("base_layer."):
                names.append(f"{module_name}.{name}")
    return names


def trained_state(model: nn.Module, handle: MethodHandle) -> dict[str, torch.Tensor]:
    """CPU copies of what the run changed: method-owned parameters and every trained parameter.

    Full FT trains everything, so this is then the whole model (tied weights once, persistent
    buffers included).
    """
    owned = set(method_owned_names(handle))
    state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad or n in owned}
    if handle.kind == "full_ft":
        non_persistent = {f"{m}.{b}".lstrip(".") for m, mod in model.named_modules() for b in mod._non_persistent_buffers_set}
        state.update({n: b.detach().to("cpu", copy=True) for n, b in model.named_buffers() if n not in non_persistent})
    return state


def base_fingerprint(model: nn.Module, saved: set[str]) -> str:
    """SHA-256 over name, dtype, shape and bytes of every state entry not in ``saved``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in saved:
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def rank_pattern_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, int] | None:
    """Kept triplets per SVD matrix: the non-zero λ (lora_E) of each, rank 0 allowed."""
    pattern = {n.removesuffix(".lora_E"): int(torch.count_nonzero(t)) for n, t in tensors.items() if n.endswith(".lora_E")}
    return pattern or None


# ---------------------------------------------------------------------------- the file
def write_weights(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Safetensors with JSON-valued metadata, written atomically (temp file + ``os.replace``)."""
    with replacing(path) as tmp:  # a failed write leaves no temp file; a full disk is named (NoSpaceLeft)
        save_file({n: t.contiguous() for n, t in tensors.items()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in metadata.items()})
        os.chmod(tmp, 0o644)  # a weights file is as readable as result.json's readers


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = {k: json.loads(v) for k, v in (fh.metadata() or {}).items()}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as err:  # the library's message names no file
        raise WeightsError(f"{path} cannot be read ({type(err).__name__}: {err}): the file is truncated, damaged "
                           "or not safetensors; re-run the run with force=true to write it again") from err
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a run weights file of format {FORMAT} (metadata format={meta.get('format')!r})")
    return tensors, meta


def _write_one(run_dir: Path, which: str, tensors: Mapping[str, torch.Tensor], step: int, metrics: Mapping,
               spec: ModelSpec, fingerprint: str) -> dict[str, Any]:
    rel = WEIGHT_FILES[which]
    meta = {"format": FORMAT, "which": which, "step": step, "metrics": dict(metrics),
            "spec": dataclasses.asdict(spec), "rank_pattern": rank_pattern_of(tensors), "base_sha256": fingerprint}
    write_weights(run_dir / rel, tensors, meta)
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
                                                 metrics["final"], spec, fingerprint)}
    stale = run_dir / WEIGHT_FILES["best"]
    best_step = metrics["best"].get("step")
    if not settings.save_best:
        block["best"] = None
    elif best_step == metrics["final"].get("step"):
        block["best"] = "final"  # the best evaluation is the final one: same weights, one file
    elif trainer.best is not None and trainer.best["step"] == best_step:
        block["best"] = _write_one(run_dir, "best", trainer.best["tensors"], best_step, metrics["best"], spec,
                                   fingerprint)
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
    """The run's model before training: the base with the method applied (its init is overwritten)."""
    model = build_base(spec)
    return model, apply_method(model, spec.method)


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
    tensors, meta = read_weights(weights_path(run_dir, which))
    spec = ModelSpec(**meta["spec"])
    model, handle = build_model(spec)
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise WeightsError(f"weights hold tensors the rebuilt model lacks: {result.unexpected_keys[:5]}")
    if base_fingerprint(model, set(tensors)) != meta["base_sha256"]:
        raise WeightsError(
            f"the base model rebuilt for {run_dir} differs from the one it was trained on (SHA-256 of the "
            "frozen weights): another transformers/torch version, hub revision or model package. Train "
            "with trainer.save_model=true to keep the whole model, or restore the original versions "
            "(result.json 'env')"
        )
    model.eval()
    return LoadedRun(model, handle, spec, meta)
