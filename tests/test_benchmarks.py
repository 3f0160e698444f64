"""Smoke test of ``benchmarks.step_time``: tiny model, a few steps, every method; and one tiny round
of every ``make bench*`` target, run as a user runs it.

Checks the JSON / Markdown structure and that the values are sane; never a timing threshold.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks import step_time

HAS_PEFT = importlib.util.find_spec("peft") is not None
EXPECTED = step_time.ALL_METHODS if HAS_PEFT else step_time.OUR_METHODS


def _args(tmp_path, *extra: str):
    return step_time.parse_args([
        "--models", "tiny", "--device", "cpu", "--batch", "2", "--length", "8", "--warmup", "3",
        "--rounds", "1", "--block", "2", "--delta-t", "1", "--reg-reps", "2", "--threads", "1", "--out", str(tmp_path),
        *extra,
    ])


@pytest.mark.slow  # seconds of Hydra composes or training: make test runs it, test-fast does not
def test_step_time_smoke_every_method(tmp_path):
    args = _args(tmp_path, "--memory", "inprocess", "--memory-steps", "1")
    json_path, md_path = step_time.write_report(step_time.run_benchmark(args, log=lambda _: None), tmp_path)
    assert json_path.name == "cpu.json" and md_path.name == "cpu.md"
    report = json.loads(json_path.read_text())
    assert report["environment"]["device"] == "cpu"
    tiny = report["models"]["tiny"]
    assert tuple(tiny["methods"]) == EXPECTED
    sched = tiny["schedule"]
    # every timed step lies in the budget-decrease phase, and with ΔT = 1 each one masks
    assert sched["tinit"] < sched["timed_steps"][0] and sched["timed_steps"][1] <= sched["T"] - sched["tfinal"]
    assert sched["masking_steps_timed"] == list(range(sched["timed_steps"][0], sched["timed_steps"][1] + 1))
    for method, r in tiny["methods"].items():
        assert r["steps_timed"] == 2, method
        assert 0 < r["q1_step_ms"] <= r["median_step_ms"] <= r["q3_step_ms"], method
        assert r["median_cpu_ms"] > 0 and r["flops_per_step"] > 0, method
        assert (r["allocator_share_cpu"] is not None) == (method in ("adalora", "peft_adalora")), method
        assert r["trainable_paper"] > 0, method
        assert r["peak_memory_mb"] > 0 and r["memory_kind"] == "peak_rss", method
        allocates = method in ("adalora", "peft_adalora")
        assert (r["allocator_share"] is not None) == allocates, method
        if allocates:
            assert 0 <= r["allocator_share"] <= 1 and r["allocator_ms_mask_median"] > 0, method
        assert (r["regularizer_share"] is not None) == (method == "adalora"), method
    ours = tiny["methods"]["adalora"]
    assert ours["config"]["exact_rounding"] is None  # --form device: the exact form on a CPU
    assert 0 < ours["regularizer_share"] <= 1 and 0 <= ours["regularizer_share_cpu"] <= 1
    assert 0 <= ours["allocator_share_cpu"] <= 1
    ratios = tiny["ratios"]
    pairs = [f"{a}/{b}" for a, b in step_time.RATIO_PAIRS if a in EXPECTED and b in EXPECTED]
    assert list(ratios) == pairs
    for pair, r in ratios.items():
        for key in ("wall", "paired", "fastest", "cpu", "flops", "peak_memory"):
            assert r[key] is not None and r[key] > 0, (pair, key)
        assert r["train_memory"] is None or r["train_memory"] >= 0  # in-process growth may be 0
    assert ratios["adalora/lora"]["flops"] > 1  # r_init 12 > r 8
    assert list(tiny["shares"]) == [m for m in ("adalora", "peft_adalora") if m in EXPECTED]
    for method, shares in tiny["shares"].items():
        assert 0 <= shares["allocator_share"] <= 1 and 0 <= shares["allocator_share_cpu"] <= 1, method
    md = md_path.read_text()
    assert "| method | trainable (paper) | wall ms |" in md and "| a/b | wall, median |" in md
    for method in EXPECTED:
        assert f"| {method} | " in md
    for pair in pairs:
        assert f"| {pair}" in md
    assert report["targets_at_most"] == step_time.targets_for("cpu")  # issue 7's CPU targets
    assert "allocator share ≤ 0.5%" in md and "wall ≤ 1.04" in md and "wall ≤ 0.95" in md
    ops = tiny["op_counts"]  # the launch-overhead proxy: kernels per step by phase
    assert ops["adapted_matrices"] == 12 and ops["adalora_total"] - ops["lora_total"] == ops["extra"] > 0
    assert ops["adalora"]["optimizer"] == ops["lora"]["optimizer"]  # multi-tensor AdamW
    assert "**AdaLoRA − LoRA**" in md


@pytest.mark.slow  # a fresh interpreter imports torch and transformers (~8 s)
def test_memory_probe_runs_in_a_fresh_subprocess(tmp_path):
    mem = step_time.memory_in_subprocess("tiny", "adalora", _args(tmp_path, "--memory-steps", "1"))
    assert mem["kind"] == "peak_rss" and mem["peak_mb"] > mem["train_mb"] >= 0


def test_a_gpu_report_carries_the_gpu_targets():
    """The fused form's goals (issue 15) apply on a GPU; on a CPU our AdaLoRA is PEFT's computation."""
    gpu = step_time.targets_for("cuda")
    assert gpu["adalora/peft_adalora"] == {"wall": 0.6} and gpu["adalora"] == {"allocator_plus_regularizer": 0.01}
    assert step_time.targets_for("cpu")["adalora/peft_adalora"] == {"wall": 0.95}


def test_warmup_must_run_a_masking_step(capsys):
    """A first mask's one-off costs (lazy kernel loading on CUDA) must fall in the warm-up, not the timing."""
    sched = step_time.Schedule(warmup=12, timed=20, delta_t=10)
    assert sched.warmup_masking_steps() == [10] and sched.masking_steps() == [20, 30]
    assert step_time.Schedule(warmup=6, timed=20, delta_t=10).warmup_masking_steps() == []
    with pytest.raises(SystemExit):
        step_time.parse_args(["--warmup", "6", "--delta-t", "10"])
    assert "--warmup 6 runs no masking step" in capsys.readouterr().err
    assert step_time.parse_args([]).warmup == 12  # the default warms a mask up with the default ΔT


