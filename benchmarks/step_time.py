"""Per-step cost of every method, AdaLoRA's allocator and regulariser share, and peak memory.

::

    python -m benchmarks.step_time                  # (make bench) tiny + MiniLM on CPU, the paper models on a GPU
    python -m benchmarks.step_time --threads 1      # a shared CPU: see below
    python -m benchmarks.step_time --models minilm --methods lora adalora peft_lora peft_adalora --rounds 30
    python -m benchmarks.step_time --device cuda --models deberta_v3_base bart_large --batch 32

What is measured, per model, for full_ft, bitfit, lora, adapter_houlsby, adapter_pfeiffer and
adalora at one of the paper's budget levels, and PEFT's LoRA / AdaLoRA with the identical
configuration (same target matrices, ranks, alpha, schedule, orthogonality weight, trainable set):

* **step time**: forward + backward (task loss + γ·R) + grad clipping + AdamW + allocator +
  ``zero_grad``, median over the timed steps after a warm-up. All models live in one process and
  are stepped round-robin (one step each by default; the order rotates every round), so every
  ratio is taken under the same machine load; ratios are also given paired by round, on the
  fastest step, and on CPU time (``time.process_time``, which does not count waiting for a busy
  CPU). LoRA vs PEFT's LoRA, the same computation, shows the noise floor. On a CPU shared with
  other jobs use ``--threads 1``: with more intra-op threads than free cores every OpenMP barrier
  waits for a descheduled thread and step times become erratic.
* **allocator share**: mean time of ``handle.step(t)`` (PEFT: ``update_and_allocate``) over the
  timed steps, masking steps included, divided by the median step time. The schedule puts every
  timed step in the budget-decrease phase (t_i = warm-up // 2, T = warm-up + timed + t_f), so the
  timed steps mask every ΔT steps exactly as in training; the JSON records which steps masked.
* **regulariser share**: forward + backward of γ·R(P, Q) alone, median, over the median step time.
* **peak memory**: each method in a fresh subprocess: peak RSS on CPU (``VmHWM``, with glibc told
  to unmap freed blocks of 64 KiB and more, so that it follows the live tensors), CUDA max
  allocated on a GPU; also the growth over the built model ("train" column).
* **FLOPs** of one training step by ``torch.utils.flop_counter`` (matmul-type ops): the ratio
  AdaLoRA/LoRA is the floor the step-time ratio could reach if the step were all matmuls.

Writes ``<out>/<device>.json`` and ``<out>/<device>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adalora import apply_method, get_budget
from adalora.architectures import architecture_of, find_targets

ROOT = Path(__file__).resolve().parents[1]
CONF_MODEL = ROOT / "conf" / "model"
DEFAULT_OUT = ROOT / "benchmarks" / "results"

OUR_METHODS = ("full_ft", "bitfit", "lora", "adapter_houlsby", "adapter_pfeiffer", "adalora")
PEFT_METHODS = ("peft_lora", "peft_adalora")
ALL_METHODS = OUR_METHODS + PEFT_METHODS

# Ratios reported per model (a/b); lora/peft_lora run the same computation, so theirs shows the
# noise floor of the machine.
RATIO_PAIRS = (("adalora", "lora"), ("adalora", "peft_adalora"), ("peft_adalora", "peft_lora"), ("lora", "peft_lora"))
# Targets (issue 7), reported in the Markdown and never asserted: ratio -> (estimator, at most).
TARGETS = {
    "adalora/lora": {"wall": 1.04, "peak_memory": 1.02},
    "adalora/peft_adalora": {"wall": 0.95},
    "adalora": {"allocator_share": 0.005},
}

DEBERTA_V3_BASE = {
    "vocab_size": 128100, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 0, "relative_attention": True,
    "position_buckets": 256, "pos_att_type": ["p2c", "c2p"], "share_att_key": True, "norm_rel_ebd": "layer_norm",
    "max_relative_positions": -1, "position_biased_input": False, "layer_norm_eps": 1e-7, "num_labels": 2,
}
BART_LARGE = {
    "vocab_size": 50265, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12, "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096, "encoder_attention_heads": 16, "decoder_attention_heads": 16,
    "max_position_embeddings": 1024, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
    "decoder_start_token_id": 2, "forced_eos_token_id": 2,
}


@dataclass(frozen=True)
class ModelSpec:
    """How to build a benchmark model: a conf/model entry (tiny, package) or a config (random init)."""

    conf: str | None = None
    config: dict[str, Any] | None = None
    arch: str = "bert"
    seq2seq: bool = False
    level: str = "glue_1.2m"
    note: str = ""


MODELS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(conf="tiny_deberta", arch="deberta-v2", note="2-layer DeBERTa-v2, d=32, random init"),
    "minilm": ModelSpec(conf="minilm", arch="bert", note="all-MiniLM-L6-v2, real weights (6 layers, d=384)"),
    "deberta_v3_base": ModelSpec(config=DEBERTA_V3_BASE, arch="deberta-v2",
                                 note="DeBERTaV3-base dimensions, random init"),
    "bart_large": ModelSpec(config=BART_LARGE, arch="bart", seq2seq=True, level="nlg_1.10",
                            note="BART-large dimensions, random init"),
}


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
        return [t for t in range(self.warmup, self.warmup + self.timed) if t > self.tinit and t % self.delta_t == 0]


def method_config(method: str, level_name: str, sched: Schedule, alpha: float = 16.0,
                  orth_reg_weight: float = 0.1) -> dict[str, Any] | None:
    """Our method config at the budget level, or None when the paper has no such run (NLG adapters)."""
    level = get_budget(level_name)
    base = method.removeprefix("peft_")
    if base in ("full_ft", "bitfit"):
        return {"name": base}
    if base == "lora":
        return {"name": "lora", "r": level.lora_r, "alpha": alpha}
    if base == "adalora":
        return {"name": "adalora", "init_r": level.adalora_init_r, "target_r": level.adalora_target_r,
                "alpha": alpha, "tinit": sched.tinit, "tfinal": sched.tfinal, "deltaT": sched.delta_t,
                "orth_reg_weight": orth_reg_weight}
    size = level.houlsby_bottleneck if base == "adapter_houlsby" else level.pfeiffer_bottleneck
    return None if size is None else {"name": base, "bottleneck": size}


def build_model(name: str, device: torch.device, seed: int = 0) -> nn.Module:
    spec = MODELS[name]
    torch.manual_seed(seed)
    if spec.conf is not None:
        from omegaconf import OmegaConf

        from experiments.models import load_model

        cfg = OmegaConf.to_container(OmegaConf.load(CONF_MODEL / f"{spec.conf}.yaml"))
        head = "seq2seq_lm" if spec.seq2seq else "sequence_classification"
        model = load_model(cfg, head, num_labels=2).to(device)
    else:
        from transformers import (
            BartConfig,
            BartForConditionalGeneration,
            DebertaV2Config,
            DebertaV2ForSequenceClassification,
        )

        if spec.arch == "bart":
            cls, config = BartForConditionalGeneration, BartConfig(**spec.config)
        else:
            cls, config = DebertaV2ForSequenceClassification, DebertaV2Config(**spec.config)
        with torch.device(device):
            model = cls(config)
    return model.train()


def make_batches(model: nn.Module, seq2seq: bool, batch: int, length: int, device: torch.device,
                 n: int = 4) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1234)
    vocab = model.config.vocab_size
    out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (batch, length), generator=gen)
        b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if seq2seq:
            b["labels"] = torch.randint(5, vocab, (batch, max(2, length // 4)), generator=gen)
        else:
            b["labels"] = torch.randint(0, 2, (batch,), generator=gen)
        out.append({k: v.to(device) for k, v in b.items()})
    return out


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
    return params, torch.optim.AdamW(params, lr=5e-4, weight_decay=0.01)


def build_our_run(method: str, model_name: str, cfg: dict[str, Any], sched: Schedule,
                  device: torch.device) -> tuple[Run, Any]:
    model = build_model(model_name, device)
    handle = apply_method(model, cfg)
    handle.set_total_steps(sched.total)
    params, opt = _optimizer(model)
    run = Run(method, model, lambda b: model(**b).loss, params, opt, cfg,
              reg_fn=handle.regularization_loss if handle.kind == "adalora" else None,
              alloc_fn=handle.step if handle.allocator is not None else None,
              trainable_paper=handle.parameter_counts()["trainable_paper"])
    return run, handle


def _peft_target_regex(model: nn.Module) -> str:
    names = find_targets(model, architecture_of(model), ("W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2"))
    return "(" + "|".join(re.escape(n) for n in names) + ")"


def build_peft_run(method: str, model_name: str, cfg: dict[str, Any], sched: Schedule, device: torch.device,
                   copy_from: Any = None) -> Run:
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
    return Run(method, pmodel, lambda b: pmodel.base_model(**b).loss, params, opt, cfg,
               alloc_fn=alloc, trainable_paper=trainable)


def _sync_fn(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def train_step(run: Run, batch: dict[str, torch.Tensor], sync: Callable[[], None]) -> StepTiming:
    """One optimiser step as in ``experiments/training.py``: loss (+ γ·R), backward, clip, AdamW,
    allocator, ``zero_grad``."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    loss = run.loss_fn(batch)
    if run.reg_fn is not None:
        reg = run.reg_fn()
        if reg is not None:
            loss = loss + reg
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    run.optimizer.step()
    sync()
    t1, c1 = time.perf_counter(), time.process_time()
    if run.alloc_fn is not None:
        run.alloc_fn(run.step)
        sync()
    t2, c2 = time.perf_counter(), time.process_time()
    run.optimizer.zero_grad(set_to_none=True)
    timing = StepTiming(run.step, time.perf_counter() - t0, time.process_time() - c0, t2 - t1, c2 - c1)
    run.step += 1
    return timing


