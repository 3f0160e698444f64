"""Orthogonality penalty R(P, Q) that keeps AdaLoRA's P and Q close to orthogonal.

Two forms for AdaLoRA, because the paper and the code that produced its numbers disagree:

* ``official`` (default): mean over every A and every B matrix of the *non-squared*
  ``||C - I||_F`` with ``C = A Aᵀ`` or ``Bᵀ B`` (loralib ``compute_orth_regu``, PEFT).
* ``paper``: Eq. (4), ``Σ_k ||PᵀP - I||²_F + ||QQᵀ - I||²_F``.

and one for plain LoRA (the paper's Table 5 "LoRA_regu"):

* ``frd``: the official trainer's ``compute_frd_orth_regu`` for ``--lora_type frd``: per matrix,
  the mean over the r(r-1) off-diagonal entries of the absolute cosine between the rows of A
  (or the columns of B), ``|C_ij| / (||a_i|| ||a_j|| + 1e-30)``; then the mean over all A and B.
  It only decorrelates directions, without normalising them. A rank-1 matrix has no pair and
  contributes 0 (the official code divides 0 by 0 there and gets NaN).

Matrices of the same shape are stacked and handled by one batched matmul, so the penalty
costs a handful of kernels instead of 2n small ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch

ORTH_REG_FORMS = ("official", "paper", "frd")
# Added to the product of norms, as in the official frd code, so a zero row (LoRA's B = 0 at
# init) gives a cosine of 0 instead of 0/0.
_FRD_EPS = 1e-30


def _gram_minus_identity_norms(mats: Sequence[torch.Tensor], left: bool) -> torch.Tensor:
    """Frobenius norms of ``M Mᵀ - I`` (left) or ``Mᵀ M - I`` for same-shape matrices."""
    stacked = torch.stack(list(mats))
    gram = stacked @ stacked.transpose(1, 2) if left else stacked.transpose(1, 2) @ stacked
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    return torch.linalg.matrix_norm(gram - eye, ord="fro")


def _offdiag_abs_cosine_means(mats: Sequence[torch.Tensor], left: bool) -> torch.Tensor:
    """Mean |cosine| over the off-diagonal pairs of rows (left: A) or columns (B), per matrix."""
    stacked = torch.stack(list(mats))
    gram = stacked @ stacked.transpose(1, 2) if left else stacked.transpose(1, 2) @ stacked
    r = gram.shape[-1]
    if r == 1:
        return gram.new_zeros(gram.shape[0])  # no pair of directions: nothing to decorrelate
    norms = torch.linalg.vector_norm(stacked, dim=2 if left else 1)
    coef = gram.abs() / (norms.unsqueeze(-1) * norms.unsqueeze(-2) + _FRD_EPS)
    off_diagonal = coef.sum(dim=(-2, -1)) - coef.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
    return off_diagonal / (r * r - r)


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
    per_matrix = _offdiag_abs_cosine_means if form == "frd" else _gram_minus_identity_norms
    values = torch.cat([per_matrix(mats, left) for (left, _), mats in groups.items()])
    if form in ("official", "frd"):
        return values.mean()
    return values.square().sum()
