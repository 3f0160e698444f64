"""The method contract: typed settings, the registry, the budget rule, and the handle API from one's own loop."""

from __future__ import annotations

import itertools
import random
import warnings

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from adalora.budget import BUDGET_LEVELS, budget_target, closest_knob
from adalora.methods import (
    Adapter,
    MethodConfigError,
    MethodHandle,
    apply_method,
    get_kind,
    has_size_knob,
    register_kind,
    registered_kinds,
)
from adalora.methods.base import SAVE_FILE
from experiments.runner import effective_budget
from tests.tiny import cls_batch, deberta_v3_base_on_meta, tiny_deberta

ADALORA = {"name": "adalora", "init_r": 4, "target_r": 2, "tinit": 2, "tfinal": 2, "deltaT": 1}


# ------------------------------------------------------------------------------------ typed settings
@pytest.mark.parametrize(("cfg", "match"), [
    ({**ADALORA, "init_r": 4.5}, r"method\.init_r must be an int, got 4\.5 \(float\)"),
    ({**ADALORA, "init_r": "abc"}, r"method\.init_r must be an int, got 'abc' \(str\)"),
    ({"name": "lora", "r": -1}, r"method\.r must be a positive rank, got -1"),
    ({"name": "lora", "r": True}, r"method\.r must be an int, got True \(bool\)"),
    ({"name": "lora", "r": 2, "alpha": "16"}, r"method\.alpha must be a number, got '16'"),
    ({"name": "lora", "r": 2, "targets": "W_q"}, r"method\.targets must be a list of a string"),
    ({**ADALORA, "allocate": 1}, r"method\.allocate must be true/false, got 1 \(int\)"),
    ({**ADALORA, "exact_rounding": "yes"}, r"method\.exact_rounding must be true/false or null"),
    ({**ADALORA, "beta1": 1.0}, r"method\.beta1 must be in \[0, 1\), got 1\.0"),
    ({**ADALORA, "deltaT": 0}, r"method\.deltaT must be >= 1"),
    ({"name": "adapter_houlsby", "bottleneck": 0}, r"method\.bottleneck must be a positive width, got 0"),
    ({"name": "lora", "r": 2, "rank": 3}, r"unknown key\(s\) \['rank'\]"),
])
def test_settings_are_typed_and_checked_before_any_layer_is_built(cfg, match):
    model = tiny_deberta()
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(MethodConfigError, match=match):
        apply_method(model, cfg)
    assert {n: type(m) for n, m in model.named_modules()} == before  # nothing half-applied


def test_settings_keep_valid_values_and_lists_become_tuples():
    handle = apply_method(tiny_deberta(), {"name": "lora", "r": 3, "alpha": 8, "targets": ["W_q", "W_v"]})
    assert (handle.settings.r, handle.settings.alpha, handle.settings.targets) == (3, 8, ("W_q", "W_v"))


def test_unknown_kind_lists_the_registered_ones():
    with pytest.raises(MethodConfigError, match=r"kind 'lorra' is not registered; registered kinds: \[.*'adalora'.*"
                                                 r"'adapter'.*'bitfit'.*'full_ft'.*'lora'.*\]"):
        apply_method(tiny_deberta(), {"name": "mine", "kind": "lorra"})
    with pytest.raises(MethodConfigError, match=r"'mine' is not registered and the config sets no method\.kind"):
        apply_method(tiny_deberta(), {"name": "mine"})
    assert {"full_ft", "bitfit", "lora", "adapter", "adalora"} <= set(registered_kinds())


def test_a_named_config_of_a_kind_is_that_kind():
    handle = apply_method(tiny_deberta(), {"name": "my_lora", "kind": "lora", "r": 2, "label": "Mine"})
    assert (handle.name, handle.kind, type(handle)) == ("my_lora", "lora", get_kind("lora"))


# ------------------------------------------------------------------------------------ the budget rule
@register_kind
class CountRuleAdapter(Adapter):
    """The Adapter kind with the base class's count rule instead of the paper's Table 7 widths."""

    kind = "test_count_rule_adapter"
    budget_knobs = MethodHandle.__dict__["budget_knobs"]


@register_kind
class FixedScale(MethodHandle):
    """A kind without a size knob: trains the LayerNorm weights (fixed size, budget ``none``)."""

    kind = "test_fixed_scale"

    def trains(self, param_name: str) -> bool:
        return "LayerNorm.weight" in param_name


def test_closest_count_wins_and_ties_go_to_the_smaller():
    assert closest_knob(lambda k: 10 * k, 25) == 2  # 20 and 30 are both 5 away: the smaller count
    assert closest_knob(lambda k: 10 * k, 26) == 3
    assert closest_knob(lambda k: 10 * k, 3) == 1  # the smallest knob when even 1 is over
    with pytest.raises(ValueError, match="no knob value up to 5 reaches the budget target of 100"):
        closest_knob(lambda k: k, 100, limit=5)


