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
costs a handful of kernels instead of 2n small ones; in the closed-form path below, the r x r
grams of all shape groups (AdaLoRA gives every matrix the same r) then share one subtraction of
I, one norm and one gradient coefficient.

With ``exact_rounding=False`` (the default off a CPU, see ``adalora.layers``) the official and
paper forms take a closed-form backward: autograd would hand each A and B its slice of the
stacked gradient and add it to the task-loss gradient with one kernel per matrix; instead the
penalty's gradient, ``∂‖G‖_F/∂M = 2 G M / ‖G‖_F`` (A: G = AAᵀ − I; B: ``2 M G / ‖G‖_F``, G = BᵀB − I),
is computed per shape group and added to every ``.grad`` with one multi-tensor add once the
whole backward pass has run. It is the same gradient up to rounding (tests/test_fused_path.py).
Under ``torch.distributed`` (DDP reduces gradients from per-parameter hooks) the closed-form
gradient goes through autograd instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from adalora.grouping import group_by
from adalora.layers import exact_rounding_on

ORTH_REG_FORMS = ("official", "paper", "frd")
# Added to the product of norms, as in the official frd code, so a zero row (LoRA's B = 0 at
# init) gives a cosine of 0 instead of 0/0.
_FRD_EPS = 1e-30


def _gram(stacked: torch.Tensor, left: bool) -> torch.Tensor:
    """``M Mᵀ`` (left: the rows of A) or ``Mᵀ M`` (the columns of B) for a stack of same-shape matrices."""
    return torch.bmm(stacked, stacked.transpose(1, 2)) if left else torch.bmm(stacked.transpose(1, 2), stacked)


def _minus_identity(gram: torch.Tensor) -> torch.Tensor:
    return gram - torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)


def _gram_minus_identity_norms(mats: Sequence[torch.Tensor], left: bool) -> torch.Tensor:
    """Frobenius norms of ``M Mᵀ - I`` (left) or ``Mᵀ M - I`` for same-shape matrices."""
    return torch.linalg.matrix_norm(_minus_identity(_gram(torch.stack(list(mats)), left)), ord="fro")


def _offdiag_abs_cosine_means(mats: Sequence[torch.Tensor], left: bool) -> torch.Tensor:
    """Mean |cosine| over the off-diagonal pairs of rows (left: A) or columns (B), per matrix."""
    stacked = torch.stack(list(mats))
    gram = _gram(stacked, left)
    r = gram.shape[-1]
    if r == 1:
        return gram.new_zeros(gram.shape[0])  # no pair of directions: nothing to decorrelate
    norms = torch.linalg.vector_norm(stacked, dim=2 if left else 1)
    coef = gram.abs() / (norms.unsqueeze(-1) * norms.unsqueeze(-2) + _FRD_EPS)
    off_diagonal = coef.sum(dim=(-2, -1)) - coef.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
    return off_diagonal / (r * r - r)


class _GramPenalty(torch.autograd.Function):
    """The official / paper penalty with a closed-form backward added to ``.grad`` after the backward pass.

    The matrices come in as one tuple (not autograd inputs) plus ``tracked``, the tensors autograd
    sees: one trained matrix (``anchor``), so the node is in the graph with a single edge, or,
    under ``torch.distributed``, every matrix, whose gradients then flow through autograd (see
    :func:`_gradients_reduced_by_hooks`). With the anchor, the gradients go in with one
    ``_foreach_add_`` from an engine callback, when every task-loss gradient has been accumulated:
    per step that saves the autograd bookkeeping of one edge per matrix (two of them per adapted
    layer), which is host time on a GPU. The upstream gradient (the weight γ, accelerate's
    division by the accumulation steps, a loss scale) multiplies them first, so accumulation and
    scaling work as with autograd. Only ``loss.backward()`` is supported (not ``torch.autograd.grad``).
    """

    @staticmethod
    def forward(ctx, form: str, groups: list[tuple[bool, int]], mats: tuple[torch.Tensor, ...],
                *tracked: torch.Tensor) -> torch.Tensor:
        stacks, grams, start = [], [], 0
        for left, count in groups:
            stacked = torch.stack(mats[start:start + count])
            start += count
            stacks.append(stacked)
            grams.append(_gram(stacked, left))
        # Every gram is r x r, and AdaLoRA gives every matrix the same r: the grams of all shape
        # groups then take one subtraction of I and one norm instead of one each per group.
        buckets = group_by(range(len(grams)), lambda i: grams[i].shape[-1])  # indices by size r
        residuals: list[torch.Tensor] = [grams[0]] * len(grams)
        norms: list[torch.Tensor] = [grams[0]] * len(grams)
        bucket_norms = []
        for members in buckets:
            gram = grams[members[0]] if len(members) == 1 else torch.cat([grams[i] for i in members])
            residual = _minus_identity(gram)
            norm = torch.linalg.matrix_norm(residual, ord="fro")
            bucket_norms.append(norm)
            sizes = [len(stacks[i]) for i in members]
            for i, res, nrm in zip(members, residual.split(sizes), norm.split(sizes)):
                residuals[i], norms[i] = res, nrm
        # The norms in group order (the exact form's order, so the mean adds them up the same way).
        values = bucket_norms[0] if len(buckets) == 1 else torch.cat(norms)
        ctx.form, ctx.groups, ctx.mats, ctx.n_tracked = form, groups, mats, len(tracked)
        ctx.stacks, ctx.residuals, ctx.buckets, ctx.bucket_norms = stacks, residuals, buckets, bucket_norms
        return values.mean() if form == "official" else values.square().sum()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        n_mats = len(ctx.mats)
        coefs: list[torch.Tensor] = [grad_out] * len(ctx.groups)
        for members, norm in zip(ctx.buckets, ctx.bucket_norms):
            # official: d(mean ‖G‖)/dM = 2 G M / (n ‖G‖), 0 where G = 0 (autograd's norm gradient there);
            # paper: d(Σ ‖G‖²)/dM = 4 G M
            if ctx.form == "official":
                coef = torch.where(norm > 0, (2.0 / n_mats) / norm, torch.zeros_like(norm)) * grad_out
            else:
                coef = (4.0 * grad_out).expand_as(norm)
            for i, part in zip(members, coef.split([len(ctx.stacks[i]) for i in members])):
                coefs[i] = part
        grads: list[torch.Tensor] = []
        for (left, _), stacked, residual, coef in zip(ctx.groups, ctx.stacks, ctx.residuals, coefs):
            product = torch.bmm(residual, stacked) if left else torch.bmm(stacked, residual)
            grads.extend((product * coef.view(-1, 1, 1)).unbind(0))
        if ctx.n_tracked == n_mats:  # every matrix is an input: autograd accumulates (and reduces) them
            return (None, None, None, *(g if need else None for g, need in zip(grads, ctx.needs_input_grad[3:])))
        mats = ctx.mats
        torch.autograd.Variable._execution_engine.queue_callback(lambda: _add_to_grads(mats, grads))
        return (None, None, None) + (None,) * ctx.n_tracked


