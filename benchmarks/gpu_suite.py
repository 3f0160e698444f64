"""Every GPU result in ``benchmarks/results`` from one command (``make bench-gpu``).

::

    make bench-gpu                                        # the paper's shapes (batch 32 x 128), Llama-3.2-1B's (8 x 128)
    python -m benchmarks.gpu_suite --only step_fp32 loop  # a subset
    python -m benchmarks.gpu_suite --timeout-each 150 --loop-steps 300   # inside a fixed time budget

Runs, each in its own process, so that one failure (an out-of-memory, a missing package for the
real loop) does not lose the others: the step-time benchmark in fp32 and in bf16
(``<device>.*``, ``<device>-bf16.*``), the same for the Llama-3.2-1B-shaped decoder in processes of its
own (``<device>-llm.*``, ``<device>-bf16-llm.*``: its 1.24 B parameters in fp32 are the run most likely to
run out of memory, and must not take the encoders' results with them), AdaLoRA's step with parts left
out (``<device>-components.*``) and the real loop through ``experiments.run`` (``<device>-real-loop.*``). Ends with one line per
run (done, failed or timed out, and its minutes) and a non-zero exit status if any did not finish.
The first three need only torch, transformers, peft and accelerate; the real loop needs the
experiment stack (Hydra, datasets) and the packaged MiniLM and BBC corpus (see
``benchmarks/offline_kit.py`` for a GPU machine without internet).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.models import ROOT
from benchmarks.step_time import DEFAULT_MODELS

DEFAULT_OUT = ROOT / "benchmarks" / "results"
# The encoders share a process; the decoder (benchmarks/models.py's whole Llama-3.2-1B shape) has its own.
DECODER_MODELS = [m for m in DEFAULT_MODELS["cuda"] if m.startswith("llama")]
ENCODER_MODELS = [m for m in DEFAULT_MODELS["cuda"] if m not in DECODER_MODELS]
RUNS = ("step_fp32", "step_bf16", "llm_fp32", "llm_bf16", "components", "loop")


def plan(args: argparse.Namespace) -> dict[str, list[str]]:
    """Run name -> its ``python -m`` command line, for the runs ``args.only`` selects."""
    shapes = ["--device", args.device, "--models", *args.models, "--batch", str(args.batch),
              "--length", str(args.length), "--out", str(args.out)]
    schedule = ["--warmup", str(args.warmup), "--delta-t", str(args.delta_t), "--rounds", str(args.rounds)]
    step = ["benchmarks.step_time", *shapes, *schedule, "--memory", args.memory]
    llm = ["benchmarks.step_time", "--device", args.device, "--models", *args.llm_models, "--batch", str(args.llm_batch),
           "--length", str(args.length), "--out", str(args.out), *schedule, "--memory", args.memory,
           "--label", "llm"]
    commands = {
        "step_fp32": step,
        "step_bf16": [*step, "--precision", "bf16"],
        "llm_fp32": llm,
        "llm_bf16": [*llm, "--precision", "bf16"],
        "components": ["benchmarks.components", *shapes, *schedule],
        "loop": ["benchmarks.real_loop", "--model", args.loop_model, "--task", args.loop_task,
                 "--steps", str(args.loop_steps), "--seeds", *map(str, args.loop_seeds), "--out", str(args.out)],
    }
    if not args.llm_models:
        commands = {name: argv for name, argv in commands.items() if not name.startswith("llm_")}
    return {name: commands[name] for name in RUNS if name in args.only and name in commands}


def run_all(commands: dict[str, list[str]], timeout: float | None) -> dict[str, str]:
    """Each command in a fresh process, one after another; run name -> how it ended."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    outcome = {}
    for name, argv in commands.items():
        print(f"== {name}: python -m {' '.join(argv)}", flush=True)
        started = time.perf_counter()
        try:
            code = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, timeout=timeout).returncode
            status = "done" if code == 0 else f"failed (exit status {code})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
        outcome[name] = f"{status}, {(time.perf_counter() - started) / 60:.1f} min"
    return outcome


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_suite", description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", nargs="+", default=ENCODER_MODELS, help="the step-time and components runs' models")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--llm-models", nargs="*", default=DECODER_MODELS, help="the llm_* runs' models (empty: none)")
    p.add_argument("--llm-batch", type=int, default=8, help="the llm_* runs' batch (x --length tokens)")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--rounds", type=int, default=20, help="round-robin rounds of the step-time runs")
    # step_time's and components' own defaults; a smoke round shrinks them (warm-up > 2 x ΔT: one untimed mask)
    p.add_argument("--warmup", type=int, default=12, help="untimed steps of the step-time and components runs")
    p.add_argument("--delta-t", type=int, default=10, help="AdaLoRA's ΔT in the step-time and components runs")
    p.add_argument("--memory", choices=("subprocess", "inprocess", "none"), default="inprocess")
    p.add_argument("--loop-model", default="minilm")
    p.add_argument("--loop-task", default="bbc_pair")
    p.add_argument("--loop-steps", type=int, default=1000)
    p.add_argument("--loop-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--timeout-each", type=float, default=None, help="seconds per run, then it is stopped")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device is visible; --device cpu runs the same measurements on the CPU")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    outcome = run_all(plan(args), args.timeout_each)
    for name, status in outcome.items():
        print(f"{name}: {status}")
    return 0 if all(s.startswith("done") for s in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
