"""What a trained method keeps, and the safetensors file it goes into (pure torch + safetensors).

Shared by :meth:`MethodHandle.save` / :meth:`MethodHandle.load` (one's own loop) and by
``experiments.weights`` (the harness's ``<run_dir>/weights/*.safetensors``), so the two can never
disagree on what "the trained state" is or how the base model is fingerprinted.

safetensors comes with transformers; ``adalora`` itself depends on torch only, so it is imported
inside the functions that write or read a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adalora.atomic import replacing


def base_fingerprint(model: nn.Module, saved: set[str]) -> str:
    """SHA-256 over name, dtype, shape and bytes of every state entry not in ``saved``.

    A saved adapter stores it so that loading onto another base (another transformers version,
    hub revision or seed of a random-init model) is refused instead of silently wrong.
    """
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


def dump_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Safetensors with JSON-valued metadata, written in place (callers make it atomic)."""
    from safetensors.torch import save_file

    save_file({n: t.contiguous() for n, t in tensors.items()}, str(path),
              metadata={k: json.dumps(v) for k, v in metadata.items()})


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """:func:`dump_safetensors`, atomically (``adalora.atomic.replacing``: complete or absent, a full disk named)."""
    with replacing(path) as tmp:
        dump_safetensors(tmp, tensors, metadata)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON-decoded metadata) of a file written by :func:`write_safetensors`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = {k: json.loads(v) for k, v in (fh.metadata() or {}).items()}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return tensors, meta
