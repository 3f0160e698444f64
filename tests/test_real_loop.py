"""``benchmarks.real_loop``: LoRA and AdaLoRA through ``experiments.run``, per-step times from result.json.
A tiny round of ``make bench-loop`` (tests/test_benchmarks.py) checks the report of two finished runs."""

from __future__ import annotations

import pytest

from benchmarks import real_loop


@pytest.mark.slow
def test_a_failed_run_is_reported_with_its_command(tmp_path):
    args = real_loop.parse_args(["--model", "tiny_deberta", "--task", "no_such_task", "--steps", "4",
                                 "--seeds", "0", "--out", str(tmp_path)])
    with pytest.raises(RuntimeError, match=r"lora seed 0 did not finish \(.*task=no_such_task"):
        real_loop.benchmark(args, log=lambda _: None)
    assert not list(tmp_path.iterdir())  # nothing written


def test_steps_must_leave_a_schedule():
    with pytest.raises(SystemExit):
        real_loop.parse_args(["--steps", "1"])
