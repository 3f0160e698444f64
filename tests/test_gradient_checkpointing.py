"""``trainer.gradient_checkpointing`` (issue 35, item 3): every method kind trains a tiny decoder to the same
loss, gradients and parameters with and without it (the backward really recomputes each block), AdaLoRA's
allocator and orthogonal penalty run under it, and it is in a run's identity only when it is on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn
from transformers import default_data_collator

from adalora.methods import MethodHandle, apply_method
from experiments.models import enable_gradient_checkpointing, load_model
from experiments.runner import run_identity_block
from experiments.spec import ConfigError, resolve
from experiments.training import Trainer, TrainSettings
from tests.conftest import tiny
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4  # AdaLoRA: tinit 1, tfinal 1, deltaT 1 -> the budget falls at steps 1-2, so the ranks must change
SCHEDULE = {"tinit": 1, "tfinal": 1, "deltaT": 1}
# Every kind at explicit sizes (the llm budget levels size no adapters); BitFit on Qwen2, whose q/k/v have
# biases (Llama has none, and BitFit refuses a backbone without them).
METHODS: dict[str, dict[str, Any]] = {
    "lora": {"name": "lora", "r": 4},
    "adalora": {"name": "adalora", "init_r": 6, "target_r": 4, "orth_reg_weight": 0.1, **SCHEDULE},
    "bitfit": {"name": "bitfit"},
    "adapter_houlsby": {"name": "adapter_houlsby", "bottleneck": 8},
    "adapter_pfeiffer": {"name": "adapter_pfeiffer", "bottleneck": 8},
    "full_ft": {"name": "full_ft"},
    "peft_dora": {"name": "peft_dora", "kind": "peft", "peft_type": "lora", "r": 4, "use_dora": True},
    "peft_adalora": {"name": "peft_adalora", "kind": "peft", "peft_type": "adalora", "init_r": 6, "target_r": 4,
                     **SCHEDULE},
}
ADAPTIVE = ("adalora", "peft_adalora")


def tiny_decoder(method: str, checkpointing: bool) -> MethodHandle:
    """The tiny Llama (Qwen2 for BitFit) with attention dropout on, so that the recompute must replay the
    forward's random draws, and the method's layers; checkpointing switched on through the run path's hook."""
    cfg = yaml.safe_load((ROOT / "conf" / "model" / ("tiny_qwen2" if method == "bitfit" else "tiny_llama")).with_suffix(
        ".yaml").read_text())
    cfg["tiny_config"] = {"attention_dropout": 0.1}
    torch.manual_seed(0)
    handle = apply_method(load_model(cfg, "causal_lm"), METHODS[method])
    handle.set_total_steps(STEPS)
    if checkpointing:
        enable_gradient_checkpointing(handle.model)
    return handle


def examples() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [{"input_ids": (ids := torch.randint(5, 100, (12,), generator=gen)), "attention_mask": torch.ones_like(ids),
             "labels": ids} for _ in range(8)]


def loss_and_gradients(method: str, checkpointing: bool) -> tuple[float, float, dict[str, torch.Tensor], int]:
    """(task loss, penalty, every trained parameter's gradient, forward calls of layer 0's MLP) of one backward."""
    handle = tiny_decoder(method, checkpointing)
    model = handle.model.train()
    mlp = next(m for n, m in model.named_modules() if n.endswith("layers.0.mlp"))
    calls = []
    mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    torch.manual_seed(5)  # the dropout masks
    loss = model(**default_data_collator(examples()[:4])).loss
    penalty = handle.regularization_loss()
    (loss + penalty).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), penalty.item(), grads, len(calls)


@pytest.mark.parametrize("method", METHODS)
def test_gradient_checkpointing_gives_every_kind_the_same_loss_and_gradients(method):
    loss, penalty, grads, calls = loss_and_gradients(method, checkpointing=False)
    loss_ckpt, penalty_ckpt, grads_ckpt, calls_ckpt = loss_and_gradients(method, checkpointing=True)
    assert (calls, calls_ckpt) == (1, 2)  # the backward recomputed the block: checkpointing is on
    assert loss_ckpt == pytest.approx(loss, rel=1e-6) and penalty_ckpt == pytest.approx(penalty, rel=1e-6, abs=1e-9)
    if method == "adalora":
        assert penalty > 0  # our AdaLoRA's orthogonal penalty is in the checkpointed loss
    assert grads_ckpt.keys() == grads.keys()
    assert all(g is not None for g in grads_ckpt.values())  # adapters on a frozen backbone get gradients
    assert any(bool(g.abs().sum() > 0) for g in grads_ckpt.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-6, atol=1e-8, msg=name)


