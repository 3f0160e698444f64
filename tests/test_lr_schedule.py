"""``trainer.lr_schedule``: linear (the paper's scripts) or cosine (PEFT's method comparison) decay after the
warm-up, applied by the suite's loop exactly as transformers defines them, and in a run's identity only when it
is not the linear decay every earlier record trained with."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import default_data_collator

from adalora.methods import apply_method
from experiments.models import load_model
from experiments.runner import run_identity_block
from experiments.spec import ConfigError, resolve
from experiments.training import Trainer, TrainSettings
from tests.conftest import tiny

LR, STEPS, WARMUP = 0.01, 10, 2


def scheduled_lrs(schedule: str) -> list[float]:
    """The lr of each of the loop's ``STEPS`` optimiser steps for ``schedule`` (warm-up: 20% of the steps)."""
    torch.manual_seed(0)
    handle = apply_method(load_model({"name": "tiny_llama", "source": "tiny", "arch": "llama"}, "causal_lm"),
                          {"name": "lora", "r": 2})
    settings = TrainSettings(lr=LR, batch_size=2, max_steps=STEPS, warmup_ratio=WARMUP / STEPS, lr_schedule=schedule,
                             progress=False, save_model=False)
    examples = [{"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor([1, 2, 3])}] * 4
    trainer = Trainer(handle.model, handle, examples, default_data_collator, settings, seed=0,
                      evaluate=lambda _model: {"accuracy": 0.0}, main_metric="accuracy")
    lrs = []
    for _ in range(STEPS):
        lrs.append(trainer.scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.scheduler.step()
    return lrs


def test_cosine_schedule_warms_up_then_follows_half_a_cosine_to_zero():
    expected = [LR * s / WARMUP if s < WARMUP else LR * 0.5 * (1 + math.cos(math.pi * (s - WARMUP) / (STEPS - WARMUP)))
                for s in range(STEPS)]
    assert scheduled_lrs("cosine") == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_linear_schedule_is_the_default_and_decays_along_a_line():
    assert TrainSettings(lr=LR, batch_size=2).lr_schedule == "linear"
    expected = [LR * s / WARMUP if s < WARMUP else LR * (STEPS - s) / (STEPS - WARMUP) for s in range(STEPS)]
    assert scheduled_lrs("linear") == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_lr_schedule_is_in_the_identity_only_when_not_linear(tmp_path):
    default = run_identity_block(tiny(tmp_path))
    assert run_identity_block(tiny(tmp_path, "trainer.lr_schedule=linear")) == default
    cosine = tiny(tmp_path, "trainer.lr_schedule=cosine")
    assert resolve(cosine).train.lr_schedule == "cosine"
    assert run_identity_block(cosine) != default


def test_an_unknown_lr_schedule_is_refused_naming_the_key_and_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"^invalid trainer setting\(s\): trainer.lr_schedule='step': must be one of linear, "
                                          r"cosine$"):
        resolve(tiny(tmp_path, "trainer.lr_schedule=step"))
