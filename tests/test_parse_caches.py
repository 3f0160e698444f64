"""The test session's parse caches (tests/parse_caches.py) compose exactly what Hydra and OmegaConf compose alone."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf, open_dict

from tests import parse_caches
from tests.conftest import PROJECT_ROOT, compose

CASES = (
    ["task=tiny_glue_rte", "model=tiny_deberta", "method=adalora", "budget=glue_0.3m", "trainer.lr=0.01"],
    ["sweep=llm_commonsense", "task=tiny_commonsense", "model=tiny_llama", "method=peft_dora", "budget=llm_qv_r8"],
    ["sweep=glue", "task=glue_rte", "method=lora", "+model.tiny_config.hidden_size=64"],
)


def _composed(overrides: list[str]) -> tuple[str, dict]:
    """The composed config as written (interpolations unresolved, the hydra node too) and resolved."""
    return (OmegaConf.to_yaml(compose(overrides, return_hydra_config=True)),
            OmegaConf.to_container(compose(overrides), resolve=True))


@pytest.mark.parametrize("overrides", CASES)
def test_a_cached_compose_equals_hydras_own(overrides):
    cached = [_composed(overrides) for _ in range(2)]  # the second reads every file and string from the caches
    with parse_caches.uncached():
        assert cached == [_composed(overrides)] * 2


def test_editing_a_composed_config_leaves_the_next_compose_alone():
    """Hydra merges loaded nodes into the composed config without copying them: each compose gets its own."""
    first = compose(CASES[0])
    first.method.beta1, first.trainer.lr, first.task.dataset.data_files.train = -1.0, -1.0, "elsewhere"
    with open_dict(first):
        del first.task["name"]
    again = compose(CASES[0])
    assert (again.method.beta1, again.trainer.lr, again.task.name) == (0.85, 0.01, "tiny_glue_rte")
    assert again.task.dataset.data_files.train.endswith("/rte/train.jsonl")


def test_a_rewritten_file_is_parsed_again_however_soon(tmp_path):
    """Same size, rewritten within the file system's timestamp resolution: the bytes decide, not the time."""
    (tmp_path / "task").mkdir()
    path = tmp_path / "task" / "probe_task.yaml"
    path.write_text((PROJECT_ROOT / "conf" / "task" / "tiny_glue_rte.yaml").read_text()
                    .replace("name: tiny_glue_rte", "name: probe_task"))
    overrides = ["task=probe_task", f"hydra.searchpath=[file://{tmp_path}]"]
    assert compose(overrides).task.max_seq_length == 64
    path.write_text(path.read_text().replace("max_seq_length: 64", "max_seq_length: 65"))
    assert compose(overrides).task.max_seq_length == 65
