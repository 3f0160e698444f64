"""Budget levels are data: conf/budget/*.yaml, read by Hydra for a run and by adalora.budget for callers by name.

A level is "LoRA at rank r on this backbone's full target set" plus the paper's per-method knobs where
the paper states them; a new level (for any backbone) is one yaml file and no Python. The paper's
levels keep their values and every committed fixture run keeps its identity.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from adalora import apply_method
from adalora.budget import BUDGET_LEVELS, SHIPPED_BUDGET_DIR, BudgetLevel, budget_target, parse_flat_yaml
from experiments.identity import identity_hash
from experiments.runner import PROJECT_ROOT, effective_budget, register_resolvers
from experiments.spec import record_identity, run_identity
from tests.conftest import compose
from tests.tiny import tiny_deberta

register_resolvers()

# The paper's levels as the suite had them in Python before they became yaml (App. C.1 + Table 7, Table 9,
# Table 3 with derived ranks): name -> (family, label, lora_r, adalora target_r, init_r, Houlsby, Pfeiffer).
PAPER_LEVELS = {
    "glue_0.3m": ("glue", "0.3M", 2, 2, 4, 8, 16), "glue_0.6m": ("glue", "0.6M", 4, 4, 6, 16, 32),
    "glue_1.2m": ("glue", "1.2M", 8, 8, 12, 32, 64),
    "qa_0.08": ("qa", "0.08%", 1, 1, 2, 4, 8), "qa_0.16": ("qa", "0.16%", 2, 2, 4, 8, 16),
    "qa_0.32": ("qa", "0.32%", 4, 4, 6, 16, 32), "qa_0.65": ("qa", "0.65%", 8, 8, 12, 32, 64),
    "nlg_0.13": ("nlg", "0.13%", 1, 1, 2, None, None), "nlg_0.26": ("nlg", "0.26%", 2, 2, 4, None, None),
    "nlg_1.10": ("nlg", "1.10%", 8, 8, 12, None, None), "nlg_2.20": ("nlg", "2.20%", 16, 16, 24, None, None),
}
# The decoder levels (docs/llm.md): LoRA r on the seven projections; AdaLoRA ends at r from 1.5 r.
LLM_LEVELS = {f"llm_r{r}": ("llm", f"r={r}", r, r, r * 3 // 2, None, None) for r in (4, 8, 16, 32)}
# PEFT's default targets (W_q, W_v only): the same ranks, measured on and applied to those two weight types.
LLM_QV_LEVELS = {f"llm_qv_r{r}": ("llm", f"r={r} (W_q W_v)", r, r, r * 3 // 2, None, None, "qv") for r in (4, 8, 16, 32)}


def test_the_papers_levels_keep_their_values():
    assert {name: BudgetLevel(name, *row) for name, row in {**PAPER_LEVELS, **LLM_LEVELS, **LLM_QV_LEVELS}.items()} == dict(BUDGET_LEVELS)


def test_the_torch_only_reader_reads_every_shipped_budget_yaml_as_hydras_yaml_does():
    paths = sorted(SHIPPED_BUDGET_DIR.glob("*.yaml"))
    assert len(paths) == len(PAPER_LEVELS) + len(LLM_LEVELS) + len(LLM_QV_LEVELS) + 1  # + none.yaml
    for path in paths:
        assert parse_flat_yaml(path.read_text(), str(path)) == yaml.safe_load(path.read_text()), path
    with pytest.raises(ValueError, match=r"x.yaml, line 2: '\{r: 2\}' is not an integer, null or a plain"):
        parse_flat_yaml("name: a\nknobs: {r: 2}\n", "x.yaml")  # YAML reads a mapping: refused, never a string
    for value in ("1.5", "true", "[2, 4]"):
        with pytest.raises(ValueError, match="is not an integer, null or a plain or quoted string"):
            parse_flat_yaml(f"lora_r: {value}\n", "x.yaml")
    with pytest.raises(ValueError, match=r"x.yaml, line 1: expected `key: value`"):
        parse_flat_yaml("- 2\n", "x.yaml")


@pytest.mark.parametrize("name", sorted(PAPER_LEVELS))
def test_a_runs_level_is_built_from_the_budget_config_hydra_composes(name):
    cfg = compose([f"budget={name}"])
    assert BudgetLevel.from_config(OmegaConf.to_container(cfg.budget)) == BUDGET_LEVELS[name]


def test_a_new_level_is_one_yaml_file_and_no_python(tmp_path):
    conf = tmp_path / "conf" / "budget"
    conf.mkdir(parents=True)
    (conf / "my_r3.yaml").write_text("# LoRA r=3 on any backbone's full target set\nname: my_r3\nfamily: glue\n"
                                     "lora_r: 3\n")
    level = BudgetLevel.from_config(OmegaConf.to_container(
        compose([f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "budget=my_r3"]).budget))
    # unstated knobs: AdaLoRA r̄(T) = r and b(0) = 1.5 b(T) rounded up; no adapter size
    assert (level.label, level.adalora_target_r, level.adalora_init_r, level.houlsby_bottleneck) == ("r=3", 3, 5, None)
    model = tiny_deberta()
    assert budget_target(model, level) == 3 * 2 * 448  # tiny DeBERTa: 448 (d_in + d_out) per layer, 2 layers
    lora = apply_method(model, {"name": "lora"}, budget=level)
    assert lora.settings.r == 3 and lora.parameter_counts()["trainable_paper"] == 3 * 2 * 448
    adalora = apply_method(tiny_deberta(), {"name": "adalora", "tinit": 1, "tfinal": 1, "deltaT": 1}, budget=level)
    assert (adalora.settings.init_r, adalora.settings.target_r) == (5, 3)


def test_a_budget_key_that_is_not_a_level_field_is_refused_naming_the_nearest():
    with pytest.raises(ValueError, match=r"budget 'b': unknown key 'lora_rank'; did you mean 'lora_r'\?"):
        BudgetLevel.from_config({"name": "b", "family": "glue", "lora_rank": 2})
    with pytest.raises(ValueError, match=r"budget 'b': lora_r must be a positive integer, got 0"):
        BudgetLevel.from_config({"name": "b", "family": "glue", "lora_r": 0})
    with pytest.raises(ValueError, match=r"budget 'b': missing key\(s\) \['lora_r'\]"):
        BudgetLevel.from_config({"name": "b", "family": "glue"})


def _fixture_records() -> list[Path]:
    return sorted((PROJECT_ROOT / "tests" / "fixtures" / "runs").rglob("result.json"))


def _as_this_checkout(config: dict) -> dict:
    """The stored config with the checkout it ran in replaced by this one (a moved clone is the same run)."""
    text = re.sub(r'"[^"]*?/tests/fixtures/', json.dumps(str(PROJECT_ROOT))[:-1] + '/tests/fixtures/', json.dumps(config))
    return json.loads(text)


# Each committed fixture run's identity hash (experiments.identity.record_identity of its stored config, the data
# paths in this checkout), as main computed it before the budget levels moved from Python to conf/budget/*.yaml.
FIXTURE_HASHES = {
    "fixtures/tiny_glue_rte/adalora/glue_0.3m/seed=0": "143c9d38db69",
    "fixtures/tiny_glue_rte/adalora/glue_0.3m/seed=1": "34927aa6bf0f",
    "fixtures/tiny_glue_rte/adalora/glue_0.6m/seed=0": "782287e20f82",
    "fixtures/tiny_glue_rte/adalora/glue_0.6m/seed=1": "8cd0fa8e9858",
    "fixtures/tiny_glue_rte/bitfit/none/seed=0": "f1b9e3196c1b",
    "fixtures/tiny_glue_rte/bitfit/none/seed=1": "e36ecff189fe",
    "fixtures/tiny_glue_rte/full_ft/none/seed=0": "28044a4abdd2",
    "fixtures/tiny_glue_rte/full_ft/none/seed=1": "b866c3b6441f",
    "fixtures/tiny_glue_rte/lora/glue_0.3m/seed=0": "c0a7761d35f9",
    "fixtures/tiny_glue_rte/lora/glue_0.3m/seed=1": "c5ee5d6907e5",
    "fixtures/tiny_glue_rte/lora/glue_0.6m/seed=0": "2c95527de685",
    "fixtures/tiny_glue_rte/lora/glue_0.6m/seed=1": "532680a55e07",
    "fixtures/tiny_glue_sst2/adalora/glue_0.3m/seed=0": "34e38f1f7560",
    "fixtures/tiny_glue_sst2/adalora/glue_0.3m/seed=1": "5b4a374043ff",
    "fixtures/tiny_glue_sst2/adalora/glue_0.6m/seed=0": "7a7bec71e934",
    "fixtures/tiny_glue_sst2/adalora/glue_0.6m/seed=1": "7b4770aab7ee",
    "fixtures/tiny_glue_sst2/bitfit/none/seed=0": "a21ffb84ab72",
    "fixtures/tiny_glue_sst2/bitfit/none/seed=1": "34a0d7cda4d8",
    "fixtures/tiny_glue_sst2/full_ft/none/seed=0": "e87948f900a6",
    "fixtures/tiny_glue_sst2/full_ft/none/seed=1": "166635f362cd",
    "fixtures/tiny_glue_sst2/lora/glue_0.3m/seed=0": "977f5ee48c85",
    "fixtures/tiny_glue_sst2/lora/glue_0.3m/seed=1": "68610f3ce965",
    "fixtures/tiny_glue_sst2/lora/glue_0.6m/seed=0": "cd6d574b8fd3",
    "fixtures/tiny_glue_sst2/lora/glue_0.6m/seed=1": "5facca050dbc",
    "fixtures/tiny_squad_v2/adalora/qa_0.16/seed=0": "1eac527b3edc",
    "fixtures/tiny_squad_v2/lora/qa_0.16/seed=0": "e24a7d094561",
    "fixtures/tiny_xsum/adalora/nlg_0.26/seed=0": "d74d6e180a6f",
    "fixtures/tiny_xsum/lora/nlg_0.26/seed=0": "dde65b724e77"
}


def test_every_fixture_run_keeps_its_identity_hash():
    found = {str(p.parent.relative_to(PROJECT_ROOT / "tests" / "fixtures" / "runs")): p for p in _fixture_records()}
    assert sorted(found) == sorted(FIXTURE_HASHES)
    for run, path in found.items():
        record = json.loads(path.read_text())
        assert identity_hash(record_identity({**record, "config": _as_this_checkout(record["config"])})) == \
            FIXTURE_HASHES[run], run


# The identity parts that the method, model and budget yamls and the task's hparams define. (The trainer gained
# settings since the fixtures ran, and tiny_xsum gained `rouge_reference`: those parts moved before this change.)
CONF_PARTS = ("method", "budget", "model", "seed", "hparams")


@pytest.mark.slow
def test_todays_configs_give_every_fixture_run_the_method_model_and_budget_it_records():
    for path in _fixture_records():
        record = json.loads(path.read_text())
        stored = _as_this_checkout(record["config"])
        run = record["run"]
        sweep = "fixtures_nlg" if run["task"] == "tiny_xsum" else "fixtures"
        cfg = compose([f"sweep={sweep}", f"task={run['task']}", f"method={run['method']}",
                       f"budget={stored['budget']['name']}", f"seed={run['seed']}",
                       f"output_root={stored['output_root']}", f"model={stored['model']['name']}"])
        today = OmegaConf.to_container(cfg, resolve=True)
        ours = run_identity(today, effective_budget(today["method"], cfg.budget.name))
        theirs = record_identity({**record, "config": stored})
        assert {k: ours.get(k) for k in CONF_PARTS} == {k: theirs.get(k) for k in CONF_PARTS}, path