def test_regularizer_is_timed_with_task_gradients_present():
    """As in a step, the penalty's gradient is added to existing .grad; they are cleared afterwards."""
    import torch

    from benchmarks.steps import build_our_run, regularizer_seconds, sync_fn

    sched = step_time.Schedule(warmup=3, timed=2, delta_t=1)
    cfg = step_time.method_config("adalora", "glue_1.2m", sched)
    run, handle = build_our_run("adalora", "tiny", cfg, sched, torch.device("cpu"))
    seen = []
    penalty = run.reg_fn

    def reg_fn():
        seen.append(all(p.grad is not None for p in run.params))
        return penalty()

    run.reg_fn = reg_fn
    wall, cpu = regularizer_seconds(run, sync_fn(torch.device("cpu")), reps=2)
    assert wall > 0 and cpu >= 0
    assert seen[1:] == [True, True]  # seen[0]: the probe call that decides whether there is a penalty
    assert all(p.grad is None for p in run.params)


def test_llama_shape_is_llama_3_2_1b_with_lora_r8_on_all_seven_projections():
    """The decoder shape (issue 35, item 6) is Llama-3.2-1B's config, built on the meta device (no download):
    1.24 B parameters, the output layer tied to the embeddings, 16 layers x 7 projections adapted at llm_r8."""
    import torch

    from benchmarks.models import build_model
    from benchmarks.steps import build_our_run

    meta = torch.device("meta")
    model = build_model("llama3_2_1b", meta)
    cfg = model.config
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.head_dim, cfg.vocab_size) == (2048, 8192, 16, 32, 8, 64, 128256)
    assert cfg.rope_parameters["rope_theta"] == 500000.0 and cfg.rope_parameters["rope_type"] == "llama3"
    sched = step_time.Schedule(warmup=3, timed=2, delta_t=1)
    run, handle = build_our_run("lora", "llama3_2_1b", step_time.method_config("lora", "llm_r8", sched), sched, meta)
    assert len(handle.adapted) == 16 * 7
    # r = 8 on every projection: 8 x (q 2048+2048, k and v 2048+512, o 2048+2048, gate and up 2048+8192,
    # down 8192+2048) per layer
    assert run.trainable_paper == 16 * 8 * (2 * 4096 + 2 * 2560 + 3 * 10240) == 5_636_096  # what PEFT reports for r = 8 on all linear layers
    reduced = build_model("llama3_2_1b_reduced", meta).config
    assert (reduced.num_hidden_layers, reduced.head_dim, reduced.num_attention_heads // reduced.num_key_value_heads,
            reduced.hidden_size, reduced.vocab_size) == (16, 64, 4, 256, 8192)


