"""Re-evaluate a finished run from its saved weights: ``python -m experiments.evaluate <run_dir>``.

The model is rebuilt from the weights file (experiments/weights.py) and evaluated on the task's
dev split(s) with the run's own task config and eval batch size, so on CPU it reproduces the
recorded metric exactly. ``run_dir`` may also be a directory with exactly one run below it
(several are listed). A run folder copied from another machine works: the data paths under that
machine's checkout are re-anchored to this one (the record's identity writes them as
``${project_root:}/...``). Nothing the folder holds runs code (docs/reliability.md, "Trust boundary").

Exit status (so that a script can tell "the numbers differ" from "nothing was compared"):

- 0: every recorded metric is reproduced exactly;
- 1: the run was re-evaluated and some metric differs (the table shows which);
- 2: the run cannot be re-evaluated: no such run or several, no successful record, no saved
  or unreadable weights (named with their path), weights that are not the record's, a rebuilt
  base that differs, a device this machine lacks, a module the record names that is not allowed
  or cannot be imported;
- 3: an unexpected error (its traceback is printed).

    python -m experiments.evaluate outputs/adhoc/glue_rte/adalora/glue_0.3m/seed=0            # final weights
    python -m experiments.evaluate outputs/adhoc/glue_rte/adalora/glue_0.3m/seed=0 --which best
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from adalora import trust
from adalora.methods import MethodConfigError
from experiments.identity import PROJECT_ROOT, PROJECT_ROOT_TOKEN
from experiments.models import load_tokenizer
from experiments.precision import autocast_as_trained
from experiments.results import RESULT_FILE
from experiments.run_paths import RunPathError, find_run
from experiments.runner import ConfigError, register_resolvers, resolve
from experiments.tasks import build_task
from experiments.weights import WeightsError, load_run, read_record


class CannotEvaluate(RuntimeError):
    """The run cannot be re-evaluated as asked (a device this machine lacks, a record that is not a run's)."""


def usable_device(name: str) -> torch.device:
    """``name`` as a torch device this machine can use, checked before anything is loaded."""
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # torch says "Torch not compiled with CUDA enabled" as an assert
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CannotEvaluate(f"--device {name} cannot be used on this machine ({reason}); use --device cpu "
                             "(the exact reproduction holds there) or run where that device exists") from err
    return device


# What main() answers with one line and exit 2: the run cannot be re-evaluated as asked (the message says
# why and what to do); a record or weights file naming code the user has not allowed is one of them.
REFUSED = (WeightsError, RunPathError, CannotEvaluate, trust.UntrustedCode, MethodConfigError, ConfigError)


def reanchored(value: Any, portable: Any) -> Any:
    """``value`` (a stored config) with every path its portable identity writes as ``${project_root:}/...``
    pointing into this checkout: a run folder copied from another machine names the data of that
    machine's checkout, and its identity says which paths were the checkout's own (the shipped data)."""
    if isinstance(portable, str) and isinstance(value, str) and portable.startswith(PROJECT_ROOT_TOKEN):
        return str(PROJECT_ROOT) + portable[len(PROJECT_ROOT_TOKEN):]
    if isinstance(value, Mapping) and isinstance(portable, Mapping):
        return {k: reanchored(v, portable[k]) if k in portable else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(portable, list) and len(value) == len(portable):
        return [reanchored(v, p) for v, p in zip(value, portable, strict=True)]
    return value


def _record(run_dir: Path) -> dict[str, Any]:
    """The successful record of ``run_dir``, its stored config re-anchored to this checkout."""
    record = read_record(run_dir)
    if not record:
        raise WeightsError(f"{run_dir} holds no {RESULT_FILE}: not a run directory")
    if record.get("status") != "success":
        reason = str(record.get("reason") or "").strip().splitlines()[:1]
        raise WeightsError(f"{run_dir} holds no successful run (status {record.get('status')!r}"
                           + (f": {reason[0]}" if reason else "") + "); only a successful run has weights to evaluate")
    if not isinstance(record.get("config"), Mapping) or not isinstance(record.get("metrics"), Mapping):
        raise CannotEvaluate(f"{run_dir / RESULT_FILE} has no 'config' or 'metrics' object; it is not a run record")
    keys = (record.get("identity") or {}).get("keys") if isinstance(record.get("identity"), Mapping) else None
    record["config"] = reanchored(record["config"], keys or {})
    return record


def reevaluate(run_dir: str | os.PathLike, which: str = "final", device: str = "cpu") -> dict[str, Any]:
    """Metrics of the saved ``which`` weights beside the recorded ones: {"metrics", "recorded", "reproduced"}.

    The record and the weights are data (:mod:`adalora.trust`): a module either of them names is
    imported only if the user allowed it, and the weights must be the record's own.
    """
    run_dir = Path(run_dir)
    torch_device = usable_device(device)
    record = _record(run_dir)
    loaded = load_run(run_dir, which)
    register_resolvers()
    with trust.reading(str(run_dir / RESULT_FILE)):
        train = resolve(OmegaConf.create(record["config"])).train
        task = build_task(record["config"]["task"])
    tokenizer = load_tokenizer(loaded.spec.model)
    model = loaded.model.to(torch_device)
    with autocast_as_trained(train.precision, torch_device):  # the arithmetic its recorded evaluations ran in
        metrics = task.evaluate(model, tokenizer, train.eval_batch_size, torch_device)
    recorded = {k: v for k, v in record["metrics"][which].items() if k not in ("step", "epoch")}
    return {"metrics": metrics, "recorded": recorded, "reproduced": _same(metrics, recorded)}


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal keys and values (NaN equals NaN: a constant prediction has no correlation either time)."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory, or a directory with exactly one run below it")
    parser.add_argument("--which", choices=("final", "best"), default="final", help="which saved weights (default final)")
    parser.add_argument("--device", default="cpu", help="torch device (the exact reproduction holds on CPU)")
    args = parser.parse_args(argv)
    try:
        out = reevaluate(find_run(args.run_dir), args.which, args.device)
    except REFUSED as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - exit 3, not Python's 1, which means "not reproduced" here
        traceback.print_exc()
        return 3
    for key, value in out["metrics"].items():
        old = out["recorded"].get(key)
        print(f"{key:>24}  {value:.6f}  (recorded {old if old is None else f'{old:.6f}'})")
    print("reproduced: " + ("yes, exactly" if out["reproduced"] else "NO"))
    return 0 if out["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main())
