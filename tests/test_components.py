"""``benchmarks.components``: AdaLoRA's step with its parts left out, next to LoRA's (never a timing threshold)."""

from __future__ import annotations

import torch

from benchmarks import components
from benchmarks.steps import Schedule


def test_variants_share_one_adalora_run_and_leave_out_their_part():
    runs = components.variant_runs("tiny", Schedule(warmup=12, timed=10, delta_t=10), torch.device("cpu"), "fp32",
                                   exact_rounding=False)
    ada = runs["adalora"]
    assert ada.config["exact_rounding"] is False
    assert ada.reg_fn is not None and ada.alloc_fn is not None
    for name in ("adalora, no penalty", "adalora, no allocator", "adalora, bare"):
        assert runs[name].model is ada.model and runs[name].optimizer is ada.optimizer, name
    assert runs["adalora, no penalty"].reg_fn is None and runs["adalora, no penalty"].alloc_fn is ada.alloc_fn
    assert runs["adalora, no allocator"].alloc_fn is None and runs["adalora, no allocator"].reg_fn is ada.reg_fn
    assert runs["adalora, bare"].reg_fn is None and runs["adalora, bare"].alloc_fn is None
    assert runs["lora"].model is not ada.model and runs["lora"].reg_fn is None


def test_measure_reports_every_variant_against_lora(capsys, tmp_path):
    args = components.parse_args(["--models", "tiny", "--rounds", "2", "--warmup", "12", "--threads", "1"])
    rows = components.measure("tiny", args)
    assert list(rows) == list(components.VARIANTS)
    assert rows["lora"]["wall_over_lora"] == 1.0
    for name, r in rows.items():
        assert 0 < r["host_ms"] <= r["wall_ms"] * 1.0001 and r["wall_over_lora"] > 0, name
    assert list(rows["lora"]["phase_host_ms"]) == ["forward", "backward", "clip", "optimizer", "zero_grad"]
    assert list(rows["adalora"]["phase_host_ms"]) == ["forward", "penalty", "backward", "clip", "optimizer",
                                                      "allocator", "zero_grad"]
    assert "penalty" not in rows["adalora, no penalty"]["phase_host_ms"]
    assert "allocator" not in rows["adalora, no allocator"]["phase_host_ms"]
    assert all(ms > 0 for r in rows.values() for ms in r["phase_host_ms"].values())
    components.main(["--models", "tiny", "--rounds", "1", "--warmup", "12", "--threads", "1", "--form", "fused",
                     "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "fused form" in out and "| adalora, bare |" in out and "| step | host ms | wall ms | × LoRA |" in out
    assert "| phase (host ms, median) | LoRA | AdaLoRA | AdaLoRA − LoRA |" in out and "| allocator | 0.00 |" in out
    written = (tmp_path / "cpu-components.md").read_text()
    assert written.startswith("# AdaLoRA's step with parts left out: cpu-components") and "| adalora, bare |" in written


def test_phase_host_times_end_where_each_phase_stops_running_on_the_host():
    marks = [("forward", 10.0), ("penalty", 10.5), ("backward", 10.75), ("clip", 12.0), ("optimizer", 12.25),
             ("allocator", 14.0), ("zero_grad", 14.5)]
    # host: the optimiser step was enqueued 2.5 s after the first mark; the device was waited for until 14.0
    ms = components.phase_host_ms(marks, host=2.5, end=14.625)
    assert ms == {"forward": 500.0, "penalty": 250.0, "backward": 1250.0, "clip": 250.0, "optimizer": 250.0,
                  "allocator": 500.0, "zero_grad": 125.0}
