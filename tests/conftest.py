"""Test-session settings (never touch the network, keep torch deterministic and small), the one compose
helper, and one tiny finished run shared by the tests that only read a finished run."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF = str(PROJECT_ROOT / "conf")
# The tiny run most tests train: 4-example-batch RTE on the 2-layer DeBERTa, a few optimiser steps.
TINY_RUN = ["task=tiny_glue_rte", "model=tiny_deberta", "method=lora", "budget=glue_0.3m", "trainer.progress=false"]


def compose(overrides: list[str]):
    """``conf/config.yaml`` composed with ``overrides``, the resolvers registered: what the CLI would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from experiments.spec import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def tiny(out: Path, *extra: str, method: str = "lora", budget: str = "glue_0.3m", steps: int = 4):
    """The tiny RTE run most run-level tests train (``steps`` optimiser steps), its outputs under ``out``."""
    return compose(["task=tiny_glue_rte", "model=tiny_deberta", f"method={method}", f"budget={budget}",
                    f"output_root={out}", "trainer.progress=false", f"trainer.max_steps={steps}", *extra])


@pytest.fixture(scope="session")
def tiny_finished_run(tmp_path_factory):
    """One tiny LoRA run (4 steps, its checkpoint kept), trained once per test session: its config (the run
    directory is ``cfg.run_dir``). Tests read it and never write into it."""
    from experiments.runner import run

    cfg = tiny(tmp_path_factory.mktemp("tiny_finished_run"), "trainer.keep_checkpoint=true",
               "trainer.checkpoint_every=2", steps=4)
    assert run(cfg)["status"] == "success"
    return cfg
