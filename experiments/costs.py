"""Run counts and GPU-hours of the sweeps, computed from ``conf/sweep/*.yaml``: ``make costs``.

::

    python -m experiments.costs              # the table of every sweep file, to stdout
    python -m experiments.costs --write      # (make costs) fill in README.md, docs/*.md, the sweep headers
    python -m experiments.costs --check      # exit 1 naming each stale number (tests/test_costs.py)

The numbers in the docs are written here, never by hand, so a sweep file that changes without
them fails a test. Where they go:

- a Markdown block between ``<!-- costs: ROWS -->`` and ``<!-- /costs -->`` in README.md and
  docs/*.md, where ROWS is ``all`` (every sweep file) and/or ``|``-separated rows, each a sweep
  name and command-line overrides (``lr_search_glue method=bitfit budget=none``: a value given
  there replaces the file's list, as in ``python -m experiments.run``);
- one line in each sweep file's header, starting with ``# make costs:``.

A sweep's *runs* are its distinct run directories: the cartesian product of its parameters (the
model too, where a sweep lists several), where a method without a size knob (full FT, BitFit) maps
every budget to one ``none`` directory, as the runner does. Its *GPU-hours* sum over those runs
optimiser steps × seconds per step: T = max_steps, else epochs × ceil(train examples / batch size)
from the task's hparams for that method (as the runner merges them) under the sweep file's own
``trainer`` values; seconds per step are the assumptions below (one A100-class GPU, the paper's
batch, a LoRA-type step, in the sweep's ``trainer.precision``: fp32 for the paper's sweeps, bf16 for
the decoder LLM sweeps; ±50%, evaluation left out: on the generation tasks, GSM8K above all,
evaluation adds a sizeable share). A sweep on a model × task without an
assumption (tiny models, the CPU demo, a sweep of your own) gets its runs and no GPU-hours; add its
line to :data:`SECONDS_PER_STEP` to estimate it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DEFAULT_BUDGET = "glue_0.3m"  # conf/config.yaml's default budget, for a sweep that lists none
BLOCK = re.compile(r"(<!-- costs: (?P<rows>[^>]*?) -->\n)(?P<body>.*?)(<!-- /costs -->)", re.S)
HEADER_PREFIX = "# make costs: "

#: Training examples per task (the train split the runs read; SQuAD: questions, before windowing).
TRAIN_EXAMPLES = {
    "glue_mnli": 392_702, "glue_sst2": 67_349, "glue_qqp": 363_846, "glue_qnli": 104_743, "glue_cola": 8_551,
    "glue_rte": 2_490, "glue_mrpc": 3_668, "glue_stsb": 5_749, "squad_v1": 87_599, "squad_v2": 130_319,
    "xsum": 204_045, "cnndm": 287_113,
    # decoder LLM tasks: GSM8K train; MetaMathQA (its runs stop at max_steps); LLM-Adapters' commonsense_170k
    "gsm8k": 7_473, "metamathqa_gsm8k": 395_000, "commonsense": 170_420,
}
#: Seconds per optimiser step, model x task, LoRA-type step at the task's batch size, one A100-class GPU in
#: fp32 (assumed from sequence lengths and batch sizes, not measured; a V100 is ~1.5x slower).
SECONDS_PER_STEP = {
    ("deberta_v3_base", "glue_mnli"): 0.15, ("deberta_v3_base", "glue_sst2"): 0.10,
    ("deberta_v3_base", "glue_qqp"): 0.15, ("deberta_v3_base", "glue_qnli"): 0.25,
    ("deberta_v3_base", "glue_cola"): 0.10, ("deberta_v3_base", "glue_rte"): 0.35,
    ("deberta_v3_base", "glue_mrpc"): 0.15, ("deberta_v3_base", "glue_stsb"): 0.10,
    ("deberta_v3_base", "squad_v1"): 0.25, ("deberta_v3_base", "squad_v2"): 0.25,
    ("bart_large", "xsum"): 4.0, ("bart_large", "cnndm"): 3.0,
}
# RoBERTa-base (sweep glue_roberta, tasks roberta_base/glue_*): the LoRA paper's batch 16 with dynamic padding and
# no disentangled attention (assumed, not measured).
SECONDS_PER_STEP.update({("roberta_base", f"roberta_base/glue_{task}"): seconds for task, seconds in {
    "mnli": 0.05, "sst2": 0.04, "mrpc": 0.05, "cola": 0.04, "qnli": 0.08, "qqp": 0.05, "rte": 0.10, "stsb": 0.05}.items()})
#: Decoder LLMs (sweeps llm_math, llm_commonsense, peft_compare, lr_search_llm), bf16 autocast, LoRA-type step on all
#: seven projections. Assumed, not measured: a frozen base costs ~4 x parameters x tokens FLOPs per step (forward,
#: and the backward through activations only), at ~40% of an A100's 312 bf16 TFLOP/s, plus ~50% overhead (padding,
#: optimiser, data), from the tokens per step: GSM8K batch 16 x ~250 tokens, commonsense_170k 16 x ~160,
#: MetaMathQA (PEFT's batch 4) 4 x ~350. Parameters: 1.24B, 1.54B, 3.2B, 8.0B, 7.2B.
_LLM_SECONDS = {"llama3_2_1b": (0.25, 0.16, 0.10), "qwen2_5_1_5b": (0.30, 0.20, 0.12),
                "llama3_2_3b": (0.60, 0.40, 0.22), "llama3_1_8b": (1.40, 0.90, 0.50),
                "mistral_7b": (1.30, 0.85, 0.45)}  # (gsm8k, commonsense, metamathqa_gsm8k)
SECONDS_PER_STEP.update({(model, task): seconds for model, row in _LLM_SECONDS.items()
                         for task, seconds in zip(("gsm8k", "commonsense", "metamathqa_gsm8k"), row)})
#: A method's step over a LoRA step: full FT updates every weight, AdaLoRA adds its allocator and penalty
#: (kind adalora, and PEFT's), DoRA its weight-norm pass (an assumption, not a measurement).
STEP_FACTOR_BY_NAME = {"full_ft": 1.4, "peft_dora": 1.5, "peft_adalora": 1.1}
STEP_FACTOR_BY_KIND = {"adalora": 1.1}
#: trainer.gradient_checkpointing: each block's forward runs again in the backward pass, one more forward on a step
#: of about three (an assumption, not a measurement).
CHECKPOINTING_FACTOR = 4 / 3


@dataclass(frozen=True)
class Cost:
    """One row: a sweep (with overrides), its distinct runs, and its GPU-hours (None: not estimated)."""

    row: str
    runs: int
    gpu_hours: float | None
    unestimated: tuple[str, ...] = ()  # model/task pairs without a seconds-per-step assumption


def sweep_files() -> list[str]:
    return sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


@cache
def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _listed(value: Any) -> list[str]:
    """A sweeper value (``a,b,c``, or a scalar) as its list, each value a string as Hydra passes it."""
    return [v.strip() for v in str(value).split(",")]


def _defaults_override(sweep: Mapping[str, Any], group: str) -> str | None:
    for entry in sweep.get("defaults") or []:
        if isinstance(entry, Mapping) and f"override /{group}" in entry:
            return str(entry[f"override /{group}"])
    return None


def parse_row(row: str) -> tuple[str, dict[str, list[str]]]:
    """``"lr_search_glue method=bitfit budget=none"`` -> (sweep name, {key: values})."""
    name, *overrides = row.split()
    if not (CONF / "sweep" / f"{name}.yaml").is_file():
        raise SystemExit(f"costs: no sweep file conf/sweep/{name}.yaml (row {row!r}); the sweeps are {sweep_files()}")
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"costs: row {row!r}: {item!r} is not key=value")
        parsed[key] = _listed(value)
    return name, parsed


def jobs(name: str, overrides: Mapping[str, list[str]] | None = None) -> list[dict[str, str]]:
    """Every job of the sweep as {key: value} (``model`` included) after the command-line ``overrides``."""
    sweep = _yaml(CONF / "sweep" / f"{name}.yaml")
    params = {k: _listed(v) for k, v in ((sweep.get("hydra") or {}).get("sweeper") or {}).get("params", {}).items()}
    params.update(overrides or {})
    for group, default in (("budget", DEFAULT_BUDGET), ("model", "deberta_v3_base"), ("task", "glue_rte")):
        params.setdefault(group, [_defaults_override(sweep, group) or default])
    keys = sorted(params)
    return [dict(zip(keys, values)) for values in itertools.product(*(params[k] for k in keys))]


def sweep_trainer(name: str) -> dict[str, Any]:
    """The sweep file's own ``trainer`` values (PEFT's batch and steps in peft_compare, bf16), which win over
    the task's hparams as they do in a run."""
    return dict(_yaml(CONF / "sweep" / f"{name}.yaml").get("trainer") or {})


