"""The benchmark's numbers per run (medians, shares, paired ratios) and the report files
(``<device>.json`` and ``<device>.md``)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.op_count import to_markdown as op_count_markdown
from benchmarks.steps import Run, Schedule, StepTiming

# Targets, reported in the Markdown and never asserted: device kind -> ratio or method -> estimator -> at most.
# On a CPU our AdaLoRA runs the exact form, PEFT's own computation (issue 7); on a GPU the fused form (issue 15).
TARGETS = {
    "cpu": {
        "adalora/lora": {"wall": 1.04, "peak_memory": 1.02},
        "adalora/peft_adalora": {"wall": 0.95},
        "adalora": {"allocator_share": 0.005},
    },
    "gpu": {
        "adalora/lora": {"wall": 1.04, "peak_memory": 1.02},
        "adalora/peft_adalora": {"wall": 0.6},
        "adalora": {"allocator_plus_regularizer": 0.01},
    },
}


def targets_for(device_type: str) -> dict[str, dict[str, float]]:
    return TARGETS["cpu" if device_type == "cpu" else "gpu"]


def ratio(a: float | None, b: float | None) -> float | None:
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
        "median_host_ms": statistics.median(t.host for t in run.timings) * 1e3,
        "allocator_ms_mean": statistics.fmean(t.alloc_wall for t in run.timings) * 1e3 if has_alloc else None,
        "allocator_ms_plain_median": alloc_ms([t for t in run.timings if t.step not in masking]),
        "allocator_ms_mask_median": alloc_ms([t for t in run.timings if t.step in masking]),
        "allocator_share": statistics.fmean(t.alloc_wall for t in run.timings) / med if has_alloc else None,
        "allocator_share_cpu": statistics.fmean(t.alloc_cpu for t in run.timings) / med_cpu if has_alloc else None,
        "regularizer_ms": None if reg is None else reg[0] * 1e3,
        "regularizer_share": None if reg is None else reg[0] / med,
        "regularizer_share_cpu": None if reg is None else reg[1] / med_cpu,
    }


def round_medians(run: Run, warmup: int, block: int) -> dict[int, float]:
    rounds: dict[int, list[float]] = {}
    for t in run.timings:
        rounds.setdefault((t.step - warmup) // block, []).append(t.wall)
    return {k: statistics.median(v) for k, v in rounds.items()}


def paired(by_round: dict[str, dict[int, float]], a: str, b: str) -> float | None:
    """Median over rounds of a's block median / b's block median (the two ran minutes apart at most)."""
    if a not in by_round or b not in by_round:
        return None
    return statistics.median(by_round[a][k] / by_round[b][k] for k in by_round[a] if k in by_round[b])


# ----------------------------------------------------------------------------- report
def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _sum_or_none(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _verdicts(targets: dict[str, float], values: dict[str, float | None], pct: bool = False) -> str:
    out = []
    for key, limit in targets.items():
        value = values.get(key)
        goal = f"{key.replace('_', ' ')} ≤ {f'{100 * limit:.1f}%' if pct else limit}"
        out.append(goal if value is None else f"{goal}: {'met' if value <= limit else 'missed'}")
    return "; ".join(out)


def to_markdown(report: dict[str, Any]) -> str:
    env, s, targets = report["environment"], report["settings"], report["targets_at_most"]
    lines = [
        f"# Step-time benchmark: {env['device']} ({env['device_name']})",
        "",
        f"torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}; {env['threads']} "
        f"intra-op thread(s) on {env['cpu_count']} CPUs; {env['date']}. Precision {env.get('precision', 'fp32')}"
        f"{', TF32 matmuls' if s.get('tf32') else ''}. Batch {s['batch']} × length {s['length']}; "
        f"{s['warmup']} warm-up steps, then {s['rounds']} rounds × {s['block']} steps per method, round-robin in "
        "one process. Step = forward + backward (task loss + γ·R) + grad clipping + AdamW + allocator + "
        "zero_grad. *wall*: median wall time; *host*: median time until the optimiser step is enqueued (on a GPU, "
        "host ≈ wall means the GPU waits for the host to launch kernels); *CPU*: median CPU time of the process (does "
        "not count waiting for a busy CPU). *allocator*: mean allocator time per step, masking steps included, over the median step; "
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
            "| method | trainable (paper) | wall ms | IQR ms | × LoRA | host ms | CPU ms | × LoRA | GFLOP | allocator | "
            "regulariser | peak MB | train MB | × LoRA |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for method, r in methods.items():
            alloc = "–" if r["allocator_share"] is None else \
                f"{_pct(r['allocator_share'])} / {_pct(r['allocator_share_cpu'])}"
            reg = "–" if r["regularizer_share"] is None else \
                f"{_pct(r['regularizer_share'])} / {_pct(r['regularizer_share_cpu'])}"
            lines.append(
                f"| {method} | {r['trainable_paper']:,} | {r['median_step_ms']:.1f} | "
                f"{r['q1_step_ms']:.0f}–{r['q3_step_ms']:.0f} | "
                f"{_fmt(ratio(r['median_step_ms'], lora.get('median_step_ms')), '.3f')} | "
                f"{_fmt(r.get('median_host_ms'), '.1f')} | {r['median_cpu_ms']:.1f} | {_fmt(ratio(r['median_cpu_ms'], lora.get('median_cpu_ms')), '.3f')} | "
                f"{r['flops_per_step'] / 1e9:.1f} | {alloc} | {reg} | {_fmt(r['peak_memory_mb'], '.0f')} | "
                f"{_fmt(r['train_memory_mb'], '.0f')} | "
                f"{_fmt(ratio(r['peak_memory_mb'], lora.get('peak_memory_mb')), '.3f')} |"
            )
        for method, why in m["skipped"].items():
            lines.append(f"| {method} | skipped: {why} |" + " |" * 12)
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
            lines.append(f"| {pair}{note} | {cells} | {_verdicts(targets.get(pair, {}), r)} |")
        lines += ["", "| share of a step | allocator, wall | allocator, CPU | regulariser, wall | regulariser, CPU | "
                  "allocator + regulariser, wall | target |", "|---|---:|---:|---:|---:|---:|---|"]
        for method, r in m["shares"].items():
            both = {"allocator_plus_regularizer": _sum_or_none(r["allocator_share"], r["regularizer_share"]),
                    "allocator_share": r["allocator_share"]}
            cells = " | ".join(_pct(r[k]) for k in
                               ("allocator_share", "allocator_share_cpu", "regularizer_share", "regularizer_share_cpu"))
            lines.append(f"| {method} | {cells} | {_pct(both['allocator_plus_regularizer'])} | "
                         f"{_verdicts(targets.get(method, {}), both, pct=True)} |")
        if m.get("op_counts"):
            lines += ["", "Kernels per training step (ATen ops without views and host scalar reads, batch 2 × 16; "
                      "the launch-overhead proxy, `python -m benchmarks.op_count`):", "",
                      op_count_markdown({name: m["op_counts"]}).rstrip("\n")]
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path,
                 markdown: Callable[[dict[str, Any]], str] = to_markdown, label: str | None = None) -> tuple[Path, Path]:
    """``<out>/<device label>[-<label>].json`` and ``.md`` (``markdown`` renders it: step time's by default)."""
    out.mkdir(parents=True, exist_ok=True)
    label = report["environment"]["device"] + (f"-{label}" if label else "")
    json_path, md_path = out / f"{label}.json", out / f"{label}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
