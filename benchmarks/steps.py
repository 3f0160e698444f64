"""One benchmarked training step: building a run (ours or PEFT's), the step itself, the
regulariser alone, and the step's FLOPs.

A step is what ``experiments/training.py`` does per optimiser step: forward + backward (task loss
+ γ·R), grad clipping, AdamW, the allocator, ``zero_grad``.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adalora import apply_method, get_budget
from adalora.architectures import architecture_of, find_targets
from adalora.optim import make_adamw
from benchmarks.models import build_model

OUR_METHODS = ("full_ft", "bitfit", "lora", "adapter_houlsby", "adapter_pfeiffer", "adalora")
PEFT_METHODS = ("peft_lora", "peft_adalora")
ALL_METHODS = OUR_METHODS + PEFT_METHODS


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Schedule:
    """AdaLoRA's schedule for a benchmark: every step from ``warmup`` on is in the decrease phase."""

    warmup: int
    timed: int
    delta_t: int
    tfinal: int = 10

    @property
    def tinit(self) -> int:
        return self.warmup // 2

    @property
    def total(self) -> int:
        return self.warmup + self.timed + self.tfinal

    def masking_steps(self) -> list[int]:
        """Timed steps on which the allocator masks (decrease phase, ``t % ΔT == 0``)."""
        return self._masking(range(self.warmup, self.warmup + self.timed))

    def warmup_masking_steps(self) -> list[int]:
        """Untimed steps that mask: at least one is needed, or the first mask's one-off costs (CUDA
        loads a kernel's module at its first launch) land in the timed steps."""
        return self._masking(range(self.warmup))

    def _masking(self, steps: range) -> list[int]:
        return [t for t in steps if t > self.tinit and t % self.delta_t == 0]


# --form -> AdaLoRA's method.exact_rounding: fused (what a GPU runs), exact (a CPU), or the device's
FORMS = {"fused": False, "exact": True, "device": None}
FORM_NAMES = {setting: name for name, setting in FORMS.items()}  # exact_rounding -> --form name


def method_config(method: str, level_name: str, sched: Schedule, alpha: float = 16.0,
                  orth_reg_weight: float = 0.1, exact_rounding: bool | None = None) -> dict[str, Any] | None:
    """Our method config at the budget level, or None when the paper has no such run (NLG adapters).
    ``exact_rounding`` is our AdaLoRA's form (None: the device's)."""
    level = get_budget(level_name)
    base = method.removeprefix("peft_")
    if base in ("full_ft", "bitfit"):
        return {"name": base}
    if base == "lora":
        return {"name": "lora", "r": level.lora_r, "alpha": alpha}
    if base == "adalora":
        return {"name": "adalora", "init_r": level.adalora_init_r, "target_r": level.adalora_target_r,
                "alpha": alpha, "tinit": sched.tinit, "tfinal": sched.tfinal, "deltaT": sched.delta_t,
                "orth_reg_weight": orth_reg_weight, "exact_rounding": exact_rounding}
    size = level.houlsby_bottleneck if base == "adapter_houlsby" else level.pfeiffer_bottleneck
    return None if size is None else {"name": base, "bottleneck": size}


# ----------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class StepTiming:
    """One timed step: wall and CPU seconds of the whole step and of the allocator call.

    CPU seconds (``time.process_time``: every thread of this process) do not count time spent
    waiting for the CPU, so on a shared machine they show the work itself; wall time is what a
    user waits. On a GPU the CPU seconds are the host side only.
    """

    step: int
    wall: float
    cpu: float
    alloc_wall: float
    alloc_cpu: float
    host: float = 0.0  # until the optimiser step is enqueued: ≈ wall when the GPU waits for the host


@dataclass
class Run:
    """One model + method + optimiser, stepped by :func:`train_step`."""

    method: str
    model: nn.Module
    loss_fn: Callable[[dict], torch.Tensor]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    config: dict[str, Any]
    reg_fn: Callable[[], torch.Tensor | None] | None = None
    alloc_fn: Callable[[int], Any] | None = None
    trainable_paper: int | None = None
    step: int = 0
    timings: list[StepTiming] = field(default_factory=list)