def _method(name: str) -> dict[str, Any]:
    return _yaml(CONF / "method" / f"{name}.yaml")


@cache
def _effective_budget(method: str, budget: str) -> str:
    from experiments.runner import effective_budget

    return effective_budget(_method(method), budget)


def _run_key(job: Mapping[str, str]) -> tuple:
    """What tells two run directories apart: the job, with the budget the runner records it under."""
    return tuple(sorted({**job, "budget": _effective_budget(job["method"], job["budget"])}.items()))


def _kind(method: Mapping[str, Any]) -> str | None:
    from adalora.methods import resolve_kind

    return resolve_kind(method)[1].kind


def run_hours(model: str, job: Mapping[str, str], trainer: Mapping[str, Any] | None = None) -> float | None:
    """GPU-hours of one run (None without an assumption for its model x task, or without its task file);
    ``trainer``: the sweep file's own trainer values."""
    steering = tuple(sorted((k, v) for k, v in (trainer or {}).items() if k in ("batch_size", "grad_accum", "max_steps",
                                                                             "epochs", "gradient_checkpointing") and v is not None))
    return _hours(model, job["task"], job["method"], steering)


@cache
def _hours(model: str, task: str, method_name: str, trainer: tuple[tuple[str, Any], ...] = ()) -> float | None:
    """Steps and step time depend on the model, the task, the method and the sweep's trainer values only
    (not on lr, seed or budget)."""
    from adalora.methods import resolve_kind
    from experiments.spec import task_hparams  # the one hyperparameter precedence

    seconds = SECONDS_PER_STEP.get((model, task))
    examples = TRAIN_EXAMPLES.get(task.rsplit("/", 1)[-1])  # a backbone's folder of a task: the same data
    task_file = CONF / "task" / f"{task}.yaml"
    if seconds is None or examples is None or not task_file.is_file():
        return None
    method = _method(method_name)
    name, kind, defaults = resolve_kind(method)
    hp = {**task_hparams(_yaml(task_file), name, tuple(kind.hparams_blocks({**defaults, **method}))), **dict(trainer)}
    batch = int(hp["batch_size"]) * int(hp.get("grad_accum") or 1)
    steps = hp.get("max_steps") or int(hp["epochs"]) * math.ceil(examples / batch)
    factor = STEP_FACTOR_BY_NAME.get(method_name, STEP_FACTOR_BY_KIND.get(_kind(method), 1.0))
    if hp.get("gradient_checkpointing"):
        factor *= CHECKPOINTING_FACTOR
    return steps * seconds * factor / 3600


