"""Saving PEFT's AdaLoRA with a matrix pruned to rank 0 raises no false alarm: PEFT writes that matrix
as (0, d) lora_A / lora_B tensors, which its check for ungathered ZeRO-3 / FSDP shards would report on
every save; the suite silences exactly that warning, and only on a save that holds such a matrix."""

from __future__ import annotations

import warnings

import pytest
from safetensors.torch import load_file

from adalora import apply_method
from tests.test_peft_kind import _train, shipped
from tests.tiny import tiny_deberta

pytest.importorskip("peft")
ZERO3_ALARM = "ZeRO-3 / FSDP shards were not gathered"


def _trained_with_one_matrix_pruned_to_rank_0():
    handle = apply_method(tiny_deberta(seed=3), shipped("peft_adalora"), budget="glue_0.3m")
    handle.set_total_steps(16)
    _train(handle, 16)
    pattern = handle._config().rank_pattern
    pruned = sorted(pattern)[0]
    pattern[pruned] = [False] * len(pattern[pruned])  # as PEFT's allocator leaves a matrix it pruned fully
    return handle, pruned.removesuffix(".default").removesuffix(".lora_E")


def test_a_rank_0_matrix_saves_without_the_zero3_alarm(tmp_path):
    handle, pruned = _trained_with_one_matrix_pruned_to_rank_0()
    assert handle.rank_pattern()[pruned] == 0
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        handle.save(tmp_path)
    assert not [w for w in seen if ZERO3_ALARM in str(w.message)]
    tensors = load_file(tmp_path / "method" / "adapter_model.safetensors")
    empty = sorted(k for k, v in tensors.items() if "lora_A" in k and v.shape[0] == 0)
    assert len(empty) == 1 and pruned.split(".")[-1] in empty[0]  # what PEFT's check takes for a shard
