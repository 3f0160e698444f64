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
  The warm-up runs at least one masking step, so that one-off costs of a first mask (CUDA loads
  a kernel's module at its first launch) are not timed.
* **regulariser share**: forward + backward of γ·R(P, Q) alone, median, over the median step time,
  with the task loss's gradients already in ``.grad`` as in a step.
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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from adalora.methods import MethodConfigError
from benchmarks.memory import memory_in_subprocess, probe_memory
from benchmarks.models import MODELS, ROOT, make_batches
from benchmarks.op_count import op_report
from benchmarks.report import paired, ratio, round_medians, summarize, targets_for, write_report
from benchmarks.steps import (
    ALL_METHODS,
    FORMS,
    OUR_METHODS,
    PEFT_METHODS,
    PRECISIONS,
    Run,
    Schedule,
    build_our_run,
    build_peft_run,
    method_config,
    regularizer_seconds,
    step_flops,
    sync_fn,
    train_step,
)

__all__ = ["ALL_METHODS", "OUR_METHODS", "PEFT_METHODS", "RATIO_PAIRS", "Schedule", "method_config",
           "memory_in_subprocess", "parse_args", "run_benchmark", "targets_for", "write_report", "main"]

DEFAULT_OUT = ROOT / "benchmarks" / "results"

# The paper's encoder and encoder-decoder shapes and a Llama-3.2-1B-shaped decoder: reduced on a CPU, whole
# on a GPU (benchmarks/models.py).
DEFAULT_MODELS = {"cpu": ["tiny", "minilm", "llama3_2_1b_reduced"],
                  "cuda": ["deberta_v3_base", "bart_large", "llama3_2_1b"]}

# Ratios reported per model (a/b); lora/peft_lora run the same computation, so theirs shows the
# noise floor of the machine.
RATIO_PAIRS = (("adalora", "lora"), ("adalora", "peft_adalora"), ("peft_adalora", "peft_lora"), ("lora", "peft_lora"))


# ----------------------------------------------------------------------------- benchmark
def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def benchmark_model(model_name: str, methods: Sequence[str], args: argparse.Namespace,
                    log: Callable[[str], None]) -> dict[str, Any]:
    spec = MODELS[model_name]
    device = torch.device(args.device)
    sched = Schedule(args.warmup, args.rounds * args.block, args.delta_t)
    sync = sync_fn(device)
    runs: list[Run] = []
    skipped: dict[str, str] = {}
    handle = None
    for method in methods:
        cfg = method_config(method, spec.level, sched, exact_rounding=FORMS[args.form])
        if cfg is None:
            skipped[method] = f"no {method} at budget level {spec.level} in the paper"
            continue
        if method in PEFT_METHODS:
            runs.append(build_peft_run(method, model_name, cfg, sched, device,
                                       copy_from=handle if method == "peft_adalora" else None,
                                       precision=args.precision))
        else:
            try:
                run, h = build_our_run(method, model_name, cfg, sched, device, precision=args.precision)
            except MethodConfigError as err:  # the method cannot adapt this backbone (BitFit: Llama has no biases)
                skipped[method] = str(err)
                continue
            handle = h if method == "adalora" else handle
            runs.append(run)
        log(f"  built {model_name}/{method}")
    batches = make_batches(runs[0].model, spec.head, args.batch, args.length, device)
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
    by_round = {run.method: round_medians(run, args.warmup, args.block) for run in runs}
    del runs
    op_counts = None
    if args.op_counts and "lora" in results and "adalora" in results:
        op_counts = op_report([model_name], device)[model_name]
        log(f"  kernels per step: LoRA {op_counts['lora_total']}, AdaLoRA {op_counts['adalora_total']} "
            f"({op_counts['extra']:+d}, {op_counts['extra_per_matrix']:+.2f} per adapted matrix)")
    if args.memory != "none":
        for method in results:
            mem = probe_memory(model_name, method, sched, args.batch, args.length, device, args.memory_steps,
                               args.precision, FORMS[args.form]) \
                if args.memory == "inprocess" else memory_in_subprocess(model_name, method, args)
            results[method].update({"peak_memory_mb": mem["peak_mb"], "train_memory_mb": mem["train_mb"],
                                    "memory_kind": mem["kind"]})
            log(f"  memory {method:17s} peak {mem['peak_mb']:.0f} MB (+{mem['train_mb']:.0f} MB)")
    for r in results.values():
        r.setdefault("peak_memory_mb", None)
        r.setdefault("train_memory_mb", None)
        r.setdefault("memory_kind", None)

    def pair_ratio(a: str, b: str, key: str) -> float | None:
        return ratio(results.get(a, {}).get(key), results.get(b, {}).get(key))

    ratios = {
        f"{a}/{b}": {
            "wall": pair_ratio(a, b, "median_step_ms"),
            "paired": paired(by_round, a, b),
            "fastest": pair_ratio(a, b, "min_step_ms"),
            "cpu": pair_ratio(a, b, "median_cpu_ms"),
            "flops": pair_ratio(a, b, "flops_per_step"),
            "peak_memory": pair_ratio(a, b, "peak_memory_mb"),
            "train_memory": pair_ratio(a, b, "train_memory_mb"),
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
        "op_counts": op_counts,
    }


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return "cpu"


def environment(device: torch.device, threads: int, precision: str = "fp32") -> dict[str, Any]:
    import transformers

    try:
        import peft

        peft_version = peft.__version__
    except ImportError:  # pragma: no cover - peft is a dev dependency
        peft_version = None
    return {
        "device": device_label(device) + ("" if precision == "fp32" else f"-{precision}"),
        "precision": precision,
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


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_time", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None,
                   help=f"default: {' '.join(DEFAULT_MODELS['cpu'])} on CPU, {' '.join(DEFAULT_MODELS['cuda'])} on CUDA")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(ALL_METHODS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--warmup", type=int, default=12,
                   help="untimed steps per method (t_i = warmup // 2); must include a masking step")
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
    p.add_argument("--label", default=None,
                   help="result files <device>-<label>.*, beside the default run's (e.g. llm: a decoder-only run)")
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                   help="bf16: the forward under autocast, as trainer.precision=bf16 (results file <device>-bf16.*)")
    p.add_argument("--form", choices=sorted(FORMS), default="device",
                   help="our AdaLoRA's form: the device's (default: exact on a CPU, fused on a GPU), fused or exact")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA; off by default, as in training)")
    p.add_argument("--op-counts", action=argparse.BooleanOptionalAction, default=True,
                   help="count kernels per step, LoRA vs AdaLoRA (benchmarks/op_count.py; the launch-overhead proxy)")
    p.add_argument("--probe-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.models is None:
        args.models = DEFAULT_MODELS["cuda" if args.device.startswith("cuda") else "cpu"]
    if not Schedule(args.warmup, args.rounds * args.block, args.delta_t).warmup_masking_steps():
        p.error(f"--warmup {args.warmup} runs no masking step (t > warmup // 2 with t % ΔT == 0) before the timing, "
                f"so the first mask's one-off costs would be timed; use --warmup > 2 * --delta-t "
                f"(here >= {2 * args.delta_t + 1})")
    return args


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
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
        "environment": environment(device, args.threads, args.precision),
        "settings": {k: (os.path.relpath(v, ROOT) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("probe_memory",)},
        "targets_at_most": targets_for(device.type),
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
                           torch.device(args.device), args.memory_steps, args.precision, FORMS[args.form])
        print("MEMORY " + json.dumps(mem), flush=True)
        return
    report = run_benchmark(args, log=lambda s: print(s, flush=True))
    json_path, md_path = write_report(report, args.out, label=args.label)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
