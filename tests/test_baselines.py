"""Issue 14: the baselines as the paper ran them (adapters as in the official fork, best-eval
selection, checkpointed prune_lora gates, per-run peak memory, ROUGE references, LR hand-off)."""

from __future__ import annotations

import math

import pytest
import torch

from adalora import apply_method
from tests.tiny import cls_batch, tiny_bart, tiny_deberta


def _with_dropout(p: float = 0.5):
    model = tiny_deberta()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
    return model


# ------------------------------------------------------------------ adapters (official fork)
def test_adapter_sits_after_the_hidden_dropout_by_default():
    model = _with_dropout()
    handle = apply_method(model, {"name": "adapter_houlsby", "bottleneck": 4})
    block = model.deberta.encoder.layer[0].attention.output
    assert isinstance(block.dropout, torch.nn.Identity)  # the block's own dropout moved into the wrapper
    wrapper = block.dense
    assert isinstance(wrapper.dropout, torch.nn.Dropout) and wrapper.dropout.p == 0.5
    # forward order dense -> dropout -> adapter: in train mode the adapter sees dropped (zeroed) units
    seen = {}
    wrapper.adapter.down.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    model.train()
    wrapper(torch.randn(2, 5, 32))
    assert (seen["x"] == 0).float().mean().item() > 0.3
    assert len(handle.adapted) == 4


def test_adapter_before_dropout_option_keeps_the_block_dropout():
    model = _with_dropout()
    apply_method(model, {"name": "adapter_pfeiffer", "bottleneck": 4, "dropout_position": "before", "up_init": "zero"})
    block = model.deberta.encoder.layer[0].output
    assert isinstance(block.dropout, torch.nn.Dropout)
    assert isinstance(block.dense.dropout, torch.nn.Identity)
    assert torch.count_nonzero(block.dense.adapter.up.weight) == 0


def test_adapter_up_projection_is_normal_002_like_the_fork():
    model = tiny_deberta()
    torch.manual_seed(0)
    apply_method(model, {"name": "adapter_houlsby", "bottleneck": 16})
    ups = torch.cat([m.adapter.up.weight.flatten() for m in model.modules() if hasattr(m, "adapter")])
    assert ups.std().item() == pytest.approx(0.02, rel=0.1)
    assert all(torch.count_nonzero(m.adapter.up.bias) == 0 for m in model.modules() if hasattr(m, "adapter"))


def test_adapter_placement_does_not_change_parameter_counts():
    counts = {}
    for position, init in (("after", "normal"), ("before", "zero")):
        handle = apply_method(tiny_deberta(), {"name": "adapter_houlsby", "bottleneck": 4,
                                               "dropout_position": position, "up_init": init})
        counts[position] = handle.parameter_counts()
    assert counts["after"] == counts["before"]


def test_bart_adapters_default_to_before_and_reject_after():
    handle = apply_method(tiny_bart(), {"name": "adapter_houlsby", "bottleneck": 4})
    assert all(isinstance(m.dropout, torch.nn.Identity) for m in handle.adapted.values())
    with pytest.raises(ValueError, match="dropout_position=before"):
        apply_method(tiny_bart(), {"name": "adapter_houlsby", "bottleneck": 4, "dropout_position": "after"})
    with pytest.raises(ValueError, match="up_init"):
        apply_method(tiny_deberta(), {"name": "adapter_houlsby", "bottleneck": 4, "up_init": "kaiming"})


def test_fork_adapter_in_eval_mode_changes_outputs_from_step_zero():
    """N(0, 0.02) up-projection: ΔW ≠ 0 at init (the fork), unlike the zero-init variant."""
    base = tiny_deberta().eval()
    batch = cls_batch(0)
    batch.pop("labels")
    ref = base(**batch).logits
    fork = tiny_deberta().eval()
    apply_method(fork, {"name": "adapter_houlsby", "bottleneck": 4})
    zero = tiny_deberta().eval()
    apply_method(zero, {"name": "adapter_houlsby", "bottleneck": 4, "dropout_position": "before", "up_init": "zero"})
    assert torch.allclose(zero(**batch).logits, ref)
    assert not torch.allclose(fork(**batch).logits, ref)
    assert math.isfinite(fork(**batch).logits.sum().item())


# ------------------------------------------------------------------ runner / training bugs
def test_best_eval_never_picks_a_nan_first_evaluation():
    from experiments.runner import best_eval

    evals = [{"step": 10, "accuracy": float("nan")}, {"step": 20, "accuracy": 0.6}, {"step": 30, "accuracy": 0.7},
             {"step": 40}]
    assert best_eval(evals, "accuracy")["step"] == 30
    assert best_eval([{"step": 1, "f1": float("nan")}, {"step": 2, "f1": float("nan")}], "f1")["step"] == 1


def _tiny_cfg(tmp_path, task, method, budget, extra=()):
    from hydra import compose, initialize_config_dir

    from experiments.runner import PROJECT_ROOT, register_resolvers

    register_resolvers()
    model = "tiny_bart" if "xsum" in task or "cnndm" in task else "tiny_deberta"
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[
            f"task={task}", f"model={model}", f"method={method}", f"budget={budget}", f"output_root={tmp_path}",
            "trainer.progress=false", *extra])


def test_resumed_prune_lora_keeps_its_frozen_gates(tmp_path):
    from pathlib import Path

    from experiments.runner import _build, resolve

    cfg = _tiny_cfg(tmp_path, "tiny_glue_rte", "prune_lora", "glue_0.3m",
                    ["trainer.max_steps=20", "trainer.checkpoint_every=10", "trainer.eval_every=10"])
    trainer, handle, _ = _build(cfg, resolve(cfg), Path(cfg.run_dir), None)
    trainer.train(stop_after=10)
    gates = {n: m.lora_E.detach().clone() for n, m in handle.svd_modules.items()}
    assert any((g == 0).any() for g in gates.values())  # the allocator has pruned doublets by step 10
    fresh, fresh_handle, _ = _build(cfg, resolve(cfg), Path(cfg.run_dir), None)
    assert fresh.load_checkpoint()
    for name, module in fresh_handle.svd_modules.items():
        assert torch.equal(module.lora_E, gates[name]), name


def _rss_mb() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU peak RSS path; CUDA resets its own counter")
def test_peak_memory_is_per_run_not_per_process(tmp_path):
    pytest.importorskip("pathlib").Path("/proc/self/clear_refs").exists() or pytest.skip("needs Linux /proc")
    from experiments.runner import run

    before = _rss_mb()
    hog = torch.ones(1024 * 2**20 // 4)  # 1 GiB, touched: an earlier run's peak in the same process
    del hog
    record = run(_tiny_cfg(tmp_path, "tiny_glue_rte", "lora", "glue_0.3m", ["trainer.max_steps=2"]))
    assert record["status"] == "success", record["reason"]
    assert record["train"]["peak_memory_mb"] < before + 600
