"""How long collecting runs takes as a results root grows: ``make bench-analysis``.

::

    python -m benchmarks.analysis                   # 2,000 and 20,000 synthetic records
    python -m benchmarks.analysis --sizes 500 2000  # other sizes

Each size gets a fresh results root of copies of the committed real tiny records
(``tests/fixtures/runs``, LoRA and AdaLoRA, schema 1, so every identity is computed from the
stored config) laid out as a sweep: 10 tasks x 2 methods x 4 budgets x seeds. It times finding
the run directories, :func:`analysis.collect.collect` and :func:`analysis.collect.run_status`,
each once, on one core, after a warm-up on 10 records (the first identity imports torch, via
``adalora.methods``: seconds that do not grow with the records). Finding the directories used to be quadratic (2,000 records: 72 s);
the benchmark fails (exit 1) if 2,000 records take 5 s or more to collect.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from analysis.collect import collect, find_run_dirs, run_status

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "runs" / "fixtures" / "tiny_glue_rte"
TEMPLATES = {"lora": FIXTURES / "lora" / "glue_0.3m" / "seed=0", "adalora": FIXTURES / "adalora" / "glue_0.3m" / "seed=0"}
TASKS = 10
BUDGETS = ("glue_0.3m", "glue_0.6m", "glue_1.2m", "qa_0.16")
LIMIT = {2000: 5.0}  # records -> seconds collect may take at most


def write_records(root: Path, n: int) -> None:
    """``n`` records under ``root/bench/<task>/<method>/<budget>/seed=<s>/result.json``."""
    templates = {m: json.loads((d / "result.json").read_text()) for m, d in TEMPLATES.items()}
    per_seed = TASKS * len(templates) * len(BUDGETS)
    written = 0
    for seed in range(-(-n // per_seed)):
        for t in range(TASKS):
            for method, template in templates.items():
                for budget in BUDGETS:
                    if written == n:
                        return
                    record = json.loads(json.dumps(template))
                    task = f"tiny_task{t}"
                    record["run"].update(sweep="bench", task=task, budget=budget, seed=seed)
                    record["config"].update(seed=seed, sweep_name="bench")
                    record["config"]["task"]["name"] = task
                    folder = root / "bench" / task / method / budget / f"seed={seed}"
                    folder.mkdir(parents=True)
                    (folder / "result.json").write_text(json.dumps(record))
                    written += 1


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def measure(n: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-analysis-{n}-"))
    try:
        write_records(root, n)
        dirs, find_s = _timed(find_run_dirs, root)
        df, collect_s = _timed(collect, root)
        status, status_s = _timed(run_status, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if len(dirs) != n or len(status) != n or df["run_dir"].nunique() != n:
        raise AssertionError(f"{n} records written, {len(dirs)} found, {len(status)} status rows")
    return {"records": n, "find_run_dirs_s": find_s, "collect_s": collect_s, "run_status_s": status_s,
            "metric_rows": len(df)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="record counts")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the limit is stated
    measure(10)  # warm-up: imports (torch) and pandas' first calls
    print(f"{'records':>8} {'find dirs':>10} {'collect':>9} {'run_status':>11} {'metric rows':>12}")
    failed = []
    for n in args.sizes:
        r = measure(n)
        print(f"{n:>8} {r['find_run_dirs_s']:>9.2f}s {r['collect_s']:>8.2f}s {r['run_status_s']:>10.2f}s "
              f"{r['metric_rows']:>12}", flush=True)
        if n in LIMIT and r["collect_s"] >= LIMIT[n]:
            failed.append(f"{n} records took {r['collect_s']:.2f} s to collect (limit {LIMIT[n]:.0f} s)")
    for line in failed:
        print(f"FAIL: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
