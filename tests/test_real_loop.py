"""``benchmarks.real_loop``: LoRA and AdaLoRA through ``experiments.run``, per-step times from result.json."""

from __future__ import annotations

import json

import pytest

from benchmarks import real_loop


@pytest.mark.slow  # two fresh `python -m experiments.run` processes on the tiny model (~25 s)
def test_real_loop_times_both_methods_from_their_result_json(tmp_path):
    args = real_loop.parse_args(["--model", "tiny_deberta", "--task", "tiny_glue_rte", "--steps", "8",
                                 "--seeds", "0", "--out", str(tmp_path), "trainer.log_every=4"])
    report = real_loop.benchmark(args, log=lambda _: None)
    json_path, md_path = real_loop.write_report(report, tmp_path)
    assert json_path.name == "cpu-real-loop.json"
    saved = json.loads(json_path.read_text())
    assert [(r["method"], r["seed"], r["steps"]) for r in saved["runs"]] == [("lora", 0, 8), ("adalora", 0, 8)]
    for r in saved["runs"]:
        assert 0 < r["median_step_ms"] and r["process_wall_s"] * 1e3 > r["mean_step_ms"] * r["steps"]
    s = saved["summary"]
    ms = s["median_step_ms"]
    assert s["ratio"] == pytest.approx(ms["adalora"] / ms["lora"]) == pytest.approx(s["ratio_paired_by_seed"])
    md = md_path.read_text()
    assert "| adalora/lora |" in md and "≤ 1.05" in md and "trainer.log_every=4" in md


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
