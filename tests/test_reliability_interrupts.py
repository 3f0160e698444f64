"""Ctrl-C and SIGTERM on a real ``python -m experiments.run`` process: the step is checkpointed and
recorded as ``interrupted``, one line is printed, the exit status is 128 + the signal, and a rerun
resumes to the result of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.results import read_result
from experiments.runner import PROJECT_ROOT
from tests.conftest import RESUMED_ADALORA

pytestmark = pytest.mark.slow  # every test here reads a trained run

# The run directory: checkpoint cadence changes no result, so it names no sub-directory.
SUB = Path("adhoc/tiny_glue_rte/adalora/glue_0.3m/seed=0/model=tiny_deberta,trainer.eval_every=10,trainer.max_steps=60")


def _start(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "experiments.run", "task=tiny_glue_rte", "model=tiny_deberta", "method=adalora",
           "budget=glue_0.3m", f"output_root={out}", "trainer.progress=false", *RESUMED_ADALORA]
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_checkpoints_records_and_the_rerun_resumes_exactly(tmp_path, uninterrupted_adalora, signum, exit_code):
    out = tmp_path / "out"
    run_dir = out / SUB
    proc = _start(out)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoint.pt").exists():  # the step-8 checkpoint: training is under way
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    proc.send_signal(signum)
    code, text = _finish(proc)

    assert code == exit_code, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    record = read_result(run_dir)
    step = record["train"]["steps"]
    assert record["status"] == "interrupted" and 8 <= step < 60
    name = signal.Signals(signum).name
    line = (f"[interrupted] {run_dir / 'result.json'}: interrupted by {name} at step {step}; "
            f"checkpoint at step {step}, rerun the same command to resume")
    assert text.strip().splitlines()[-1] == line
    assert record["reason"] == line.split(": ", 1)[1]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["state"]["global_step"] == step
    assert not [p for p in run_dir.rglob("*.tmp")]

    code, text = _finish(_start(out))
    assert code == 0, text[-3000:]
    assert f"[resume] {run_dir} from step {step}" in text
    resumed = read_result(run_dir)
    assert resumed["status"] == "success"
    assert resumed["metrics"]["evals"] == uninterrupted_adalora["metrics"]["evals"]
    assert resumed["ranks"] == uninterrupted_adalora["ranks"]
    assert resumed["train"]["final_train_loss"] == uninterrupted_adalora["train"]["final_train_loss"]
