"""The baselines' learning-rate search, as the paper ran it: select, write, hand off.

The paper tunes each baseline's learning rate on the dev set (§4.1: LoRA from {5e-5, 8e-5,
1e-4, 2e-4}; App. C.2: {8e-5, 5e-5, 3e-5, 1e-4, 3e-4, 5e-4, 8e-4, 1e-3} on GLUE, the same batch
size for every method per data set). The sweeps ``conf/sweep/lr_search_{glue,squad,nlg}.yaml``
train each baseline once per grid value into ``<output_root>/lr_search/lr=<lr>/...``; then

    python -m experiments.lr_search select outputs_lr_search/lr_search --out conf/selected_lr.yaml

picks, per task × method × budget, the learning rate with the best dev metric and writes it,
with the evidence, to a YAML file that is committed and reviewed like any config. Task configs
take the value through the ``${selected_lr:task,method,budget,fallback}`` resolver
(:func:`selected_lr`), which returns the documented fallback when the file has no entry.

Under ``protocol=heldout`` (docs/protocol.md) the search runs select on the validation split carved
from train, never on dev: ``make lr-search PROTOCOL=heldout`` runs the sweeps with
``protocol=heldout`` into their own output root and writes ``conf/selected_lr_heldout.yaml``, which
the held-out runs read (a run reads the selection file of its own protocol).

A selection is keyed by task × method × budget, not by model: runs of one group on two models are
refused rather than averaged. The decoder search (``lr_search_llm``) runs on Llama-3.2-1B, and its
selection serves every decoder of ``llm_math`` / ``llm_commonsense`` (an assumption their headers state).

Selection rules (all deterministic):
  * score of a run = its best evaluation of the task's main metric (``metrics.best``, the number
    the tables report; ``--which final`` for the last evaluation); under ``protocol=heldout``, the
    validation evaluation at the selected step (or the last one) instead
    (``experiments.protocol.selection_eval``);
  * score of a learning rate = mean over its seeds; a learning rate with a diverged run (loss
    NaN/inf) or a NaN score is not eligible; failed / OOM / unfinished runs are left out and
    listed under ``incomplete`` (re-run the sweep, which resumes them);
  * ties go to the smaller learning rate; a group with no eligible learning rate gets no entry,
    so its runs keep the fallback, and is listed under ``unresolved``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adalora.methods import MethodConfigError, has_size_knob
from experiments.protocol import DEFAULT_PROTOCOL, selection_eval
from experiments.results import RESULT_FILE, RunRecord, read_record

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SELECTED_LR_FILE = PROJECT_ROOT / "conf" / "selected_lr.yaml"
# Tests and side-by-side studies point runs at another selection file (another protocol's:
# the variable with the protocol's suffix, e.g. ADALORA_SELECTED_LR_HELDOUT).
SELECTED_LR_ENV = "ADALORA_SELECTED_LR"


@dataclass(frozen=True)
class Trial:
    """One finished (or not) run of the search, reduced to what selection needs."""

    task: str
    method: str
    budget: str
    lr: float
    seed: int
    status: str
    score: float | None
    metric: str | None
    run_dir: str
    protocol: str = DEFAULT_PROTOCOL
    model: str | None = None  # the record's run.model: a selection holds one model's learning rates


def _budget_key(method: str, budget: str) -> str:
    """``none`` for a method without a size knob (full FT, BitFit), as the runner records it."""
    if budget == "none":
        return budget
    try:
        return budget if has_size_knob(method) else "none"
    except MethodConfigError:  # a name that only the method config's ``kind``/``module`` resolves: sized
        return budget


def trial_from_record(record: RunRecord | Mapping[str, Any], run_dir: str, which: str = "best") -> Trial | None:
    """A search trial from a run's record (typed, or a ``result.json`` dict); None when the run set no explicit lr."""
    if not isinstance(record, RunRecord):
        record = RunRecord.from_dict(record)
    run = record.run
    lr = (record.config.get("trainer") or {}).get("lr")
    if lr is None or not run:
        return None
    metrics = record.metrics or {}
    metric = metrics.get("main_metric")
    value = selection_eval(metrics, which).get(metric) if metric else None
    return Trial(task=run["task"], method=run["method"], budget=_budget_key(run["method"], run["budget"]),
                 lr=float(lr), seed=int(run["seed"]), status=record.status.value,
                 score=None if value is None else float(value), metric=metric, run_dir=run_dir,
                 protocol=run.get("protocol") or DEFAULT_PROTOCOL, model=run.get("model"))


