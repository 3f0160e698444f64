"""apply_method: what each method trains, the paper's parameter accounting, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
)

from adalora import apply_method, get_budget, orthogonal_regularization
from tests.tiny import cls_batch, deberta_v3_base_on_meta, seq2seq_batch, tiny_bart, tiny_bert, tiny_deberta

ADALORA = {"name": "adalora", "init_r": 4, "target_r": 2, "tinit": 2, "tfinal": 2, "deltaT": 1}
ALL_METHODS = [
    {"name": "full_ft"},
    {"name": "bitfit"},
    {"name": "lora", "r": 2},
    {"name": "adapter_houlsby", "bottleneck": 4},
    {"name": "adapter_pfeiffer", "bottleneck": 4},
    ADALORA,
]


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_trainable_sets_on_deberta():
    head = {"pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias"}
    layer0 = "deberta.encoder.layer.0."
    m = tiny_deberta()
    apply_method(m, {"name": "lora", "r": 2})
    names = _trainable(m)
    assert head <= names
    assert {n for n in names - head} == {
        f"deberta.encoder.layer.{i}.{mod}.lora_{ab}"
        for i in range(2)
        for mod in ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
                    "attention.output.dense", "intermediate.dense", "output.dense")
        for ab in "AB"
    }
    m = tiny_deberta()
    apply_method(m, {"name": "bitfit"})
    bitfit = _trainable(m) - head
    assert all(n.endswith(".bias") for n in bitfit)
    assert layer0 + "attention.output.LayerNorm.bias" in bitfit and "deberta.embeddings.LayerNorm.bias" in bitfit
    m = tiny_deberta()
    apply_method(m, {"name": "adapter_pfeiffer", "bottleneck": 4})
    assert _trainable(m) - head == {
        f"deberta.encoder.layer.{i}.output.dense.adapter.{p}.{w}" for i in range(2) for p in ("down", "up")
        for w in ("weight", "bias")
    }
    m = tiny_deberta()
    apply_method(m, {"name": "adapter_houlsby", "bottleneck": 4})
    assert len(_trainable(m) - head) == 2 * 2 * 4  # W_o and W_f2 per layer, 4 tensors each
    m = tiny_deberta()
    apply_method(m, ADALORA)
    assert {n.rsplit(".", 1)[-1] for n in _trainable(m) - head} == {"lora_A", "lora_E", "lora_B"}
    assert len(_trainable(m) - head) == 12 * 3
    m = tiny_deberta()
    apply_method(m, {"name": "full_ft"})
    assert _trainable(m) == {n for n, _ in m.named_parameters()}


def test_pooler_is_never_adapted():
    m = tiny_deberta()
    handle = apply_method(m, {"name": "lora", "r": 2})
    assert not any("pooler" in n for n in handle.adapted)
    assert len(handle.adapted) == 12
    assert {t for _, t in handle.weight_types.values()} == {"W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2"}


def test_bart_targets_include_cross_attention_and_train_nothing_else():
    m = tiny_bart()
    handle = apply_method(m, {"name": "lora", "r": 2})
    assert len(handle.adapted) == 2 * 6 + 2 * 10
    assert {n for n, p in m.named_parameters() if p.requires_grad and ".lora_" not in n} == set()
    assert handle.weight_types["model.decoder.layers.1.encoder_attn.k_proj"] == (1, "dec.cross.W_k")


def test_lora_qk_variant_adapts_only_query_and_key():
    handle = apply_method(tiny_deberta(), {"name": "lora_qk", "r": 2})
    assert {t for _, t in handle.weight_types.values()} == {"W_q", "W_k"}


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m["name"])
@pytest.mark.parametrize("family", ["deberta", "bert", "bart"])
def test_every_method_trains_on_every_architecture(method, family):
    model = {"deberta": tiny_deberta, "bert": tiny_bert, "bart": tiny_bart}[family]()
    handle = apply_method(model, method)
    handle.set_total_steps(6)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2)
    batch_fn = seq2seq_batch if family == "bart" else cls_batch
    for step in range(6):
        loss = model(**batch_fn(step)).loss
        reg = handle.regularization_loss()
        if reg is not None:
            loss = loss + reg
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        handle.step(step)
        opt.zero_grad()
    assert any(not torch.equal(b, p) for b, p in zip(before, params))
    if handle.kind == "adalora":
        assert sum(handle.rank_pattern().values()) == 2 * len(handle.adapted)


def test_gamma_zero_means_a_zero_regulariser():
    for cfg in ({**ADALORA, "name": "adalora_no_orth"}, {**ADALORA, "orth_reg_weight": 0.0}, {"name": "lora", "r": 2},
                {"name": "bitfit"}, {"name": "full_ft"}, {"name": "adapter_houlsby", "bottleneck": 2}):
        reg = apply_method(tiny_deberta(), cfg).regularization_loss()
        assert isinstance(reg, torch.Tensor) and reg.dim() == 0 and reg.item() == 0.0, cfg
    handle = apply_method(tiny_deberta(), ADALORA)
    assert handle.regularization_loss().item() > 0


def test_orthogonal_regularization_forms_by_hand():
    a = 2 * torch.eye(3, 5)  # A Aᵀ = 4 I -> ||3 I||_F = 3 √3
    b = torch.eye(4, 3)  # Bᵀ B = I -> 0
    official = orthogonal_regularization([a], [b], "official")
    paper = orthogonal_regularization([a], [b], "paper")
    assert math.isclose(official.item(), 3 * math.sqrt(3) / 2, rel_tol=1e-6)  # mean over 2 matrices
    assert math.isclose(paper.item(), 27.0, rel_tol=1e-6)  # squared sum
    with pytest.raises(ValueError, match="orth_reg"):
        orthogonal_regularization([a], [b], "bogus")


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"name": "lora", "r": 2, "rank": 3}, "unknown key"),
        ({"name": "lora"}, "missing required key"),
        ({"name": "mystery"}, "not registered"),
        ({"name": "adalora", "init_r": 2, "target_r": 3, "tinit": 1, "tfinal": 1, "deltaT": 1}, "target_r"),
        ({"name": "lora", "r": 2, "targets": ["W_zz"]}, "match no linear"),
        ({**ADALORA, "orth_reg": "squared"}, "orth_reg"),
    ],
)
def test_bad_method_configs_name_the_problem(cfg, match):
    with pytest.raises(ValueError, match=match):
        apply_method(tiny_deberta(), cfg)


def test_unknown_architecture_is_a_clear_error():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="unsupported architecture"):
        apply_method(Plain(), {"name": "lora", "r": 1})


# --------------------------------------------------------------- the paper's #Params columns
@pytest.mark.parametrize(
    ("method", "paper_millions"),
    [
        ({"name": "lora", "r": 2}, 0.33),
        ({"name": "lora", "r": 8}, 1.33),
        ({"name": "adapter_houlsby", "bottleneck": 8}, 0.31),
        ({"name": "adapter_houlsby", "bottleneck": 16}, 0.61),
        ({"name": "adapter_houlsby", "bottleneck": 32}, 1.22),
        ({"name": "adapter_pfeiffer", "bottleneck": 16}, 0.30),
        ({"name": "adapter_pfeiffer", "bottleneck": 32}, 0.60),
        ({"name": "adapter_pfeiffer", "bottleneck": 64}, 1.18),
        ({"name": "bitfit"}, 0.1),
        ({"name": "full_ft"}, 184),
    ],
    ids=lambda x: str(x),
)
def test_deberta_v3_base_counts_match_table1(method, paper_millions):
    counts = apply_method(deberta_v3_base_on_meta(), method).parameter_counts()
    # within 2%, or within the rounding of the paper's label ("0.1M" means 0.05-0.15M)
    digits = len(str(paper_millions).partition(".")[2])
    tolerance = max(0.02 * paper_millions, 0.5 * 10**-digits)
    assert counts["trainable_paper"] / 1e6 == pytest.approx(paper_millions, abs=tolerance)


def test_lora_counts_are_exact_ondeberta_v3_base_on_meta():
    assert apply_method(deberta_v3_base_on_meta(), {"name": "lora", "r": 2}).parameter_counts()["trainable_paper"] == 331_776
    assert apply_method(deberta_v3_base_on_meta(), {"name": "lora", "r": 8}).parameter_counts()["trainable_paper"] == 1_327_104


@pytest.mark.parametrize(("level", "expected"), [("nlg_0.13", 540_672), ("nlg_0.26", 1_081_344),
                                                ("nlg_1.10", 4_325_376), ("nlg_2.20", 8_650_752)])
def test_bart_large_lora_counts(level, expected):
    cfg = BartConfig(vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_ffn_dim=4096,
                     decoder_ffn_dim=4096, encoder_attention_heads=16, decoder_attention_heads=16)
    with torch.device("meta"):
        model = BartForConditionalGeneration(cfg)
    handle = apply_method(model, {"name": "lora", "r": get_budget(level).lora_r})
    assert handle.parameter_counts()["adapted_matrices"] == 192
    assert handle.parameter_counts()["trainable_paper"] == expected


def test_adalora_counts_kept_triplets():
    handle = apply_method(deberta_v3_base_on_meta(), {"name": "adalora", "init_r": 4, "target_r": 2, "tinit": 1,
                                               "tfinal": 1, "deltaT": 1})
    # before any mask every triplet counts: 4 · Σ(d_in + d_out + 1) = 4 · (165,888 + 72)
    assert handle.parameter_counts()["trainable_paper"] == 4 * (165_888 + 72)