def regularizer_seconds(run: Run, sync: Callable[[], None], reps: int) -> tuple[float, float] | None:
    """Median (wall, CPU) seconds of γ·R forward + backward alone (our AdaLoRA only)."""
    if run.reg_fn is None or run.reg_fn() is None:
        return None
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


# ----------------------------------------------------------------------------- memory
def _proc_status_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc (Linux), in bytes.

    Not ``ru_maxrss``: Linux carries the parent's peak over fork/vfork + exec into the child's
    ``ru_maxrss``, so a child of a big benchmark process would report the parent's size.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # pragma: no cover - not Linux


def probe_memory(model_name: str, method: str, sched: Schedule, batch: int, length: int, device: torch.device,
                 steps: int) -> dict[str, float]:
    """Peak memory of ``steps`` training steps of one method, in this (fresh) process."""
    spec = MODELS[model_name]
    cfg = method_config(method, spec.level, sched)
    run = build_peft_run(method, model_name, cfg, sched, device) if method in PEFT_METHODS else \
        build_our_run(method, model_name, cfg, sched, device)[0]
    run.step = sched.warmup  # same phase as the timed steps: decrease phase, masking every ΔT
    batches = make_batches(run.model, spec.seq2seq, batch, length, device)
    sync = _sync_fn(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        try:  # reset VmHWM to the current RSS (Linux >= 4.0), so a reused process measures these steps
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        before = _proc_status_bytes("VmRSS")
    for i in range(steps):
        train_step(run, batches[i % len(batches)], sync)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _proc_status_bytes("VmHWM")
    return {"peak_mb": peak / 2**20, "train_mb": (peak - before) / 2**20,
            "kind": "cuda_max_allocated" if device.type == "cuda" else "peak_rss"}


def memory_in_subprocess(model_name: str, method: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.step_time", "--probe-memory", "--models", model_name,
           "--methods", method, "--device", args.device, "--batch", str(args.batch), "--length", str(args.length),
           "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--block", str(args.block),
           "--delta-t", str(args.delta_t), "--memory-steps", str(args.memory_steps), "--threads", str(args.threads)]
    # glibc malloc: return every block >= 64 KiB to the OS when freed, so that the peak RSS follows
    # the live tensors rather than heap fragmentation (which differs from method to method).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    raise RuntimeError(f"memory probe for {model_name}/{method} failed:\n{proc.stderr[-3000:]}")


# ----------------------------------------------------------------------------- benchmark
def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def summarize(run: Run, sched: Schedule, reg: tuple[float, float] | None) -> dict[str, Any]:
    """Medians over the timed steps; the allocator's mean (masking steps included) over the median step."""
    walls = [t.wall for t in run.timings]
    med, med_cpu = statistics.median(walls), statistics.median(t.cpu for t in run.timings)
    q1, _, q3 = statistics.quantiles(walls, n=4, method="inclusive") if len(walls) > 1 else (med, med, med)
    masking = set(sched.masking_steps())
    has_alloc = run.alloc_fn is not None

    def alloc_ms(steps: list[StepTiming]) -> float | None:
        return statistics.median(t.alloc_wall for t in steps) * 1e3 if has_alloc and steps else None

    return {
        "config": run.config,
        "trainable_paper": run.trainable_paper,
        "steps_timed": len(walls),
        "median_step_ms": med * 1e3,
        "q1_step_ms": q1 * 1e3,
        "q3_step_ms": q3 * 1e3,
        "min_step_ms": min(walls) * 1e3,
        "median_cpu_ms": med_cpu * 1e3,
        "allocator_ms_mean": statistics.fmean(t.alloc_wall for t in run.timings) * 1e3 if has_alloc else None,
        "allocator_ms_plain_median": alloc_ms([t for t in run.timings if t.step not in masking]),
        "allocator_ms_mask_median": alloc_ms([t for t in run.timings if t.step in masking]),
        "allocator_share": statistics.fmean(t.alloc_wall for t in run.timings) / med if has_alloc else None,
        "allocator_share_cpu": statistics.fmean(t.alloc_cpu for t in run.timings) / med_cpu if has_alloc else None,
        "regularizer_ms": None if reg is None else reg[0] * 1e3,
        "regularizer_share": None if reg is None else reg[0] / med,
        "regularizer_share_cpu": None if reg is None else reg[1] / med_cpu,
    }


def _round_medians(run: Run, warmup: int, block: int) -> dict[int, float]:
    rounds: dict[int, list[float]] = {}
    for t in run.timings:
        rounds.setdefault((t.step - warmup) // block, []).append(t.wall)
    return {k: statistics.median(v) for k, v in rounds.items()}


def _paired(by_round: dict[str, dict[int, float]], a: str, b: str) -> float | None:
    """Median over rounds of a's block median / b's block median (the two ran minutes apart at most)."""
    if a not in by_round or b not in by_round:
        return None
    return statistics.median(by_round[a][k] / by_round[b][k] for k in by_round[a] if k in by_round[b])


def benchmark_model(model_name: str, methods: Sequence[str], args: argparse.Namespace,
                    log: Callable[[str], None]) -> dict[str, Any]:
    spec = MODELS[model_name]
    device = torch.device(args.device)
    sched = Schedule(args.warmup, args.rounds * args.block, args.delta_t)
    sync = _sync_fn(device)
    runs: list[Run] = []
    skipped: dict[str, str] = {}
    handle = None
    for method in methods:
        cfg = method_config(method, spec.level, sched)
        if cfg is None:
            skipped[method] = f"no {method} at budget level {spec.level} in the paper"
            continue
        if method in PEFT_METHODS:
            runs.append(build_peft_run(method, model_name, cfg, sched, device,
                                       copy_from=handle if method == "peft_adalora" else None))
        else:
            run, h = build_our_run(method, model_name, cfg, sched, device)
            handle = h if method == "adalora" else handle
            runs.append(run)
        log(f"  built {model_name}/{method}")
    batches = make_batches(runs[0].model, spec.seq2seq, args.batch, args.length, device)
    load_before = _load()
    # warm-up, then timed blocks round-robin with a rotating order
    for i in range(args.warmup):
        for run in runs:
            train_step(run, batches[i % len(batches)], sync)
    for rnd in range(args.rounds):
        k = rnd % len(runs)
        for run in runs[k:] + runs[:k]:
            for _ in range(args.block):
                run.timings.append(train_step(run, batches[run.step % len(batches)], sync))
        log(f"  round {rnd + 1}/{args.rounds} done (load {_load()})")
    load_after = _load()

    results: dict[str, Any] = {}
    for run in runs:
        results[run.method] = summarize(run, sched, regularizer_seconds(run, sync, args.reg_reps))
        results[run.method]["flops_per_step"] = step_flops(run, batches[0])
        log(f"  {run.method:17s} {results[run.method]['median_step_ms']:9.1f} ms/step "
            f"({results[run.method]['median_cpu_ms']:.1f} ms CPU)")
    by_round = {run.method: _round_medians(run, args.warmup, args.block) for run in runs}
    del runs
    if args.memory != "none":
        for method in results:
            mem = probe_memory(model_name, method, sched, args.batch, args.length, device, args.memory_steps) \
                if args.memory == "inprocess" else memory_in_subprocess(model_name, method, args)
            results[method].update({"peak_memory_mb": mem["peak_mb"], "train_memory_mb": mem["train_mb"],
                                    "memory_kind": mem["kind"]})
            log(f"  memory {method:17s} peak {mem['peak_mb']:.0f} MB (+{mem['train_mb']:.0f} MB)")
    for r in results.values():
        r.setdefault("peak_memory_mb", None)
        r.setdefault("train_memory_mb", None)
        r.setdefault("memory_kind", None)

    def ratio(a: str, b: str, key: str) -> float | None:
        return _ratio(results.get(a, {}).get(key), results.get(b, {}).get(key))

    ratios = {
        f"{a}/{b}": {
            "wall": ratio(a, b, "median_step_ms"),
            "paired": _paired(by_round, a, b),
            "fastest": ratio(a, b, "min_step_ms"),
            "cpu": ratio(a, b, "median_cpu_ms"),
            "flops": ratio(a, b, "flops_per_step"),
            "peak_memory": ratio(a, b, "peak_memory_mb"),
            "train_memory": ratio(a, b, "train_memory_mb"),
        }
        for a, b in RATIO_PAIRS if a in results and b in results
    }
    shares = {
        method: {key: results[method][key] for key in
                 ("allocator_share", "allocator_share_cpu", "regularizer_share", "regularizer_share_cpu")}
        for method in ("adalora", "peft_adalora") if method in results
    }
    return {
        "note": spec.note,
        "budget_level": spec.level,
        "schedule": {"tinit": sched.tinit, "tfinal": sched.tfinal, "deltaT": sched.delta_t, "T": sched.total,
                     "timed_steps": [args.warmup, args.warmup + sched.timed - 1],
                     "masking_steps_timed": sched.masking_steps()},
        "load_before": load_before,
        "load_after": load_after,
        "methods": results,
        "skipped": skipped,
        "ratios": ratios,
        "shares": shares,
    }


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return "cpu"


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    import transformers

    try:
        import peft

        peft_version = peft.__version__
    except ImportError:  # pragma: no cover - peft is a dev dependency
        peft_version = None
    return {
        "device": device_label(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft_version,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# ----------------------------------------------------------------------------- report
def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _verdicts(targets: dict[str, float], values: dict[str, float | None], pct: bool = False) -> str:
    out = []
    for key, limit in targets.items():
        value = values.get(key)
        goal = f"{key.replace('_', ' ')} ≤ {f'{100 * limit:.1f}%' if pct else limit}"
        out.append(goal if value is None else f"{goal}: {'met' if value <= limit else 'missed'}")
    return "; ".join(out)


def to_markdown(report: dict[str, Any]) -> str:
    env, s = report["environment"], report["settings"]
    lines = [
        f"# Step-time benchmark: {env['device']} ({env['device_name']})",
        "",
        f"torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}; {env['threads']} "
        f"intra-op thread(s) on {env['cpu_count']} CPUs; {env['date']}. Batch {s['batch']} × length {s['length']}; "
        f"{s['warmup']} warm-up steps, then {s['rounds']} rounds × {s['block']} steps per method, round-robin in "
        "one process. Step = forward + backward (task loss + γ·R) + grad clipping + AdamW + allocator + "
        "zero_grad. *wall*: median wall time; *CPU*: median CPU time of the process (does not count waiting for "
        "a busy CPU). *allocator*: mean allocator time per step, masking steps included, over the median step; "
        "*regulariser*: γ·R forward + backward alone over the median step (wall / CPU). Peak memory: "
        f"{'CUDA max allocated' if env['device'].startswith('cuda') else 'peak RSS'} of a fresh process per "
        "method; *train*: its growth over the built model.",
        "",
    ]
    for name, m in report["models"].items():
        sch, methods = m["schedule"], m["methods"]
        lora = methods.get("lora", {})
        lines += [
            f"## {name}: {m['note']}, budget {m['budget_level']}",
            "",
            f"AdaLoRA t_i={sch['tinit']}, t_f={sch['tfinal']}, ΔT={sch['deltaT']}, T={sch['T']}: the timed steps "
            f"{sch['timed_steps'][0]}–{sch['timed_steps'][1]} are all in the budget-decrease phase and mask at "
            f"steps {sch['masking_steps_timed'] or 'none'}. Load average (1, 5, 15 min): {m['load_before']} before "
            f"the timing, {m['load_after']} after.",
            "",
            "| method | trainable (paper) | wall ms | IQR ms | × LoRA | CPU ms | × LoRA | GFLOP | allocator | "
            "regulariser | peak MB | train MB | × LoRA |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for method, r in methods.items():
            alloc = "–" if r["allocator_share"] is None else \
                f"{_pct(r['allocator_share'])} / {_pct(r['allocator_share_cpu'])}"
            reg = "–" if r["regularizer_share"] is None else \
                f"{_pct(r['regularizer_share'])} / {_pct(r['regularizer_share_cpu'])}"
            lines.append(
                f"| {method} | {r['trainable_paper']:,} | {r['median_step_ms']:.1f} | "
                f"{r['q1_step_ms']:.0f}–{r['q3_step_ms']:.0f} | "
                f"{_fmt(_ratio(r['median_step_ms'], lora.get('median_step_ms')), '.3f')} | "
                f"{r['median_cpu_ms']:.1f} | {_fmt(_ratio(r['median_cpu_ms'], lora.get('median_cpu_ms')), '.3f')} | "
                f"{r['flops_per_step'] / 1e9:.1f} | {alloc} | {reg} | {_fmt(r['peak_memory_mb'], '.0f')} | "
                f"{_fmt(r['train_memory_mb'], '.0f')} | "
                f"{_fmt(_ratio(r['peak_memory_mb'], lora.get('peak_memory_mb')), '.3f')} |"
            )
        for method, why in m["skipped"].items():
            lines.append(f"| {method} | skipped: {why} |" + " |" * 11)
        lines += [
            "",
            "| a/b | wall, median | wall, paired by round | wall, fastest step | CPU, median | FLOPs | peak memory | "
            "train memory | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for pair, r in m["ratios"].items():
            cells = " | ".join(_fmt(r[k], ".3f") for k in
                               ("wall", "paired", "fastest", "cpu", "flops", "peak_memory", "train_memory"))
            note = " (same computation: noise floor)" if pair == "lora/peft_lora" else ""
            lines.append(f"| {pair}{note} | {cells} | {_verdicts(TARGETS.get(pair, {}), r)} |")
        lines += ["", "| share of a step | allocator, wall | allocator, CPU | regulariser, wall | regulariser, CPU | "
                  "target |", "|---|---:|---:|---:|---:|---|"]
        for method, r in m["shares"].items():
            cells = " | ".join(_pct(r[k]) for k in
                               ("allocator_share", "allocator_share_cpu", "regularizer_share", "regularizer_share_cpu"))
            lines.append(f"| {method} | {cells} | {_verdicts(TARGETS.get(method, {}), r, pct=True)} |")
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    label = report["environment"]["device"]
    json_path, md_path = out / f"{label}.json", out / f"{label}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(to_markdown(report))
    return json_path, md_path


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_time", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None,
                   help="default: tiny minilm on CPU, deberta_v3_base bart_large on CUDA")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(ALL_METHODS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--warmup", type=int, default=6, help="untimed steps per method (t_i = warmup // 2)")
    p.add_argument("--rounds", type=int, default=24, help="round-robin rounds")
    p.add_argument("--block", type=int, default=1, help="consecutive timed steps per method and round")
    p.add_argument("--delta-t", type=int, default=10, help="AdaLoRA's ΔT (masking interval) during the timing")
    p.add_argument("--reg-reps", type=int, default=10, help="repetitions of the regulariser-only timing")
    p.add_argument("--memory", choices=("subprocess", "inprocess", "none"), default="subprocess",
                   help="peak memory per method in a fresh subprocess (default); 'inprocess' (this process's "
                        "peak so far, only a plumbing check) or skip")
    p.add_argument("--memory-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--probe-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.models is None:
        args.models = ["deberta_v3_base", "bart_large"] if args.device.startswith("cuda") else ["tiny", "minilm"]
    return args


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run_benchmark(args, log)
    finally:
        torch.set_num_threads(threads)


def _run_benchmark(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    device = torch.device(args.device)
    methods = [m for m in ALL_METHODS if m in args.methods]
    if any(m in PEFT_METHODS for m in methods):
        try:
            import peft  # noqa: F401
        except ImportError:
            log("peft is not installed: skipping the PEFT comparison (pip install -e '.[dev]')")
            methods = [m for m in methods if m not in PEFT_METHODS]
    report: dict[str, Any] = {
        "environment": environment(device, args.threads),
        "settings": {k: (os.path.relpath(v, ROOT) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("probe_memory",)},
        "targets_at_most": TARGETS,
        "models": {},
    }
    for model_name in args.models:
        log(f"{model_name}: {', '.join(methods)}")
        report["models"][model_name] = benchmark_model(model_name, methods, args, log)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.probe_memory:
        torch.set_num_threads(args.threads)
        sched = Schedule(args.warmup, args.rounds * args.block, args.delta_t)
        mem = probe_memory(args.models[0], args.methods[0], sched, args.batch, args.length,
                           torch.device(args.device), args.memory_steps)
        print("MEMORY " + json.dumps(mem), flush=True)
        return
    report = run_benchmark(args, log=lambda s: print(s, flush=True))
    json_path, md_path = write_report(report, args.out)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
