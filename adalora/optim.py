"""The optimiser every method trains with: AdamW with multi-tensor kernels.

PyTorch's AdamW loops over the parameters one tensor at a time on a CPU (about ten small
kernels per tensor), and AdaLoRA has one more trainable tensor (Λ) per adapted matrix than LoRA,
so its optimiser step grows with the number of matrices. ``foreach=True`` updates all tensors with
one ``_foreach_*`` call per arithmetic step instead; on a CPU it gives bit-identical results to
the per-tensor loop (tests/test_launch_overhead.py). On a GPU the fused kernel does the whole
update in one launch per chunk of tensors; it orders a few floating-point operations
differently, so GPU results are not bit-identical to the per-tensor loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def make_adamw(params: Iterable[Any], lr: float, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with ``fused=True`` when every parameter is on CUDA, else ``foreach=True``."""
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    if tensors and all(t.device.type == "cuda" for t in tensors):
        return torch.optim.AdamW(params, lr=lr, fused=True, **kwargs)
    return torch.optim.AdamW(params, lr=lr, foreach=True, **kwargs)
