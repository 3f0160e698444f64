"""transformers' hub kernels are a stated choice: off unless ``model.use_kernels`` asks, the
choice reaches ``from_pretrained``, it is in every run's config, and it leaves the identity of
runs recorded before it alone.

transformers 5 loads a model with ``use_kernels=True`` unless told otherwise: layers that have a
hub kernel are swapped for code fetched at run time, and ``.train()`` re-kernelizes (which
fails on the ``meta`` device the benchmarks count ops on). A local ``from_pretrained``
directory of a tiny model stands for a hub or package model here: same loading call, no download.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.identity import identity_hash
from experiments.models import load_model
from experiments.runner import PROJECT_ROOT, register_resolvers
from experiments.spec import run_identity
from tests.conftest import compose

register_resolvers()
TINY_BERT = {"name": "tiny_bert", "source": "tiny", "arch": "bert", "tiny_config": {}}


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    """A saved tiny BERT: what ``from_pretrained`` reads for a hub or package model."""
    folder = tmp_path_factory.mktemp("tiny_bert_pretrained")
    torch.manual_seed(0)
    load_model(TINY_BERT, "sequence_classification", num_labels=2).save_pretrained(folder)
    return folder


def _saved(folder: Path, **extra) -> dict:
    return {"name": "saved_tiny_bert", "source": "hub", "arch": "bert", "pretrained": str(folder), **extra}


def _kernelized(model: torch.nn.Module) -> list[str]:
    """Modules whose forward the ``kernels`` library replaced (it marks them in their ``__dict__``)."""
    return [name for name, m in model.named_modules() if "_kernel_repo" in vars(m) or "forward" in vars(m)]


def test_a_loaded_model_has_no_hub_kernels_by_default(pretrained_dir):
    model = load_model(_saved(pretrained_dir), "sequence_classification", num_labels=2)
    assert model.use_kernels is False and _kernelized(model) == []
    model.to("meta").train()  # what `make bench` does to count ops: re-kernelizing here raised on meta


def test_model_use_kernels_true_reaches_from_pretrained(pretrained_dir):
    model = load_model(_saved(pretrained_dir, use_kernels=True), "sequence_classification", num_labels=2)
    assert model.use_kernels is True


def test_use_kernels_overridden_by_the_environment_is_an_error(pretrained_dir, monkeypatch):
    monkeypatch.setenv("USE_HUB_KERNELS", "NO")
    with pytest.raises(ValueError, match=r"model\.use_kernels=true did not take effect \(USE_HUB_KERNELS=NO\)"):
        load_model(_saved(pretrained_dir, use_kernels=True), "sequence_classification", num_labels=2)


def _config(*overrides: str):
    return compose(["task=tiny_glue_rte", *overrides])


@pytest.mark.parametrize("model", sorted(p.stem for p in (PROJECT_ROOT / "conf" / "model").glob("*.yaml")))
def test_every_model_config_states_use_kernels_false(model):
    """The resolved config, which result.json stores as ``config``, says what ran."""
    assert _config(f"model={model}").model.use_kernels is False


def test_use_kernels_false_keeps_older_records_identity_and_true_changes_it():
    from omegaconf import OmegaConf

    stated = OmegaConf.to_container(_config("model=tiny_deberta"), resolve=True)
    older = {**stated, "model": {k: v for k, v in stated["model"].items() if k != "use_kernels"}}
    assert identity_hash(run_identity(stated, "b")) == identity_hash(run_identity(older, "b"))
    kernels = OmegaConf.to_container(_config("model=tiny_deberta", "model.use_kernels=true"), resolve=True)
    assert identity_hash(run_identity(kernels, "b")) != identity_hash(run_identity(stated, "b"))
