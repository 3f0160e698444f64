"""Orthogonality penalty R(P, Q) that keeps AdaLoRA's P and Q close to orthogonal.

Two forms, because the paper and the code that produced its numbers disagree:

* ``official`` (default): mean over every A and every B matrix of the *non-squared*
  ``||C - I||_F`` with ``C = A Aᵀ`` or ``Bᵀ B`` (loralib ``compute_orth_regu``, PEFT).
* ``paper``: Eq. (4), ``Σ_k ||PᵀP - I||²_F + ||QQᵀ - I||²_F``.

Matrices of the same shape are stacked and handled by one batched matmul, so the penalty
costs a handful of kernels instead of 2n small ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch

ORTH_REG_FORMS = ("official", "paper")


def _gram_minus_identity_norms(mats: Sequence[torch.Tensor], left: bool) -> torch.Tensor:
    """Frobenius norms of ``M Mᵀ - I`` (left) or ``Mᵀ M - I`` for same-shape matrices."""
    stacked = torch.stack(list(mats))
    gram = stacked @ stacked.transpose(1, 2) if left else stacked.transpose(1, 2) @ stacked
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return torch.linalg.matrix_norm(gram - eye, ord="fro")


def orthogonal_regularization(
    a_mats: Iterable[torch.Tensor], b_mats: Iterable[torch.Tensor], form: str = "official"
) -> torch.Tensor:
    """R over all ``lora_A`` (r×d_in, uses A Aᵀ) and ``lora_B`` (d_out×r, uses Bᵀ B) matrices."""
    if form not in ORTH_REG_FORMS:
        raise ValueError(f"orth_reg must be one of {ORTH_REG_FORMS}, got {form!r}")
    groups: dict[tuple[bool, torch.Size], list[torch.Tensor]] = defaultdict(list)
    for mat in a_mats:
        groups[(True, mat.shape)].append(mat)
    for mat in b_mats:
        groups[(False, mat.shape)].append(mat)
    if not groups:
        raise ValueError("orthogonal_regularization needs at least one lora_A or lora_B matrix")
    norms = torch.cat([_gram_minus_identity_norms(mats, left) for (left, _), mats in groups.items()])
    if form == "official":
        return norms.mean()
    return norms.square().sum()