@pytest.mark.slow  # seconds of Hydra composes or training: make test runs it, test-fast does not
def test_a_method_that_cannot_adapt_the_decoder_is_skipped_with_its_reason(tmp_path):
    """BitFit on Llama (no biases) and the adapters (the llm levels size none) are skipped, saying why."""
    args = step_time.parse_args([
        "--models", "llama3_2_1b_reduced", "--methods", "bitfit", "adapter_houlsby", "lora", "adalora",
        "--device", "cpu", "--batch", "1", "--length", "4", "--warmup", "3", "--rounds", "1", "--delta-t", "1",
        "--reg-reps", "1", "--threads", "1", "--memory", "none", "--no-op-counts", "--out", str(tmp_path),
        "--label", "llm"])
    report = step_time.run_benchmark(args, log=lambda _: None)
    model = report["models"]["llama3_2_1b_reduced"]
    assert list(model["methods"]) == ["lora", "adalora"] and model["budget_level"] == "llm_r8"
    assert "this llama model has no bias terms" in model["skipped"]["bitfit"]
    assert model["skipped"]["adapter_houlsby"] == "no adapter_houlsby at budget level llm_r8 in the paper"
    assert model["shares"]["adalora"]["regularizer_share"] > 0 and model["ratios"]["adalora/lora"]["flops"] > 1
    json_path, _ = step_time.write_report(report, tmp_path, label=args.label)
    assert json_path.name == "cpu-llm.json"  # beside the default run's cpu.json, not over it


def test_nlg_budget_skips_adapters():
    sched = step_time.Schedule(warmup=4, timed=6, delta_t=2)
    assert step_time.method_config("adapter_houlsby", "nlg_1.10", sched) is None
    cfg = step_time.method_config("peft_adalora", "nlg_1.10", sched)
    assert (cfg["init_r"], cfg["target_r"], cfg["tinit"], cfg["deltaT"]) == (12, 8, 2, 2)
    assert sched.total == 4 + 6 + sched.tfinal and sched.masking_steps() == [4, 6, 8]


def test_fast_svd_forward_is_bit_identical_to_the_official_form():
    """The hot-path rewrite of SVDLinear changes no bit (CPU): loralib/PEFT's expression as oracle."""
    import torch
    from torch import nn

    from adalora.layers import SVDLinear

    torch.manual_seed(0)
    layer = SVDLinear(nn.Linear(24, 40), r=6, alpha=16.0)
    with torch.no_grad():
        layer.lora_E.normal_()
    x = torch.randn(3, 7, 24, requires_grad=True)
    grad_out = torch.randn(3, 7, 40)
    params = (x, layer.lora_A, layer.lora_E, layer.lora_B)
    out = layer(x)
    grads = torch.autograd.grad(out, params, grad_out)
    ref = layer.base_layer(x)
    ref += (x @ (layer.lora_A * layer.lora_E).T @ layer.lora_B.T) * layer.scale_numerator / (layer.ranknum + 1e-5)
    ref_grads = torch.autograd.grad(ref, params, grad_out)
    assert torch.equal(out, ref)
    assert all(torch.equal(g, r) for g, r in zip(grads, ref_grads))