def _optimizer(model: nn.Module) -> tuple[list[nn.Parameter], torch.optim.Optimizer]:
    params = [p for p in model.parameters() if p.requires_grad]
    return params, make_adamw(params, lr=5e-4, weight_decay=0.01)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def with_precision(loss_fn: Callable[[dict], torch.Tensor], device: torch.device,
                   precision: str) -> Callable[[dict], torch.Tensor]:
    """The forward under autocast, as ``trainer.precision=bf16`` runs it (accelerate wraps the
    model's forward only: the penalty, optimiser and allocator stay in fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return loss_fn

    def autocast_loss(batch: dict) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return loss_fn(batch)

    return autocast_loss


def build_our_run(method: str, model_name: str, cfg: dict[str, Any], sched: Schedule,
                  device: torch.device, precision: str = "fp32") -> tuple[Run, Any]:
    model = build_model(model_name, device)
    handle = apply_method(model, cfg)
    handle.set_total_steps(sched.total)
    params, opt = _optimizer(model)
    run = Run(method, model, with_precision(lambda b: model(**b).loss, device, precision), params, opt, cfg,
              reg_fn=handle.regularization_loss if handle.kind == "adalora" else None,
              alloc_fn=handle.step if getattr(handle, "allocator", None) is not None else None,
              trainable_paper=handle.parameter_counts()["trainable_paper"])
    return run, handle


def _peft_target_regex(model: nn.Module) -> str:
    names = find_targets(model, architecture_of(model), ("W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2"))
    return "(" + "|".join(re.escape(n) for n in names) + ")"


def build_peft_run(method: str, model_name: str, cfg: dict[str, Any], sched: Schedule, device: torch.device,
                   copy_from: Any = None, precision: str = "fp32") -> Run:
    """PEFT's LoRA / AdaLoRA with our config: same targets, ranks, alpha, schedule, γ, trainable set.

    The loss is ``AdaLoraModel.forward`` (``peft_model.base_model``), which adds γ·R itself; the bare
    ``PeftModel.forward`` would skip it (peft#432). ``copy_from`` (our AdaLoRA handle) copies A/E/B so
    both start from the same triplets.
    """
    import peft

    model = build_model(model_name, device)
    arch = architecture_of(model)
    regex = _peft_target_regex(model)
    if cfg["name"] == "lora":
        pcfg = peft.LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=0.0, target_modules=regex)
    else:
        pcfg = peft.AdaLoraConfig(
            init_r=cfg["init_r"], target_r=cfg["target_r"], lora_alpha=cfg["alpha"], lora_dropout=0.0,
            tinit=cfg["tinit"], tfinal=cfg["tfinal"], deltaT=cfg["deltaT"], beta1=0.85, beta2=0.85,
            orth_reg_weight=cfg["orth_reg_weight"], total_step=sched.total, target_modules=regex,
        )
    pmodel = peft.get_peft_model(model, pcfg)
    inner = pmodel.base_model.model
    for name, p in inner.named_parameters():  # our methods always train the task head
        p.requires_grad_(".lora_" in name or name.startswith(arch.head_prefixes))
    if copy_from is not None:
        with torch.no_grad():
            for name, mod in copy_from.svd_modules.items():
                sub = inner.get_submodule(name)
                for kind in ("lora_A", "lora_E", "lora_B"):
                    getattr(sub, kind)["default"].copy_(getattr(mod, kind))
    params, opt = _optimizer(pmodel)
    trainable = sum(p.numel() for n, p in inner.named_parameters() if p.requires_grad and ".lora_" in n)
    alloc = (lambda t: pmodel.base_model.update_and_allocate(t)) if cfg["name"] == "adalora" else None
    return Run(method, pmodel, with_precision(lambda b: pmodel.base_model(**b).loss, device, precision), params, opt, cfg,
               alloc_fn=alloc, trainable_paper=trainable)


def sync_fn(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def train_step(run: Run, batch: dict[str, torch.Tensor], sync: Callable[[], None],
               mark: Callable[[str], None] | None = None) -> StepTiming:
    """One optimiser step as in ``experiments/training.py``: loss (+ γ·R), backward, clip, AdamW,
    allocator, ``zero_grad``.

    ``mark(phase)`` is called as each phase begins (``forward``, ``penalty``, ``backward``, ``clip``,
    ``optimizer``, ``allocator``, ``zero_grad``), so that an op counter can attribute ops to phases.
    """
    mark = mark or (lambda _phase: None)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    mark("forward")
    loss = run.loss_fn(batch)
    if run.reg_fn is not None:
        mark("penalty")
        reg = run.reg_fn()
        if reg is not None:
            loss = loss + reg
    mark("backward")
    loss.backward()
    mark("clip")
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    mark("optimizer")
    run.optimizer.step()
    host = time.perf_counter() - t0
    sync()
    t1, c1 = time.perf_counter(), time.process_time()
    if run.alloc_fn is not None:
        mark("allocator")
        run.alloc_fn(run.step)
        sync()
    t2, c2 = time.perf_counter(), time.process_time()
    mark("zero_grad")
    run.optimizer.zero_grad(set_to_none=True)
    timing = StepTiming(run.step, time.perf_counter() - t0, time.process_time() - c0, t2 - t1, c2 - c1, host)
    run.step += 1
    return timing


def regularizer_seconds(run: Run, sync: Callable[[], None], reps: int) -> tuple[float, float] | None:
    """Median (wall, CPU) seconds of γ·R forward + backward alone (our AdaLoRA only).

    Every ``.grad`` holds a gradient first, as in a training step, where the task loss's gradients
    are there when the penalty's are added: with empty ``.grad`` the timing would count a fresh
    gradient tensor per matrix that training never allocates.
    """
    if run.reg_fn is None or run.reg_fn() is None:
        return None
    for p in run.params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    walls, cpus = [], []
    for _ in range(reps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        run.reg_fn().backward()
        sync()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    run.optimizer.zero_grad(set_to_none=True)
    return statistics.median(walls), statistics.median(cpus)


def step_flops(run: Run, batch: dict[str, torch.Tensor]) -> int:
    """Matmul-type FLOPs of forward + backward of one step (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = run.loss_fn(batch)
        reg = run.reg_fn() if run.reg_fn is not None else None
        (loss if reg is None else loss + reg).backward()
    run.optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())
