"""Sweep bookkeeping: the jobs a sweep expands to, what each job did, and a closing summary.

A sweep may run serially, in joblib workers or as SLURM array tasks, so the jobs cannot
report back through memory. Instead the launching process (Hydra's ``on_multirun_start``)
names a *ledger* file and exports it in ``ADALORA_SWEEP_LEDGER``; every job, in whatever
process it runs, appends one JSON line with its outcome (:func:`record_outcome`, called by
:func:`experiments.runner.run`). ``on_multirun_end`` reads the ledger and prints one line:
done / skipped / failed / total and where the results are. Jobs that never reported (killed,
out of time) are counted as missing, so nothing is lost silently.

Before the first job starts, ``on_multirun_start`` also composes and validates every job's
configuration (:func:`invalid_jobs`) and, if any cannot run, lists them all and exits 1: a bad
value in job 40 of 60 is found in a second, not after 39 trainings, and no directory is created.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

LEDGER_ENV = "ADALORA_SWEEP_LEDGER"
OUTCOMES = ("done", "skipped", "failed", "busy")


def expand_sweep(params: Mapping[str, str], cli_overrides: Sequence[str]) -> list[list[str]]:
    """The jobs of a sweep as Hydra's basic sweeper forms them: one override list per job.

    ``params`` is ``hydra.sweeper.params`` (the sweep file); ``cli_overrides`` are the
    command-line overrides, which replace a sweep-file list for the same key.
    """
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    parser = OverridesParser.create(config_loader=loader)
    lists: dict[str, list[str]] = {}
    for override in parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *cli_overrides]):
        key = override.get_key_element()
        if override.is_sweep_override():
            lists[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            lists[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*lists.values())]


def invalid_jobs(config: DictConfig, jobs: Sequence[Sequence[str]]) -> list[str]:
    """``job <n> (<overrides>): <problem>`` for every job of a sweep whose configuration fails
    :func:`experiments.spec.resolve` (every check before anything is created), composed as the launcher will
    compose it."""
    from experiments.spec import resolve

    loader = GlobalHydra.instance().config_loader()
    master = HydraConfig.instance().cfg
    shared = set.intersection(*(set(job) for job in jobs)) if len(jobs) > 1 else set()
    problems = []
    try:
        for num, overrides in enumerate(jobs):
            try:
                job_cfg = loader.load_sweep_config(config, list(overrides))
                HydraConfig.instance().set_config(job_cfg)  # the run path's override_dir reads the job's overrides
                resolve(job_cfg)
            except Exception as err:  # noqa: BLE001 - every bad job is listed, whatever its error
                own = " ".join(o for o in overrides if o not in shared)  # what sets this job apart
                problems.append(f"  job {num} ({own}): {type(err).__name__}: {err}")
    finally:
        HydraConfig.instance().cfg = master
    return problems


def record_outcome(run_dir: str | os.PathLike, outcome: str, status: str | None, reason: str | None = None) -> None:
    """Append this job's outcome to the sweep's ledger (no-op outside a sweep).

    One ``write`` of one short line on an ``O_APPEND`` descriptor, so concurrent jobs on
    one file system never interleave their lines.
    """
    ledger = os.environ.get(LEDGER_ENV)
    if not ledger:
        return
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    first_line = (reason or "").strip().splitlines()[:1]
    line = json.dumps({"job": _job_number(), "run_dir": str(Path(run_dir).resolve()), "outcome": outcome,
                       "status": status, "reason": first_line[0][:300] if first_line else None}) + "\n"
    Path(ledger).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _job_number() -> int | None:
    """Hydra's index of this job in the sweep (two jobs may share a run directory)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().job.num if HydraConfig.initialized() else None


def read_ledger(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of a ledger; the last entry per job wins (a requeued job reports again)."""
    path = Path(path)
    if not path.exists():
        return []
    latest: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            latest[(entry.get("job"), entry["run_dir"])] = entry
    return list(latest.values())


def summarize(entries: Sequence[Mapping[str, Any]], total: int, results_root: str) -> tuple[str, bool]:
    """The closing summary line(s) and whether the sweep is complete without failures."""
    counts = Counter(e["outcome"] for e in entries)
    missing = max(0, total - len(entries))
    line = (f"[sweep] {total} jobs: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
            + (f", {counts['busy']} busy (running in another job)" if counts["busy"] else "")
            + (f", {missing} not reported (killed or crashed: rerun the sweep)" if missing else "")
            + f"; results under {results_root}")
    failures = [f"  [{e['status']}] {e['run_dir']}: {e.get('reason') or ''}" for e in entries if e["outcome"] == "failed"]
    ok = not failures and not missing
    return "\n".join([line, *failures]), ok


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``) that ledgers a multirun.

    Exits with status 1 after the summary when a job failed or never reported, so scripts
    chaining a sweep and ``make figures`` notice.
    """

    def __init__(self) -> None:
        self.ledger: Path | None = None
        self.total = 0
        self.results_root = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.output_root)).resolve()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.ledger = root / ".sweeps" / f"{config.get('sweep_name', 'sweep')}-{stamp}-{os.getpid()}.jsonl"
        os.environ[LEDGER_ENV] = str(self.ledger)
        # Plain `-m task=... trainer.lr=a,b` has no sweep file: params is None.
        params_node = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params_node, resolve=False) if params_node is not None else {}
        jobs = expand_sweep(params, list(config.hydra.overrides.task))
        self.total = len(jobs)
        self.results_root = str(root)
        problems = invalid_jobs(config, jobs)
        if problems:
            print(f"[sweep] {len(problems)} of {self.total} jobs cannot run; nothing was started:", *problems,
                  sep="\n", flush=True)
            os.environ.pop(LEDGER_ENV, None)
            self.ledger = None
            sys.exit(1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.ledger is None:
            return
        os.environ.pop(LEDGER_ENV, None)
        entries = read_ledger(self.ledger)
        roots = {str(Path(e["run_dir"]).relative_to(self.results_root).parts[0]) for e in entries
                 if Path(e["run_dir"]).is_relative_to(self.results_root)}
        where = ", ".join(f"{self.results_root}/{r}" for r in sorted(roots)) or self.results_root
        text, ok = summarize(entries, self.total, where)
        print(text, flush=True)
        if not ok:
            sys.exit(1)
