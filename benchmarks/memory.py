"""Peak memory of a few training steps of one method, measured in a fresh process.

CPU: peak RSS (``VmHWM``) with glibc told to unmap freed blocks of 64 KiB and more, so that it
follows the live tensors; GPU: CUDA max allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.models import MODELS, ROOT, make_batches
from benchmarks.steps import (
    PEFT_METHODS,
    Schedule,
    build_our_run,
    build_peft_run,
    method_config,
    sync_fn,
    train_step,
)


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
                 steps: int, precision: str = "fp32", exact_rounding: bool | None = None) -> dict[str, float]:
    """Peak memory of ``steps`` training steps of one method, in this (fresh) process."""
    spec = MODELS[model_name]
    cfg = method_config(method, spec.level, sched, exact_rounding=exact_rounding)
    run = build_peft_run(method, model_name, cfg, sched, device, precision=precision) if method in PEFT_METHODS \
        else build_our_run(method, model_name, cfg, sched, device, precision=precision)[0]
    run.step = sched.warmup  # same phase as the timed steps: decrease phase, masking every ΔT
    batches = make_batches(run.model, spec.head, batch, length, device)
    sync = sync_fn(device)
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
           "--delta-t", str(args.delta_t), "--memory-steps", str(args.memory_steps), "--threads", str(args.threads),
           "--precision", args.precision, "--form", args.form] + (["--tf32"] if args.tf32 else [])
    # glibc malloc: return every block >= 64 KiB to the OS when freed, so that the peak RSS follows
    # the live tensors rather than heap fragmentation (which differs from method to method).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    raise RuntimeError(f"memory probe for {model_name}/{method} failed:\n{proc.stderr[-3000:]}")