def cost(row: str) -> Cost:
    name, overrides = parse_row(row)
    distinct = {_run_key(job): job for job in jobs(name, overrides)}
    trainer = sweep_trainer(name)
    hours = [run_hours(job["model"], job, trainer) for job in distinct.values()]
    missing = tuple(sorted({f"{j['model']} x {j['task']}" + ("" if (CONF / "task" / f"{j['task']}.yaml").is_file()
                                                              else f" [no conf/task/{j['task']}.yaml]")
                            for j, h in zip(distinct.values(), hours) if h is None}))
    return Cost(row, len(distinct), None if missing else sum(hours), missing)


def rows_of(spec: str) -> list[str]:
    """A block's row list: ``all`` is every sweep file; rows are separated by ``|``."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split("|")):
        out.extend(sweep_files() if part == "all" else [part])
    return out


def hours_text(hours: float | None) -> str:
    """Rounded as the estimate deserves: 2 significant digits, at least whole hours."""
    if hours is None:
        return "—"
    if hours < 1:
        return "<1"
    digits = max(0, len(str(int(hours))) - 2)
    return f"~{round(hours, -digits):,.0f}"


def table(rows: Iterable[str]) -> str:
    lines = ["| sweep | distinct runs | GPU-hours (A100-class, fp32, ±50%) |", "|---|---:|---:|"]
    for c in map(cost, rows):
        precision = sweep_trainer(parse_row(c.row)[0]).get("precision") or "fp32"
        note = "" if precision == "fp32" or c.gpu_hours is None else f" ({precision})"
        lines.append(f"| `{c.row}` | {c.runs:,} | {hours_text(c.gpu_hours)}{note} |")
    return "\n".join(lines) + "\n"


def header_line(name: str) -> str:
    c = cost(name)
    precision = sweep_trainer(name).get("precision") or "fp32"
    hours = (f"{hours_text(c.gpu_hours)} GPU-h (one A100-class GPU, {precision}, ±50%)" if c.gpu_hours is not None
             else f"GPU-h not estimated ({', '.join(c.unestimated)}: no seconds-per-step assumption)")
    return f"{HEADER_PREFIX}{c.runs} distinct runs, {hours}; arithmetic and assumptions: experiments/costs.py"


# ----------------------------------------------------------------------------- the places they go
def _render_page(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + table(rows_of(m.group("rows"))) + m.group(4), text)


def _render_sweep(name: str, text: str) -> str:
    """The header with its ``# make costs:`` line, put before ``defaults:`` when it has none yet."""
    lines = text.splitlines(keepends=True)
    new = header_line(name) + "\n"
    for i, line in enumerate(lines):
        if line.startswith(HEADER_PREFIX):
            lines[i] = new
            return "".join(lines)
    at = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    return "".join(lines[:at] + [new] + lines[at:])


def rendered() -> dict[Path, str]:
    """Every file holding cost numbers -> its text with the numbers as the sweep files give them."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    out = {page: _render_page(page.read_text()) for page in pages if BLOCK.search(page.read_text())}
    for name in sweep_files():
        path = CONF / "sweep" / f"{name}.yaml"
        out[path] = _render_sweep(name, path.read_text())
    return out


def stale() -> list[str]:
    """The files whose cost numbers differ from what the sweep files give, as repo-relative paths."""
    return [str(path.relative_to(ROOT)) for path, text in rendered().items() if path.read_text() != text]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.costs", description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="fill in README.md, docs/*.md and the sweep headers")
    mode.add_argument("--check", action="store_true", help="exit 1 if any of them is stale")
    args = p.parse_args(argv)
    if args.write:
        for path, text in rendered().items():
            if path.read_text() != text:
                path.write_text(text)
                print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if args.check:
        files = stale()
        if files:
            print(f"stale run counts / GPU-hours in {', '.join(files)}: run `make costs`", file=sys.stderr)
        return 1 if files else 0
    print(table(sweep_files()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