def test_closest_knob_bisects_to_what_counting_every_knob_gives():
    """Any count that grows with the knob (plateaus included): the answer of trying 1, 2, ... in turn, from a
    dozen counts where the budget needs rank 1,000 (each count may build a whole meta-device model)."""
    def one_by_one(count, target: int, limit: int) -> int | None:
        best = None
        for knob in range(1, limit + 1):
            if best is None or (abs(count(knob) - target), count(knob)) < best[:2]:
                best = (abs(count(knob) - target), count(knob), knob)
            if count(knob) >= target:
                return best[2]
        return None

    rng = random.Random(0)
    for _ in range(3000):
        limit = rng.choice([1, 5, 17, 64, 300])
        counts = list(itertools.accumulate(rng.choice([0, 0, 1, 2, 5, 10]) for _ in range(limit)))
        target = rng.randint(0, counts[-1] + 10)
        count = counts.__getitem__
        expected = one_by_one(lambda k, count=count: count(k - 1), target, limit)
        if expected is None:
            with pytest.raises(ValueError, match="no knob value"):
                closest_knob(lambda k, count=count: count(k - 1), target, limit)
        else:
            assert closest_knob(lambda k, count=count: count(k - 1), target, limit) == expected, (counts, target)
    asked = []
    assert closest_knob(lambda k: asked.append(k) or 1000 * k, 1_000_000) == 1000
    assert len(set(asked)) <= 25


def test_budget_target_is_lora_on_the_six_weight_types():
    # tiny DeBERTa, 2 layers, d = 32, d_ff = 64: per layer 4 * (32 + 32) + 2 * (32 + 64) = 448
    assert budget_target(tiny_deberta(), BUDGET_LEVELS["glue_0.3m"]) == 2 * 2 * 448
    assert budget_target(deberta_v3_base_on_meta(), BUDGET_LEVELS["glue_0.3m"]) == 331_776  # Table 1's 0.33M


def test_count_rule_on_a_tiny_model_records_target_and_gap():
    # Houlsby on d = 32: 4 adapters of 65 b + 32 parameters; target 1792 -> b = 6 (1688) beats b = 7 (1948)
    handle = apply_method(tiny_deberta(), {"name": "test_count_rule_adapter"}, budget="glue_0.3m")
    counts = handle.parameter_counts()
    assert handle.settings.bottleneck == 6
    assert (counts["trainable_paper"], counts["budget_target"]) == (1688, 1792)
    assert counts["budget_gap"] == pytest.approx((1688 - 1792) / 1792)
    assert counts["trainable_paper_start"] == 1688
    pfeiffer = apply_method(tiny_deberta(), {"name": "test_count_rule_adapter", "placement": "pfeiffer"},
                            budget="glue_0.3m")
    assert pfeiffer.settings.bottleneck == 13  # 2 adapters: 130 b + 64 -> 1754 beats 1884
    # an explicit knob is kept; the count rule only fills what the config leaves unset
    assert apply_method(tiny_deberta(), {"name": "test_count_rule_adapter", "bottleneck": 2},
                        budget="glue_0.3m").settings.bottleneck == 2


@pytest.mark.slow
def test_the_papers_kinds_keep_the_papers_knobs_where_the_count_rule_differs():
    """DeBERTaV3-base at 0.3M: the count rule gives Houlsby 8 (Table 7: 8) and Pfeiffer 17 (Table 7: 16)."""
    level = BUDGET_LEVELS["glue_0.3m"]
    model = deberta_v3_base_on_meta()
    rule = get_kind("test_count_rule_adapter")
    assert rule.budget_knobs(level, {"placement": "houlsby"}, model) == {"bottleneck": 8}
    assert rule.budget_knobs(level, {"placement": "pfeiffer"}, model) == {"bottleneck": 17}
    assert get_kind("adapter").budget_knobs(level, {"placement": "pfeiffer"}, model) == {"bottleneck": 16}
    assert get_kind("adalora").budget_knobs(level, {}, None) == {"init_r": 4, "target_r": 2}
    lora = apply_method(tiny_deberta(), {"name": "lora"}, budget="glue_0.3m").parameter_counts()
    assert (lora["trainable_paper"], lora["budget_target"], lora["budget_gap"]) == (1792, 1792, 0.0)


