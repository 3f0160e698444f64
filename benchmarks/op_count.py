"""Operator launches per training step: the CPU proxy for AdaLoRA's launch overhead on a GPU.

::

    python -m benchmarks.op_count                                  # tiny (2 layers), tiny4, MiniLM
    python -m benchmarks.op_count --models deberta_v3_base --device meta   # the paper's shapes, no data
    python -m benchmarks.op_count --models minilm --ops 25         # the ops AdaLoRA adds, largest first

On a GPU the AdaLoRA step is not slower than LoRA's because of arithmetic (the FLOP ratio is 1.01)
but because of many small kernels, each launched from Python. This counts, for one training step
of :func:`benchmarks.steps.train_step`, every ATen operator call that reaches a backend (a
``TorchDispatchMode`` sees each call once, below autograd: forward, backward, optimiser, allocator,
views included, nothing double-counted), per phase of the step. A ``_foreach_*`` call counts as
one, as on CUDA, where it is one multi-tensor kernel per chunk of tensors. The proxy is the count
of AdaLoRA minus that of LoRA: what grows with the number of adapted matrices is what a GPU pays
in launch latency. On the ``meta`` device nothing is computed, so the paper's model shapes can be
counted on any machine (DeBERTaV3-base; BART's attention-mask code reads a tensor value with
``.item()``, which a meta tensor does not have, so BART-large is counted on a real device). On
meta, gradient clipping takes PyTorch's per-tensor path (no foreach kernels for meta tensors), so
its column is larger there than on a CPU or GPU.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.models import MODELS, make_batches
from benchmarks.steps import (
    FORM_NAMES,
    FORMS,
    PRECISIONS,
    Schedule,
    build_our_run,
    method_config,
    sync_fn,
    train_step,
)

PHASES = ("forward", "penalty", "backward", "clip", "optimizer", "allocator", "zero_grad")


# Host-side reads of a CPU scalar (AdamW's step counters on a CPU): no device work.
_HOST_OPS = {"_local_scalar_dense"}


class OpCounter(TorchDispatchMode):
    """Counts ATen operator calls by (phase, op name); ``set_phase`` moves to the next phase.

    ``kernel_counts`` leaves out views (``t``, ``select``, ``detach``, ...: metadata only, no
    kernel on a GPU, though each still costs a dispatch) and host scalar reads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.phase = "setup"
        self.counts: Counter[tuple[str, str]] = Counter()
        self.kernel_counts: Counter[tuple[str, str]] = Counter()

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[(self.phase, name)] += 1
        if not func.is_view and name not in _HOST_OPS:
            self.kernel_counts[(self.phase, name)] += 1
        return func(*args, **(kwargs or {}))


def count_step_ops(model_name: str, method: str, device: torch.device, batch: int = 2, length: int = 16,
                   mask: bool = False, kernels: bool = True, exact_rounding: bool | None = False,
                   precision: str = "fp32") -> Counter[tuple[str, str]]:
    """Op calls of one training step of ``method`` (after two warm-up steps), by (phase, op);
    ``kernels``: without views and host scalar reads (see :class:`OpCounter`).

    The step lies in AdaLoRA's budget-decrease phase; ``mask=True`` picks a step on which the
    allocator masks (every ΔT steps), otherwise one on which it only updates its EMAs.
    ``exact_rounding`` is AdaLoRA's setting: False (default) counts the fused form a GPU runs,
    True the exact form a CPU runs, None the form ``device`` runs. ``precision="bf16"`` runs the forward
    under autocast, as ``trainer.precision=bf16`` does (its casts are kernels too).
    """
    if device.type == "meta":  # data-dependent shapes (nonzero in the models' attention masks): assume all set
        import torch.fx.experimental._config as fx_config

        fx_config.meta_nonzero_assume_all_nonzero = True
    spec = MODELS[model_name]
    sched = Schedule(warmup=4, timed=4, delta_t=4)
    cfg = method_config(method, spec.level, sched, exact_rounding=exact_rounding)
    run = build_our_run(method, model_name, cfg, sched, device, precision=precision)[0]
    batches = make_batches(run.model, spec.head, batch, length, device)
    sync = sync_fn(device)
    for i in range(2):  # optimiser state and lazily built buffers exist from here on
        train_step(run, batches[i], sync)
    run.step = sched.warmup if mask else sched.warmup + 1  # warmup % ΔT == 0: a masking step
    counter = OpCounter()
    with counter:
        train_step(run, batches[2], sync, mark=counter.set_phase)
    return counter.kernel_counts if kernels else counter.counts


