"""An external kind gets the lr ``make lr-search`` selected, without editing conf/task/*.yaml: it declares
the task hparams blocks it reads (``MethodHandle.hparams_blocks``, docs/methods.md), and the ``lora``
block's ``${selected_lr:task,method,budget,fallback}`` resolves under the run's own method name."""

from __future__ import annotations

import yaml

from experiments.lr_search import SELECTED_LR_ENV
from experiments.runner import register_resolvers, resolve
from tests import contract_kinds  # noqa: F401 - registers test_lora_family
from tests.conftest import tiny  # the tiny RTE run (task default lr 0.005, LoRA's fallback 0.005)

register_resolvers()


def _selected(tmp_path, monkeypatch, method: str, lr: float) -> None:
    path = tmp_path / "selected_lr.yaml"
    path.write_text(yaml.safe_dump({"protocol": "paper",
                                    "selected": {"tiny_glue_rte": {method: {"glue_0.3m": {"lr": lr}}}}}))
    monkeypatch.setenv(SELECTED_LR_ENV, str(path))


def test_an_external_kind_that_reads_the_lora_block_gets_its_selected_lr(tmp_path, monkeypatch):
    _selected(tmp_path, monkeypatch, "my_row", 0.02)
    resolved = resolve(tiny(tmp_path, "method.name=my_row", "+method.kind=test_lora_family"))
    assert resolved.train.lr == 0.02
    assert resolved.method["alpha"] == 16  # LoRA's alpha from the same block


def test_without_a_selection_it_falls_back_to_loras_fallback_and_another_names_entry_is_not_its(tmp_path, monkeypatch):
    _selected(tmp_path, monkeypatch, "lora", 0.02)  # LoRA's own selection is LoRA's, not this row's
    resolved = resolve(tiny(tmp_path, "method.name=my_row", "+method.kind=test_lora_family"))
    assert resolved.train.lr == 0.005