def test_fixed_size_is_a_property_of_the_kind_not_a_name_list():
    assert not has_size_knob("test_fixed_scale") and not has_size_knob("bitfit") and has_size_knob("svd_lora")
    assert effective_budget({"name": "mine", "kind": "test_fixed_scale"}, "glue_0.3m") == "none"
    assert effective_budget("test_count_rule_adapter", "glue_0.3m") == "glue_0.3m"
    handle = apply_method(tiny_deberta(), {"name": "test_fixed_scale"}, budget="glue_0.3m")
    counts = handle.parameter_counts()
    assert counts["budget_target"] is None and counts["budget_gap"] is None
    assert counts["trainable_paper"] == (2 * 2 + 2) * 32  # 2 LayerNorms per layer, the embeddings' and the rel. one


# ------------------------------------------------------------------------------------ the handle API
def _train(handle: MethodHandle, steps: int = 6) -> None:
    handle.set_total_steps(steps)
    params = handle.optimizer_param_groups(0.01, 5e-2)
    opt = torch.optim.AdamW(params, lr=5e-2)
    handle.model.train()
    for step in range(steps):
        loss = handle.model(**cls_batch(step)).loss + handle.regularization_loss()
        loss.backward()
        opt.step()
        handle.step(step)
        opt.zero_grad()
    handle.model.eval()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: v for k, v in cls_batch(99).items() if k != "labels"}).logits


@pytest.mark.parametrize("cfg", [
    {"name": "lora", "r": 2}, ADALORA, {"name": "prune_lora", **{k: v for k, v in ADALORA.items() if k != "name"}},
    {"name": "adapter_pfeiffer", "bottleneck": 4}, {"name": "bitfit"}, {"name": "full_ft"},
], ids=lambda c: c["name"])
def test_save_then_load_gives_identical_logits(tmp_path, cfg):
    handle = apply_method(tiny_deberta(seed=0), cfg)
    _train(handle)
    trained = _logits(handle.model)
    path = handle.save(tmp_path)
    assert path == tmp_path / SAVE_FILE
    loaded = MethodHandle.load(tiny_deberta(seed=0), tmp_path)
    assert type(loaded) is type(handle) and loaded.name == cfg["name"]
    assert loaded.settings == handle.settings
    assert torch.equal(_logits(loaded.model), trained)
    if loaded.rank_pattern() is not None:
        assert loaded.rank_pattern() == handle.rank_pattern()
    if cfg["name"] == "full_ft":  # it saves the whole model: any base of the same shapes becomes it
        assert torch.equal(_logits(MethodHandle.load(tiny_deberta(seed=1), tmp_path).model), trained)
        return
    with pytest.raises(ValueError, match="base model differs"):
        MethodHandle.load(tiny_deberta(seed=1), tmp_path)  # another random init is another base


@pytest.mark.parametrize("cfg", [{"name": "lora", "r": 2}, ADALORA], ids=lambda c: c["name"])
def test_export_from_an_own_loop_loads_in_peft_and_transformers(tmp_path, cfg):
    peft = pytest.importorskip("peft")
    handle = apply_method(tiny_deberta(seed=0), cfg)
    _train(handle)
    trained = _logits(handle.model)
    handle.export(tmp_path / "peft", format="peft")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(tiny_deberta(seed=0), str(tmp_path / "peft")).eval()
    assert torch.allclose(_logits(theirs), trained, atol=1e-5)
    handle.export(tmp_path / "merged", format="merged")
    assert torch.equal(_logits(handle.model), trained)  # exporting merged leaves the handle's model alone
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    assert torch.allclose(_logits(merged), trained, atol=1e-5)


def test_export_says_which_formats_a_method_has(tmp_path):
    handle = apply_method(tiny_deberta(), {"name": "adapter_houlsby", "bottleneck": 2})
    with pytest.raises(ValueError, match=r"'adapter_houlsby' \(adapter\) does not export as 'merged'"):
        handle.export(tmp_path, format="merged")
    with pytest.raises(ValueError, match=r"does not export as 'peft'; it exports as \['merged'\]"):
        apply_method(tiny_deberta(), {"name": "bitfit"}).export(tmp_path, format="peft")
    with pytest.raises(ValueError, match="format must be 'peft' or 'merged'"):
        apply_method(tiny_deberta(), {"name": "lora", "r": 2}).export(tmp_path, format="onnx")


def test_a_methods_label_is_not_part_of_its_identity():
    """Adding ``label:`` to the method yamls keeps every finished run's identity hash (tests/fixtures/runs)."""
    from experiments.identity import identity_hash
    from experiments.spec import run_identity

    base = {"task": {"name": "t", "hparams": {}}, "method": {"name": "lora", "r": 2}, "seed": 0}
    labelled = {**base, "method": {"name": "lora", "label": "LoRA", "description": "x", "r": 2}}
    assert identity_hash(run_identity(labelled, "glue_0.3m")) == identity_hash(run_identity(base, "glue_0.3m"))
    other = {**base, "method": {"name": "lora", "r": 4}}
    assert identity_hash(run_identity(other, "glue_0.3m")) != identity_hash(run_identity(base, "glue_0.3m"))
