"""What a results root holds and what is wrong with it: the top of the report page and the lines
``make figures`` prints last.

A user opening the report wants first what *they* ran (tasks, methods, budgets, seeds, how many
runs ended how) and every reason not to trust a number yet, in one place: configurations that
the tables refuse to pool (``analysis.grouping``), runs that failed or never finished, runs whose
dev metric had not stopped moving (``analysis.convergence``), and the tables and figures the
notebooks could not fill (their ``*_notes.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.collect import load_records, run_status
from analysis.convergence import convergence_table
from analysis.labels import budget_rank, method_rank
from analysis.paths import read_output

# Warning categories, in the order the page shows them.
CONFLICTS = "Conflicting configurations (not pooled in the tables)"
UNFINISHED = "Failed or unfinished runs"
UNCONVERGED = "Runs that had not converged (analysis.convergence)"
MISSING = "Missing cells and figures"


@dataclass
class RunSummary:
    """The runs under one results root, and the warnings about them by category (empty ones left out)."""

    results_root: Path
    by_status: dict[str, int]
    sweeps: list[str]
    tasks: list[str]
    methods: list[str]
    budgets: list[str]
    seeds: list[str]
    warnings: dict[str, list[str]] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(self.by_status.values())

    @property
    def warning_count(self) -> int:
        return sum(map(len, self.warnings.values()))

    def status_text(self) -> str:
        """``28 (27 success, 1 failed)``: the run count and how the runs ended."""
        counts = ", ".join(f"{n} {s}" for s, n in self.by_status.items())
        return f"{self.runs} ({counts or 'no runs'})"


def _run_name(row) -> str:
    return f"{row['task']}/{row['method']}/{row['budget']}/seed={row['seed']}"


def _distinct(values: pd.Series, key=None) -> list[str]:
    """The distinct names as the configs spell them (what the user typed), in the tables' order."""
    present = [str(v) for v in dict.fromkeys(values) if v is not None and not pd.isna(v)]
    return sorted(present, key=key or str)


def _conflicts(status: pd.DataFrame) -> list[str]:
    notes = status["conflict"].dropna()
    return list(dict.fromkeys(notes))  # one line per set of configurations, not one per run


def _unfinished(status: pd.DataFrame) -> list[str]:
    rows = status[status["status"] != "success"]
    return [f"{_run_name(r)}: {r['status']}" + (f" ({r['reason']})" if isinstance(r["reason"], str) else "")
            for _, r in rows.iterrows()]


def _unconverged(results_root: Path) -> list[str]:
    records = [r for _, r, _ in load_records(results_root) if r is not None and r.get("status") == "success"]
    table = convergence_table(records)
    lines = []
    for _, r in table[table["verdict"] != "converged"].iterrows():
        detail = (f"{r['evals']} evaluation(s)" if r["verdict"] == "too few evals"
                  else f"best {r['best']:.2f} at step {r['best_step']}, last two {r['previous']:.2f}, {r['last']:.2f}")
        lines.append(f"{_run_name(r)}: {r['verdict']} ({detail})")
    return lines


def _missing(out_dir: Path | None) -> list[str]:
    if out_dir is None:
        return []
    texts = (read_output(path) or "" for path in sorted(out_dir.glob("*_notes.md")))
    return [line.removeprefix("- ").strip() for text in texts for line in text.splitlines() if line.strip()]


def summarize(results_root: str | Path, out_dir: str | Path | None = None) -> RunSummary:
    """The summary of the runs under ``results_root``; ``out_dir`` holds the notebooks' notes."""
    results_root = Path(results_root)
    status = run_status(results_root)
    warnings = {CONFLICTS: _conflicts(status), UNFINISHED: _unfinished(status),
                UNCONVERGED: _unconverged(results_root), MISSING: _missing(Path(out_dir) if out_dir else None)}
    return RunSummary(
        results_root=results_root,
        by_status={str(s): int(n) for s, n in status["status"].value_counts().items()},
        sweeps=_distinct(status["sweep"]),
        tasks=_distinct(status["task"]),
        methods=_distinct(status["method"], key=method_rank),
        budgets=_distinct(status["budget"], key=budget_rank),
        seeds=_distinct(status["seed"]),
        warnings={k: v for k, v in warnings.items() if v},
    )