def trained(method: str, checkpointing: bool) -> tuple[Trainer, MethodHandle]:
    """``STEPS`` steps of the suite's loop with ``trainer.gradient_checkpointing`` as given."""
    handle = tiny_decoder(method, checkpointing=False)
    settings = TrainSettings(lr=5e-3, batch_size=2, max_steps=STEPS, progress=False, save_model=False,
                             gradient_checkpointing=checkpointing)
    trainer = Trainer(handle.model, handle, examples(), default_data_collator, settings, seed=0,
                      evaluate=lambda _model: {"accuracy": 0.0}, main_metric="accuracy")
    trainer.train()
    return trainer, handle


@pytest.mark.parametrize("method", METHODS)
def test_a_checkpointed_run_trains_every_kind_to_the_same_parameters(method):
    plain, plain_handle = trained(method, checkpointing=False)
    ckpt, ckpt_handle = trained(method, checkpointing=True)
    backbone = next(m for m in ckpt.model.modules() if hasattr(m, "is_gradient_checkpointing"))
    assert backbone.is_gradient_checkpointing and not plain_handle.model.is_gradient_checkpointing
    assert ckpt.state.train_loss == pytest.approx(plain.state.train_loss, rel=1e-6)
    before = dict(plain_handle.model.named_parameters())
    for name, param in ckpt_handle.model.named_parameters():
        torch.testing.assert_close(param, before[name], rtol=1e-6, atol=1e-7, msg=name)
    assert ckpt.state.rank_history == plain.state.rank_history
    if method in ADAPTIVE:  # the allocator ran under checkpointing and changed the ranks as without it
        proof = ckpt.state.allocation
        assert proof["allocator_runs"] == STEPS and proof["ranks_must_change"] and proof["rank_changes"], proof
        assert proof == plain.state.allocation


def test_gradient_checkpointing_is_in_the_identity_only_when_on(tmp_path):
    default = run_identity_block(tiny(tmp_path))
    assert run_identity_block(tiny(tmp_path, "trainer.gradient_checkpointing=false")) == default
    on = tiny(tmp_path, "trainer.gradient_checkpointing=true")
    assert resolve(on).train.gradient_checkpointing is True
    assert run_identity_block(on)["hash"] != default["hash"]
    assert resolve(tiny(tmp_path)).train.gradient_checkpointing is False


def test_a_non_boolean_gradient_checkpointing_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^invalid trainer setting\(s\): trainer.gradient_checkpointing='sometimes': must be "
                                          r"true or false$"):
        resolve(tiny(tmp_path, "trainer.gradient_checkpointing=sometimes"))


def test_a_backbone_without_checkpointing_support_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"^trainer.gradient_checkpointing=true: Linear does not support activation "
                                         r"checkpointing; set trainer.gradient_checkpointing=false for this model$"):
        enable_gradient_checkpointing(nn.Linear(2, 2))


def two_process_ranks(out: Path, *then: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What each rank of a 2-process gloo run of our AdaLoRA on the tiny Llama ended with, and each rank of the
    same run with the overrides ``then`` added, trained next in the same two processes (tests/ddp_probe.py)."""
    out.mkdir(parents=True)
    overrides = ["task=tiny_gsm8k", "model=tiny_llama", "method=adalora", "budget=llm_r4", f"output_root={out}",
                 "trainer.progress=false", "trainer.max_steps=6", "trainer.batch_size=2", "--then", *then]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(ROOT / "tests" / "ddp_probe.py"), str(out), *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})  # this checkout
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tuple([torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)] for folder in (out, out / "then"))


@pytest.mark.slow  # one torchrun launch of two processes, each training both runs
def test_adalora_with_gradient_checkpointing_trains_under_ddp_as_without_it(tmp_path):
    """huggingface/peft#1745's set-up (AdaLoRA, whose A and B are used inside the checkpointed blocks and again
    in the penalty outside them, under DDP): non-reentrant checkpointing trains as the plain DDP run does."""
    plain, ckpt = two_process_ranks(tmp_path / "ddp", "trainer.gradient_checkpointing=true")
    assert ckpt[0]["world_size"] == 2 and ckpt[0]["pattern"] == ckpt[1]["pattern"] == plain[0]["pattern"]
    assert sum(plain[0]["pattern"].values()) < 6 * len(plain[0]["pattern"])  # the allocator cut ranks from init_r
    for name, lambdas in plain[0]["lambdas"].items():
        assert torch.equal(ckpt[0]["masks"][name], plain[0]["masks"][name]), name
        torch.testing.assert_close(ckpt[0]["lambdas"][name], lambdas, rtol=1e-5, atol=1e-7, msg=name)
    assert ckpt[0]["train_loss"] == pytest.approx(plain[0]["train_loss"], rel=1e-6)
