"""Where AdaLoRA's extra step time goes: its step with the penalty, the allocator or both left out.

::

    python -m benchmarks.components --device cuda --models deberta_v3_base bart_large --batch 32
    python -m benchmarks.components --models deberta_v3_base_narrow --form fused   # host-cost proxy on a CPU

Steps, round-robin in one process: LoRA, AdaLoRA, AdaLoRA without γ·R ("no penalty"), without the
allocator ("no allocator"), and without both ("bare": the SVD-form layers, Λ in the optimiser).
The variants share one model and optimiser, so "bare" − LoRA is the cost of the layers and the
extra parameters, and each step that leaves a part out shows what that part costs inside a step,
where :mod:`benchmarks.step_time` times the allocator and the penalty on their own. Steps are
:func:`benchmarks.steps.train_step`'s: *host* is the time until the optimiser step is enqueued (on
a GPU, host ≈ wall means the device waits for the host).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks import report as benchmark_report
from benchmarks.models import MODELS, make_batches
from benchmarks.step_time import environment
from benchmarks.steps import (
    FORMS,
    PRECISIONS,
    Run,
    Schedule,
    build_our_run,
    method_config,
    sync_fn,
    train_step,
)

VARIANTS = {  # name -> (method, keep the penalty, keep the allocator)
    "lora": ("lora", True, True),
    "adalora": ("adalora", True, True),
    "adalora, no penalty": ("adalora", False, True),
    "adalora, no allocator": ("adalora", True, False),
    "adalora, bare": ("adalora", False, False),
}


def variant_runs(model_name: str, sched: Schedule, device: torch.device, precision: str,
                 exact_rounding: bool | None = None) -> dict[str, Run]:
    """One LoRA and one AdaLoRA run; the AdaLoRA variants share its model, optimiser and allocator.
    ``exact_rounding``: AdaLoRA's form (None: the device's)."""
    spec = MODELS[model_name]
    configs = {m: method_config(m, spec.level, sched, exact_rounding=exact_rounding) for m in ("lora", "adalora")}
    built = {m: build_our_run(m, model_name, cfg, sched, device, precision=precision)[0] for m, cfg in configs.items()}
    return {name: dataclasses.replace(built[m], reg_fn=built[m].reg_fn if reg else None,
                                      alloc_fn=built[m].alloc_fn if alloc else None)
            for name, (m, reg, alloc) in VARIANTS.items()}


def phase_host_ms(marks: list[tuple[str, float]], host: float, end: float) -> dict[str, float]:
    """Host milliseconds per phase of one :func:`train_step`, from its phase marks.

    Up to the optimiser nothing waits for the device, so the gaps between marks are host work (on a
    GPU: the time to enqueue that phase's kernels); the optimiser runs until the step is enqueued
    (``host``, counted from the first mark); the allocator until it finished (it synchronises, so on
    a GPU its row includes the device's remaining work); ``zero_grad`` until the step returned.
    """
    starts = dict(marks)
    ends = {phase: later for (phase, _), (_, later) in zip(marks, marks[1:])}
    ends["optimizer"] = marks[0][1] + host
    ends["zero_grad"] = end
    return {phase: (ends[phase] - start) * 1e3 for phase, start in starts.items()}


def measure(model_name: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Median host and wall ms per variant, wall over LoRA's, and median host ms per phase."""
    device, spec = torch.device(args.device), MODELS[model_name]
    sched = Schedule(args.warmup, args.rounds * len(VARIANTS), args.delta_t)
    runs = variant_runs(model_name, sched, device, args.precision, FORMS[args.form])
    built = {"lora": runs["lora"], "adalora": runs["adalora"]}
    batches = make_batches(built["lora"].model, spec.head, args.batch, args.length, device)
    sync = sync_fn(device)
    for i in range(args.warmup):
        for run in built.values():
            train_step(run, batches[i % len(batches)], sync)
    for run in runs.values():  # the AdaLoRA variants step one shared allocator: keep its clock in one place
        run.step = args.warmup
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    phases: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    names = list(runs)
    for k in range(args.rounds):
        for name in names[k % len(names):] + names[:k % len(names)]:
            run = runs[name]
            marks: list[tuple[str, float]] = []
            timing = train_step(run, batches[run.step % len(batches)], sync,
                                mark=lambda phase, marks=marks: marks.append((phase, time.perf_counter())))
            phases[name].append(phase_host_ms(marks, timing.host, time.perf_counter()))
            times[name].append((timing.host, timing.wall))
            for other in runs.values():
                other.step = max(other.step, run.step)
    lora_wall = statistics.median(w for _, w in times["lora"])
    return {name: {"host_ms": statistics.median(h for h, _ in t) * 1e3,
                   "wall_ms": statistics.median(w for _, w in t) * 1e3,
                   "wall_over_lora": statistics.median(w for _, w in t) / lora_wall,
                   "phase_host_ms": {phase: statistics.median(step[phase] for step in phases[name])
                                     for phase in phases[name][0]}}
            for name, t in times.items()}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.components", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["deberta_v3_base_narrow"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--length", type=int, default=16)
    p.add_argument("--warmup", type=int, default=12)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--delta-t", type=int, default=10)
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    p.add_argument("--form", choices=sorted(FORMS), default="device",
                   help="AdaLoRA's form: the device's (default; exact on a CPU), fused or exact")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=None,
                   help="also write <out>/<device>[-bf16]-components.json and .md (e.g. benchmarks/results)")
    return p.parse_args(argv)


def model_table(model_name: str, rows: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    lora, ada = rows["lora"]["phase_host_ms"], rows["adalora"]["phase_host_ms"]
    return "\n".join([
        f"{model_name}, {settings['device']}, {settings['precision']}, {settings['form']} form, "
        f"batch {settings['batch']} x {settings['length']}, median of {settings['rounds']} steps per variant", "",
        "| step | host ms | wall ms | × LoRA |", "|---|---:|---:|---:|",
        *(f"| {name} | {r['host_ms']:.1f} | {r['wall_ms']:.1f} | {r['wall_over_lora']:.3f} |" for name, r in rows.items()),
        "", "| phase (host ms, median) | LoRA | AdaLoRA | AdaLoRA − LoRA |", "|---|---:|---:|---:|",
        *(f"| {phase} | {lora.get(phase, 0.0):.2f} | {ada[phase]:.2f} | {ada[phase] - lora.get(phase, 0.0):+.2f} |"
          for phase in ada),
        ""])


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    head = [f"# AdaLoRA's step with parts left out: {env['device']} ({env['device_name']})", "",
            f"torch {env['torch']}, transformers {env['transformers']}; {env['date']}. "
            "`python -m benchmarks.components`: steps round-robin in one process; *host*: time until the "
            "optimiser step is enqueued; × LoRA: median wall time over LoRA's. Per phase: host time until the "
            "phase's work is enqueued (the allocator's until it finished, as it synchronises).", ""]
    return "\n".join(head + [model_table(name, rows, report["settings"]) for name, rows in report["models"].items()])


write_report = partial(benchmark_report.write_report, markdown=to_markdown)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report: dict[str, Any] = {"environment": environment(torch.device(args.device), args.threads, args.precision),
                              "settings": settings, "models": {}}
    report["environment"]["device"] += "-components"
    for model_name in args.models:
        report["models"][model_name] = measure(model_name, args)
        print(model_table(model_name, report["models"][model_name], settings), flush=True)
    if args.out is not None:
        json_path, md_path = write_report(report, args.out)
        print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