def test_importance_update_matches_per_matrix_emas():
    """The allocator's multi-tensor EMA update equals PEFT's per-matrix update."""
    import torch
    from torch import nn

    from adalora import RankAllocator
    from adalora.layers import SVDLinear

    torch.manual_seed(1)
    mods = {f"m{i}": SVDLinear(nn.Linear(8 + i, 5 + 2 * i), r=4, alpha=8.0) for i in range(3)}
    alloc = RankAllocator(mods, target_r=2, init_warmup=1, final_warmup=1, mask_interval=1, total_step=10)
    params = [p for n in sorted(mods) for p in (mods[n].lora_A, mods[n].lora_E, mods[n].lora_B)]
    ipt_ref = [torch.zeros_like(p) for p in params]
    unc_ref = [torch.zeros_like(p) for p in params]
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        alloc._update_importance()
        for p, i_ref, u_ref in zip(params, ipt_ref, unc_ref):
            ipt = (p * p.grad).abs().detach()
            i_ref.copy_(0.85 * i_ref + 0.15 * ipt)
            u_ref.copy_(0.85 * u_ref + 0.15 * (ipt - i_ref).abs())
    for got, want in zip(alloc._ema_ipt + alloc._ema_unc, ipt_ref + unc_ref):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)



@pytest.mark.slow  # a fresh interpreter: torch + transformers imports, then a tiny two-method run (~20 s)
def test_benchmark_imports_nothing_from_hydra_datasets_or_wandb(tmp_path):
    """The GPU box that runs `make bench` may have only torch, transformers, peft and accelerate (and
    `make bench-gpu`'s runner and kit must import there before the kit is unpacked)."""
    import subprocess
    import sys

    script = f"""
import runpy, sys
def run(*argv):
    sys.argv = ["step_time", *argv]
    try:
        runpy.run_module("benchmarks.step_time", run_name="__main__")
    except SystemExit:
        pass
run("--help")
run("--models", "tiny", "--methods", "lora", "adalora", "--device", "cpu", "--batch", "2", "--length", "8",
    "--warmup", "3", "--delta-t", "1", "--rounds", "1", "--reg-reps", "1", "--memory", "none", "--threads", "1",
    "--precision", "bf16", "--form", "fused", "--out", {str(tmp_path)!r})
import benchmarks.components, benchmarks.gpu_suite, benchmarks.offline_kit  # the rest of make bench-gpu's runner
print("LOADED", sorted({{m.split(".")[0] for m in sys.modules}} & {{"hydra", "omegaconf", "datasets", "wandb"}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=step_time.ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout, proc.stdout[-2000:]
    report = json.loads((tmp_path / "cpu-bf16.json").read_text())
    assert report["environment"]["precision"] == "bf16" and set(report["models"]["tiny"]["methods"]) == {"lora", "adalora"}
    assert report["models"]["tiny"]["methods"]["adalora"]["config"]["exact_rounding"] is False  # --form fused
    ops = report["models"]["tiny"]["op_counts"]
    assert ops["adalora_total"] > ops["lora_total"] > 0 and ops["adapted_matrices"] == 12


# One tiny round of each `make bench*` target (the Makefile's own command and environment, ARGS made
# small): a dependency release that breaks a harness fails here, not on a user's machine. `make bench`
# keeps its default models (tiny, and MiniLM loaded with from_pretrained) and counts MiniLM's ops on the
# meta device, where transformers 5 re-kernelizing the model in `.train()` used to raise.
TINY_ROUNDS: dict[str, str] = {
    "bench": "--device cpu --batch 2 --length 8 --warmup 3 --rounds 1 --delta-t 1 --reg-reps 1 --memory none "
             "--threads 1",
    "bench-loop": "--seeds 0 --model tiny_deberta --task tiny_glue_rte --steps 4 trainer.log_every=2",
    # tiny only: bench's round runs the decoder through the same step_time harness; its loop is bench-loop's
    "bench-gpu": "--device cpu --models tiny --batch 2 --length 8 --rounds 1 --warmup 3 --delta-t 1 --memory none "
                 "--only step_fp32 step_bf16 components",
    "bench-analysis": "--sizes 20",
}
WRITES = {"bench": ["cpu.json", "cpu.md"], "bench-loop": ["cpu-real-loop.json", "cpu-real-loop.md"],
          "bench-gpu": ["cpu-bf16.json", "cpu-bf16.md", "cpu-components.json", "cpu-components.md", "cpu.json",
                        "cpu.md"],
          "bench-analysis": []}


def test_gpu_suite_passes_its_warmup_and_delta_t_to_every_step_run():
    """bench-gpu's tiny round shrinks the warm-up through the suite; each measurement must see it, and
    the defaults stay the harnesses' own (12 warm-up steps, ΔT = 10)."""
    from benchmarks import gpu_suite

    def schedule(argv: list[str]) -> dict[str, tuple[str, str]]:
        return {name: (line[line.index("--warmup") + 1], line[line.index("--delta-t") + 1])
                for name, line in gpu_suite.plan(gpu_suite.parse_args(["--device", "cpu", *argv])).items()
                if name != "loop"}

    assert schedule([]) == dict.fromkeys(["step_fp32", "step_bf16", "llm_fp32", "llm_bf16", "components"], ("12", "10"))
    assert set(schedule(["--warmup", "3", "--delta-t", "1"]).values()) == {("3", "1")}
    assert step_time.parse_args(["--warmup", "3", "--delta-t", "1"]).warmup == 3  # one untimed mask: accepted


