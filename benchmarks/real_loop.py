"""Per-step training time of the real loop, LoRA vs AdaLoRA: what a user of ``experiments.run`` waits.

::

    python -m benchmarks.real_loop                   # (make bench-loop) MiniLM × bbc_pair, 300 steps, seeds 0 1 2
    python -m benchmarks.real_loop --steps 1000 -- trainer.precision=bf16     # extra Hydra overrides after --
    python -m benchmarks.real_loop --model tiny_deberta --task tiny_glue_rte --steps 40 --seeds 0

``benchmarks.step_time`` times one synthetic step; this runs the training loop itself, data loading,
learning-rate schedule, accelerate and the allocator's bookkeeping included. Every run is
``python -m experiments.run`` in a fresh process (the command users run), one evaluation at the
end; the per-step time is ``train.step_time_s.median`` of its ``result.json`` (wall time per
optimiser step, evaluation excluded). Runs alternate between the methods seed by seed, with the
order rotating, so both see the same machine load. Unlike ``step_time`` this needs the experiment
stack (Hydra, datasets) and, for the default, the packaged MiniLM weights and BBC corpus
(``make install``).

Writes ``<out>/<device>-real-loop.json`` and ``.md``; the ratio's target (issue 15) is reported,
never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks import report as benchmark_report
from benchmarks.models import ROOT
from benchmarks.step_time import environment

DEFAULT_OUT = ROOT / "benchmarks" / "results"
METHODS = ("lora", "adalora")
TARGET = 1.05  # AdaLoRA/LoRA median step time in the real loop, at most


def run_overrides(args: argparse.Namespace, method: str, seed: int, runs_root: Path) -> list[str]:
    """The ``experiments.run`` command line of one timed run: no checkpoints or saved weights, and a
    single evaluation after the last step, so that the run's time is training."""
    steps = str(args.steps)
    return [f"task={args.task}", f"model={args.model}", f"method={method}", f"budget={args.budget}",
            f"seed={seed}", f"output_root={runs_root}", "sweep_name=real_loop", "force=true",
            f"trainer.max_steps={steps}", f"trainer.eval_every={steps}", f"trainer.checkpoint_every={steps}",
            "trainer.progress=false", "trainer.save_model=false", "trainer.save_best=false", *args.overrides]


def run_one(args: argparse.Namespace, method: str, seed: int, runs_root: Path) -> dict[str, Any]:
    """One run in a fresh process; its result.json's timing, or the reason it has none."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "experiments.run", *run_overrides(args, method, seed, runs_root)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    results = sorted((runs_root / "real_loop").glob(f"*/{method}/*/seed={seed}/**/result.json"))
    record = json.loads(results[-1].read_text()) if results else {}
    timing = (record.get("train") or {}).get("step_time_s") or {}
    if proc.returncode != 0 or record.get("status") != "success" or timing.get("median") is None:
        reason = record.get("reason") or proc.stderr.strip()[-2000:] or f"exit status {proc.returncode}"
        raise RuntimeError(f"{method} seed {seed} did not finish ({' '.join(cmd)}):\n{reason}")
    return {"method": method, "seed": seed, "median_step_ms": timing["median"] * 1e3,
            "mean_step_ms": timing["mean"] * 1e3, "steps": timing["steps"], "process_wall_s": wall,
            "device": (record.get("env") or {}).get("device"), "precision": record["train"].get("precision")}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method the median over seeds of each run's median step; AdaLoRA/LoRA of those, and paired by seed."""
    by_method = {m: {r["seed"]: r["median_step_ms"] for r in runs if r["method"] == m} for m in METHODS}
    medians = {m: statistics.median(v.values()) for m, v in by_method.items()}
    seeds = sorted(set(by_method["lora"]) & set(by_method["adalora"]))
    return {
        "median_step_ms": medians,
        "ratio": medians["adalora"] / medians["lora"],
        "ratio_paired_by_seed": statistics.median(by_method["adalora"][s] / by_method["lora"][s] for s in seeds),
        "target_at_most": TARGET,
    }


def benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="real_loop_") as tmp:
        for i, seed in enumerate(args.seeds):
            for method in METHODS[i % 2:] + METHODS[:i % 2]:
                log(f"  {method} seed {seed}: {args.steps} steps ...")
                runs.append(run_one(args, method, seed, Path(tmp)))
                log(f"  {method} seed {seed}: {runs[-1]['median_step_ms']:.2f} ms/step (median)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = environment(device, torch.get_num_threads(), runs[0]["precision"] or "fp32")
    env["device"] += "-real-loop"
    return {"environment": env,
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "runs": runs, "summary": summarize(runs)}


def to_markdown(report: dict[str, Any]) -> str:
    s, env, cfg = report["summary"], report["environment"], report["settings"]
    met = "met" if s["ratio"] <= s["target_at_most"] else "missed"
    lines = [
        f"# Real-loop step time: {env['device']} ({env['device_name']})", "",
        f"torch {env['torch']}, transformers {env['transformers']}; {env['date']}. "
        f"`python -m experiments.run task={cfg['task']} model={cfg['model']} budget={cfg['budget']}`, "
        f"{cfg['steps']} optimiser steps per run, seeds {cfg['seeds']}"
        + (f", overrides `{' '.join(cfg['overrides'])}`" if cfg["overrides"] else "")
        + ". Step time: `train.step_time_s` of each run's result.json (evaluation excluded).", "",
        "| method | seed | median ms/step | mean ms/step | steps | process wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        lines.append(f"| {r['method']} | {r['seed']} | {r['median_step_ms']:.2f} | {r['mean_step_ms']:.2f} | "
                     f"{r['steps']} | {r['process_wall_s']:.1f} |")
    lines += ["", "| a/b | median over seeds | paired by seed | target |", "|---|---:|---:|---|",
              f"| adalora/lora | {s['ratio']:.3f} | {s['ratio_paired_by_seed']:.3f} | "
              f"≤ {s['target_at_most']}: {met} |", ""]
    return "\n".join(lines)


write_report = partial(benchmark_report.write_report, markdown=to_markdown)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_loop", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--task", default="bbc_pair")
    p.add_argument("--budget", default="glue_0.3m")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps must be >= 2 (AdaLoRA needs a budget-decrease phase), got {args.steps}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"real loop: {args.model} x {args.task}, {args.steps} steps, seeds {args.seeds}", flush=True)
    report = benchmark(args, log=lambda s: print(s, flush=True))
    json_path, md_path = write_report(report, args.out)
    s = report["summary"]
    print(f"AdaLoRA/LoRA median step time {s['ratio']:.3f} (paired by seed {s['ratio_paired_by_seed']:.3f}); "
          f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