def by_phase(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    return {phase: sum(n for (p, _), n in counts.items() if p == phase) for phase in PHASES}


def adapted_matrices(model_name: str) -> int:
    """Number of matrices LoRA and AdaLoRA adapt in ``model_name`` (W_q, W_k, W_v, W_o, W_f1, W_f2)."""
    from adalora.architectures import ENCODER_WEIGHT_TYPES, architecture_of, find_targets
    from benchmarks.models import build_model

    model = build_model(model_name, torch.device("meta"))
    return len(find_targets(model, architecture_of(model), ENCODER_WEIGHT_TYPES))


def op_report(model_names: Sequence[str], device: torch.device, batch: int = 2, length: int = 16,
              top: int = 0, kernels: bool = True, exact_rounding: bool | None = False,
              precision: str = "fp32") -> dict[str, Any]:
    """Per model: op calls per step of LoRA and AdaLoRA by phase (plain and masking step), the
    difference, and the difference per adapted matrix; ``top`` > 0 adds the ops AdaLoRA adds most."""
    out: dict[str, Any] = {}
    for name in model_names:
        lora = count_step_ops(name, "lora", device, batch, length, kernels=kernels, precision=precision)
        ada = count_step_ops(name, "adalora", device, batch, length, kernels=kernels, exact_rounding=exact_rounding,
                             precision=precision)
        ada_mask = count_step_ops(name, "adalora", device, batch, length, mask=True, kernels=kernels,
                                  exact_rounding=exact_rounding, precision=precision)
        n = adapted_matrices(name)
        lora_p, ada_p, mask_p = by_phase(lora), by_phase(ada), by_phase(ada_mask)
        entry: dict[str, Any] = {
            "counted": "kernels (no views, no host scalar reads)" if kernels else "all ATen op calls",
            "adalora_form": FORM_NAMES[exact_rounding],
            "precision": precision,
            "adapted_matrices": n,
            "lora": lora_p,
            "adalora": ada_p,
            "adalora_masking_step": mask_p,
            "lora_total": sum(lora_p.values()),
            "adalora_total": sum(ada_p.values()),
            "adalora_masking_total": sum(mask_p.values()),
        }
        entry["extra"] = entry["adalora_total"] - entry["lora_total"]
        entry["extra_per_matrix"] = entry["extra"] / n
        if top:
            diff = Counter(ada)
            diff.subtract(lora)
            entry["top_extra_ops"] = [(f"{p}:{op}", k) for (p, op), k in
                                      sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top] if k]
        out[name] = entry
    return out


def to_markdown(report: dict[str, Any]) -> str:
    """One table: op calls per step by phase, LoRA / AdaLoRA / AdaLoRA − LoRA, per model."""
    lines = ["| model (adapted matrices) | step | " + " | ".join(PHASES) + " | total |",
             "|---|---|" + "---:|" * (len(PHASES) + 1)]
    for name, e in report.items():
        rows = (("LoRA", e["lora"]), ("AdaLoRA", e["adalora"]), ("AdaLoRA, masking step", e["adalora_masking_step"]))
        for label, phases in rows:
            lines.append(f"| {name} ({e['adapted_matrices']}) | {label} | "
                         + " | ".join(str(phases[p]) for p in PHASES) + f" | {sum(phases.values())} |")
        diff = {p: e["adalora"][p] - e["lora"][p] for p in PHASES}
        lines.append(f"| {name} ({e['adapted_matrices']}) | **AdaLoRA − LoRA** | "
                     + " | ".join(f"{diff[p]:+d}" for p in PHASES)
                     + f" | **{e['extra']:+d}** ({e['extra_per_matrix']:+.2f} per matrix) |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.op_count", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "tiny4", "minilm"])
    p.add_argument("--device", default="cpu", help="cpu, cuda or meta (shapes only: the paper's models anywhere)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=16)
    p.add_argument("--ops", type=int, default=0, help="also list the N ops AdaLoRA adds most")
    p.add_argument("--all-ops", action="store_true", help="count views and host scalar reads too")
    p.add_argument("--form", choices=sorted(FORMS), default="fused",
                   help="AdaLoRA's form: fused (what a GPU runs, default), exact (a CPU), or the device's")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                   help="bf16: the forward under autocast (trainer.precision=bf16)")
    args = p.parse_args(argv)
    report = op_report(args.models, torch.device(args.device), args.batch, args.length, top=args.ops,
                       kernels=not args.all_ops, exact_rounding=FORMS[args.form], precision=args.precision)
    print(to_markdown(report))
    for name, e in report.items():
        for op, k in e.get("top_extra_ops", []):
            print(f"{name:16s} {op:40s} {k:+d}")


if __name__ == "__main__":
    main()