def test_every_bench_target_has_a_tiny_round():
    makefile = (step_time.ROOT / "Makefile").read_text()
    assert set(TINY_ROUNDS) == set(re.findall(r"^(bench[\w-]*):", makefile, flags=re.M))


@pytest.mark.slow  # fresh interpreters (torch, transformers) per harness: 20-60 s each on 2 cores
@pytest.mark.parametrize("target", TINY_ROUNDS)
def test_one_tiny_round_of_each_bench_target(target, tmp_path):
    out = [] if target == "bench-analysis" else [f"--out {tmp_path}"]
    # one intra-op thread, as a user on a shared CPU is told to run: threads change no result checked here
    proc = subprocess.run(["make", "-s", target, f"PYTHON={sys.executable}",
                           f"ARGS={' '.join([*out, TINY_ROUNDS[target]])}"],
                          cwd=step_time.ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == WRITES[target]
    if target == "bench":
        report = json.loads((tmp_path / "cpu.json").read_text())
        assert list(report["models"]) == ["tiny", "minilm", "llama3_2_1b_reduced"]
        for name, model in report["models"].items():
            decoder = name == "llama3_2_1b_reduced"  # no BitFit (no biases), no adapters at the llm levels
            assert tuple(model["methods"]) == tuple(m for m in EXPECTED if not (decoder and m in model["skipped"]))
            assert set(model["skipped"]) == ({"bitfit", "adapter_houlsby", "adapter_pfeiffer"} if decoder else set())
            ops = model["op_counts"]
            assert ops["adalora_total"] > 0 and ops["lora_total"] > 0
            if not decoder:
                assert ops["adalora_total"] > ops["lora_total"]
        assert report["models"]["minilm"]["op_counts"]["adapted_matrices"] == 36  # 6 layers x 6 weight types
        assert report["models"]["llama3_2_1b_reduced"]["op_counts"]["adapted_matrices"] == 112  # 16 x 7
    elif target == "bench-loop":  # LoRA and AdaLoRA through `python -m experiments.run`, times from result.json
        saved = json.loads((tmp_path / "cpu-real-loop.json").read_text())
        assert [(r["method"], r["seed"], r["steps"]) for r in saved["runs"]] == [("lora", 0, 4), ("adalora", 0, 4)]
        for r in saved["runs"]:
            assert 0 < r["median_step_ms"] and r["process_wall_s"] * 1e3 > r["mean_step_ms"] * r["steps"]
        summary = saved["summary"]
        ms = summary["median_step_ms"]
        assert summary["ratio"] == pytest.approx(ms["adalora"] / ms["lora"]) == pytest.approx(summary["ratio_paired_by_seed"])
        md = (tmp_path / "cpu-real-loop.md").read_text()
        assert "| adalora/lora |" in md and "≤ 1.05" in md and "trainer.log_every=2" in md
    elif target == "bench-gpu":  # each measurement in its own process, the components' rows in the suite's report
        components = json.loads((tmp_path / "cpu-components.json").read_text())
        assert list(components["models"]["tiny"]) == ["lora", "adalora", "adalora, no penalty", "adalora, no allocator",
                                                      "adalora, bare"]
        assert "| adalora, bare |" in (tmp_path / "cpu-components.md").read_text()
        assert all(f"{name}: done" in proc.stdout for name in ("step_fp32", "step_bf16", "components")), proc.stdout
    elif target == "bench-analysis":
        assert re.search(r"^ +20 .*s +\d+$", proc.stdout, flags=re.M), proc.stdout
