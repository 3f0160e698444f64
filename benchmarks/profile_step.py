"""Where does AdaLoRA's extra step time go? torch.profiler op totals, AdaLoRA vs LoRA (or any pair).

::

    python -m benchmarks.profile_step --model minilm --methods lora adalora --steps 5
    python -m benchmarks.profile_step --model minilm --methods adalora peft_adalora

Prints, per method, the self time of every aten op summed over the profiled steps and their
difference, largest first. The steps are taken in the budget-decrease phase like in
:mod:`benchmarks.step_time`, interleaved one step per method at a time.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.models import MODELS, make_batches
from benchmarks.steps import (
    ALL_METHODS,
    PEFT_METHODS,
    Schedule,
    build_our_run,
    build_peft_run,
    method_config,
    sync_fn,
    train_step,
)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="minilm")
    p.add_argument("--methods", nargs=2, choices=ALL_METHODS, default=["lora", "adalora"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--delta-t", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = MODELS[args.model]
    sched = Schedule(args.warmup, args.steps, args.delta_t)
    runs, handle = [], None
    for method in args.methods:
        cfg = method_config(method, spec.level, sched)
        if method in PEFT_METHODS:
            runs.append(build_peft_run(method, args.model, cfg, sched, device, copy_from=handle))
        else:
            run, handle = build_our_run(method, args.model, cfg, sched, device)
            runs.append(run)
    batches = make_batches(runs[0].model, spec.head, args.batch, args.length, device)
    sync = sync_fn(device)
    for i in range(args.warmup):
        for run in runs:
            train_step(run, batches[i % len(batches)], sync)
    totals: list[dict[str, float]] = [defaultdict(float) for _ in runs]
    counts: list[dict[str, int]] = [defaultdict(int) for _ in runs]
    wall = [0.0 for _ in runs]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for i in range(args.steps):
        for j, run in enumerate(runs):
            with profile(activities=activities) as prof:
                dt = train_step(run, batches[i % len(batches)], sync).wall
            wall[j] += dt
            for evt in prof.key_averages():
                attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
                totals[j][evt.key] += getattr(evt, attr) / 1e3 / args.steps
                counts[j][evt.key] += evt.count // args.steps
    a, b = args.methods
    print(f"{args.model}, batch {args.batch} x {args.length}, {args.threads} threads; ms per step (self time)")
    print(f"wall (profiled): {a} {1e3 * wall[0] / args.steps:.1f} ms, {b} {1e3 * wall[1] / args.steps:.1f} ms")
    print(f"sum of self times: {a} {sum(totals[0].values()):.1f} ms, {b} {sum(totals[1].values()):.1f} ms")
    keys = set(totals[0]) | set(totals[1])
    rows = sorted(keys, key=lambda k: -abs(totals[1][k] - totals[0][k]))
    print(f"{'op':48s} {a + ' ms':>12s} {'n':>5s} {b + ' ms':>12s} {'n':>5s} {'diff':>9s}")
    for k in rows[: args.top]:
        print(f"{k[:48]:48s} {totals[0][k]:12.2f} {counts[0][k]:5d} {totals[1][k]:12.2f} {counts[1][k]:5d} "
              f"{totals[1][k] - totals[0][k]:+9.2f}")


if __name__ == "__main__":
    main()