def collect_trials(results_root: str | os.PathLike, which: str = "best") -> list[Trial]:
    """Every run under ``results_root`` that trained with an explicit ``trainer.lr``."""
    trials = []
    for path in sorted(Path(results_root).rglob(RESULT_FILE)):
        record = read_record(path.parent)
        trial = trial_from_record(record, str(path.parent), which) if record else None
        if trial is not None:
            trials.append(trial)
    return trials


def _eligible_score(trials: Sequence[Trial]) -> float | None:
    """Mean score over the finished seeds of one learning rate; None if it is not eligible."""
    if any(t.status == "diverged" for t in trials):
        return None
    scores = [t.score for t in trials if t.status == "success" and t.score is not None]
    if not scores or any(math.isnan(s) for s in scores):
        return None
    return sum(scores) / len(scores)


def select(trials: Iterable[Trial]) -> dict[str, Any]:
    """Best learning rate per (task, method, budget); see the module docstring for the rules.

    All trials must be of one protocol: a held-out search scored on validation and a paper one
    scored on dev cannot be ranked together.
    """
    trials = list(trials)
    protocols = sorted({t.protocol for t in trials}) or [DEFAULT_PROTOCOL]
    if len(protocols) > 1:
        raise ValueError(f"the search runs are of protocols {protocols}; select each from its own output root "
                         "(make lr-search PROTOCOL=... keeps them apart)")
    groups: dict[tuple[str, str, str], dict[float, list[Trial]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        groups[(t.task, t.method, t.budget)][t.lr].append(t)
    selected: dict[str, Any] = {}
    unresolved, incomplete = [], []
    for (task, method, budget), by_lr in sorted(groups.items()):
        models = sorted({str(t.model) for runs in by_lr.values() for t in runs})
        if len(models) > 1:
            raise ValueError(f"{task}/{method}/{budget}: search runs on models {models}; a selection is keyed by task x "
                             "method x budget, so select each model's runs from its own results root")
        evidence, best = {}, None
        for lr in sorted(by_lr):
            runs = by_lr[lr]
            incomplete += [t.run_dir for t in runs if t.status not in ("success", "diverged")]
            score = _eligible_score(runs)
            statuses = sorted({t.status for t in runs})
            evidence[lr] = round(score, 4) if score is not None else "/".join(statuses)
            if score is not None and (best is None or score > best[1]):  # strict: ties keep the smaller lr
                best = (lr, score)
        if best is None:
            unresolved.append(f"{task}/{method}/{budget}")
            continue
        metric = next(t.metric for runs in by_lr.values() for t in runs if t.metric)
        seeds = sorted({t.seed for runs in by_lr.values() for t in runs})
        selected.setdefault(task, {}).setdefault(method, {})[budget] = {
            "lr": best[0], "metric": metric, "score": round(best[1], 4), "seeds": seeds, "grid": evidence,
        }
    return {"selected": selected, "unresolved": unresolved, "incomplete": sorted(incomplete), "protocol": protocols[0]}


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = {task: {m: dict(b) for m, b in methods.items()} for task, methods in (old or {}).items()}
    for task, methods in new.items():
        for method, budgets in methods.items():
            merged.setdefault(task, {}).setdefault(method, {}).update(budgets)
    return merged


_HEADER = """\
# Learning rates of the baselines, selected on the {split} metric by the paper's search (make lr-search), protocol={protocol}.
# Written by: python -m experiments.lr_search select {root} --out {out}
# Rules (experiments/lr_search.py): score = mean over seeds of the run's {which} main-metric evaluation;
# diverged / NaN learning rates are not eligible; ties go to the smaller lr. Task configs read
# selected.<task>.<method>.<budget>.lr through ${{selected_lr:...}}; a missing entry uses the fallback
# written in the task config (docs/fidelity.md). Review the `grid` evidence before committing.
# Updated: {date}
"""


def write_selection(out: str | os.PathLike, result: dict[str, Any], root: str, which: str, merge: bool = True) -> Path:
    """Write (atomically) the selection file; with ``merge`` keep entries of groups not re-selected."""
    out = Path(out)
    protocol = result.get("protocol", DEFAULT_PROTOCOL)
    previous = load_selection(out) if merge and out.exists() else {}
    if previous and previous.get("protocol", DEFAULT_PROTOCOL) != protocol:
        raise ValueError(f"{out} holds protocol={previous.get('protocol', DEFAULT_PROTOCOL)} selections, these runs are "
                         f"protocol={protocol}: write them to {selection_file(protocol)} (--out) instead")
    body = {
        "protocol": protocol,
        "selected": _merge(previous.get("selected") or {}, result["selected"]),
        "unresolved": result["unresolved"],
        "incomplete": result["incomplete"],
    }
    split = "dev" if protocol == DEFAULT_PROTOCOL else "validation (carved from train)"
    text = _HEADER.format(root=root, out=out, which=which, date=_dt.date.today().isoformat(), split=split,
                          protocol=protocol)
    text += yaml.safe_dump(body, sort_keys=True, default_flow_style=None, width=120)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------ hand-off to the runs
_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}


def selection_file(protocol: str = DEFAULT_PROTOCOL) -> Path:
    """The selection file runs of ``protocol`` read: ``conf/selected_lr.yaml`` for the default one,
    ``conf/selected_lr_<protocol>.yaml`` for another (each overridable by its environment variable)."""
    suffix = "" if protocol == DEFAULT_PROTOCOL else f"_{protocol}"
    default = SELECTED_LR_FILE.with_name(f"{SELECTED_LR_FILE.stem}{suffix}{SELECTED_LR_FILE.suffix}")
    return Path(os.environ.get(SELECTED_LR_ENV + suffix.upper()) or default)


def load_selection(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed selection file ({} when absent); bad content is an error that names the file."""
    path = Path(path)
    if not path.exists():
        return {}
    mtime = path.stat().st_mtime
    cached = _CACHE.get(str(path))
    if cached and cached[0] == mtime:
        return cached[1]
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("selected") or {}, dict):
        raise ValueError(f"{path}: expected a mapping with a `selected` mapping (task -> method -> budget -> lr)")
    _CACHE[str(path)] = (mtime, data)
    return data


def selected_lr(task: str, method: str, budget: str, fallback: float, *, _root_: Any = None) -> float:
    """OmegaConf resolver ``${selected_lr:task,method,budget,fallback}``: the searched lr or the fallback,
    from the selection file of the run's ``protocol`` (OmegaConf passes the config root as ``_root_``)."""
    protocol = (_root_.get("protocol") if _root_ is not None else None) or DEFAULT_PROTOCOL
    path = selection_file(protocol)
    entry = ((load_selection(path).get("selected") or {}).get(task) or {}).get(method) or {}
    chosen = entry.get(_budget_key(method, str(budget)))
    if chosen is None:
        return float(fallback)
    lr = chosen.get("lr") if isinstance(chosen, dict) else chosen
    if isinstance(lr, str):  # `lr: 1e-4` is a string in YAML 1.1 (no dot): read it as the number it spells
        try:
            lr = float(lr)
        except ValueError:
            pass
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:  # `true` is not 1.0
        raise ValueError(f"{path}: selected.{task}.{method}.{budget}.lr must be a positive number, got {lr!r}")
    return float(lr)


# ------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.lr_search", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sel = sub.add_parser("select", help="pick the best lr per task x method x budget and write the YAML file")
    sel.add_argument("results_root", help="root of the search runs, e.g. outputs_lr_search/lr_search")
    sel.add_argument("--out", default=None, help="selection file (default: the runs' protocol's, "
                     "conf/selected_lr.yaml for protocol=paper, conf/selected_lr_heldout.yaml for heldout)")
    sel.add_argument("--which", choices=("best", "final"), default="best", help="evaluation to score (default best)")
    sel.add_argument("--replace", action="store_true", help="drop entries of groups not in this search")
    args = parser.parse_args(argv)
    root = Path(args.results_root)
    if not root.is_dir():
        parser.error(f"results_root {root} is not a directory (run `make lr-search` or the lr_search_* sweeps first)")
    trials = collect_trials(root, args.which)
    if not trials:
        parser.error(f"no run under {root} has an explicit trainer.lr: nothing to select")
    try:
        result = select(trials)
        out = write_selection(args.out or selection_file(result["protocol"]), result, str(root), args.which,
                              merge=not args.replace)
    except ValueError as err:
        parser.error(str(err))
    n = sum(len(b) for m in result["selected"].values() for b in m.values())
    print(f"[lr-search] {len(trials)} runs -> {n} selections written to {out}; "
          f"{len(result['unresolved'])} unresolved, {len(result['incomplete'])} incomplete runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
