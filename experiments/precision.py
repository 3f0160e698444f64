"""``trainer.precision`` and ``trainer.tf32``: the accelerate set-up of a run's arithmetic.

fp32 is the default because the official scripts trained in fp32; ``bf16`` / ``fp16`` run the
model's forward under autocast (accelerate), while the penalty, the optimiser's fp32 master
weights and the allocator stay in fp32. ``tf32`` allows TF32 matmuls on Ampere and newer GPUs.
"""

from __future__ import annotations

import contextlib

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

# trainer.precision -> accelerate's mixed_precision.
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def check_precision(precision: str) -> None:
    if precision not in MIXED_PRECISION:
        raise ValueError(f"trainer.precision must be one of {sorted(MIXED_PRECISION)}, got {precision!r}")


def make_accelerator(grad_accum: int, precision: str, tf32: bool) -> Accelerator:
    """An Accelerator with the run's mixed precision; TF32 set as the run asks (process-wide).

    accelerate keeps its state in a process-wide singleton that refuses a different
    ``mixed_precision`` once set; runs executed one after another in one process (tests, a
    serial sweep) may differ in precision, so the singleton is reset when it does.
    """
    check_precision(precision)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    # cpu=True on a machine without CUDA: accelerate only sets up gloo DDP for torchrun when told.
    kwargs = {"gradient_accumulation_steps": grad_accum, "cpu": not torch.cuda.is_available(),
              "mixed_precision": MIXED_PRECISION[precision]}
    try:
        return Accelerator(**kwargs)
    except ValueError:  # "AcceleratorState has already been initialized and cannot be changed"
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)


def autocast_as_trained(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward's arithmetic of a run that trained with ``precision``: its evaluations ran under
    accelerate's autocast (the prepared model's forward), so a re-evaluation of its weights must run under
    the same autocast to reproduce the recorded numbers; fp32 needs none."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