def _gradients_reduced_by_hooks() -> bool:
    """Whether data-parallel training may be reducing gradients as they are accumulated.

    DDP (and FSDP) hook every parameter's gradient accumulation and, at the end of the backward,
    write the reduced bucket back into ``.grad``: a gradient added from an engine callback would be
    overwritten or race with the reduction. Under ``torch.distributed`` the penalty's gradient
    therefore goes through autograd, one add per matrix, as in the exact form.
    """
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _add_to_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    trained = [i for i, p in enumerate(params) if p.requires_grad]
    have = [i for i in trained if params[i].grad is not None]
    if have:
        torch._foreach_add_([params[i].grad for i in have], [grads[i] for i in have])
    for i in trained:
        if params[i].grad is None:
            params[i].grad = grads[i].clone()


class OrthogonalPenalty:
    """R over a fixed set of ``lora_A`` (r×d_in, uses A Aᵀ) and ``lora_B`` (d_out×r, uses Bᵀ B) matrices.

    The grouping by shape is worked out once, not at every step (the method handle keeps one).
    ``exact_rounding``: autograd through the batched forward (True) or the closed-form backward
    (False; official and paper forms); None chooses by device (exact on a CPU).
    """

    def __init__(self, a_mats: Iterable[torch.Tensor], b_mats: Iterable[torch.Tensor], form: str = "official",
                 exact_rounding: bool | None = None):
        if form not in ORTH_REG_FORMS:
            raise ValueError(f"orth_reg must be one of {ORTH_REG_FORMS}, got {form!r}")
        tagged = [(True, m) for m in a_mats] + [(False, m) for m in b_mats]  # True: A (uses A Aᵀ)
        if not tagged:
            raise ValueError("orthogonal_regularization needs at least one lora_A or lora_B matrix")
        self.form = form
        self.exact_rounding = exact_rounding
        self.groups = [(group[0][0], [m for _, m in group]) for group in group_by(tagged, lambda t: (t[0], t[1].shape))]
        self._spec = [(left, len(mats)) for left, mats in self.groups]
        self._flat = [m for _, mats in self.groups for m in mats]

    def __call__(self) -> torch.Tensor:
        if (self.form != "frd" and not exact_rounding_on(self._flat[0].device, self.exact_rounding)
                and torch.is_grad_enabled() and any(m.requires_grad for m in self._flat)):
            mats = tuple(self._flat)
            tracked = mats if _gradients_reduced_by_hooks() else (next(m for m in mats if m.requires_grad),)
            return _GramPenalty.apply(self.form, self._spec, mats, *tracked)
        per_matrix = _offdiag_abs_cosine_means if self.form == "frd" else _gram_minus_identity_norms
        values = torch.cat([per_matrix(mats, left) for left, mats in self.groups])
        if self.form in ("official", "frd"):
            return values.mean()
        return values.square().sum()


def orthogonal_regularization(
    a_mats: Iterable[torch.Tensor], b_mats: Iterable[torch.Tensor], form: str = "official",
    exact_rounding: bool | None = None,
) -> torch.Tensor:
    """R over all ``lora_A`` and ``lora_B`` matrices (see :class:`OrthogonalPenalty`)."""
    return OrthogonalPenalty(a_mats, b_mats, form, exact_rounding)()
