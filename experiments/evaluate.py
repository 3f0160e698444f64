"""Re-evaluate a finished run from its saved weights: ``python -m experiments.evaluate <run_dir>``.

The model is rebuilt from the weights file (experiments/weights.py) and evaluated on the task's
dev split(s) with the run's own task config and eval batch size, so on CPU it reproduces the
recorded metric exactly. ``run_dir`` may also be a directory with exactly one run below it
(several are listed).

Exit status (so that a script can tell "the numbers differ" from "nothing was compared"):

- 0: every recorded metric is reproduced exactly;
- 1: the run was re-evaluated and some metric differs (the table shows which);
- 2: the run cannot be re-evaluated: no such run or several, no successful record, no saved
  or unreadable weights (named with their path), a rebuilt base that differs;
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

from experiments.models import load_tokenizer
from experiments.results import RESULT_FILE, read_result
from experiments.run_paths import RunPathError, find_run
from experiments.runner import register_resolvers, resolve
from experiments.tasks import build_task
from experiments.weights import WeightsError, load_run


def reevaluate(run_dir: str | os.PathLike, which: str = "final", device: str = "cpu") -> dict[str, Any]:
    """Metrics of the saved ``which`` weights beside the recorded ones: {"metrics", "recorded", "reproduced"}."""
    try:
        record = read_result(run_dir)
    except (OSError, ValueError) as err:
        raise WeightsError(f"{Path(run_dir) / RESULT_FILE} cannot be read ({type(err).__name__}: {err})") from err
    if record is None:
        raise WeightsError(f"{run_dir} holds no {RESULT_FILE}: not a run directory")
    if record.get("status") != "success":
        reason = (record.get("reason") or "").strip().splitlines()[:1]
        raise WeightsError(f"{run_dir} holds no successful run (status {record.get('status')!r}"
                           + (f": {reason[0]}" if reason else "") + "); only a successful run has weights to evaluate")
    loaded = load_run(run_dir, which)
    register_resolvers()
    config = OmegaConf.create(record["config"])
    eval_batch_size = resolve(config).train.eval_batch_size
    task = build_task(record["config"]["task"])
    tokenizer = load_tokenizer(loaded.spec.model)
    model = loaded.model.to(device)
    metrics = task.evaluate(model, tokenizer, eval_batch_size, torch.device(device))
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
    except (WeightsError, RunPathError) as err:
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
