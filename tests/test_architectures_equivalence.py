"""Our AdaLoRA against PEFT's ``AdaLoraModel`` on GPT-2 (``Conv1D``, fused ``c_attn``) and on Llama (seven
projections): the DeBERTa oracle of tests/test_peft_equivalence.py, on the new layouts.

Same tiny model, same initial A/E/B, same batches, same optimiser: the kept-triplet masks must be identical at
every masking step, λ must agree to 1e-6 throughout (the DeBERTa test's tolerances), and so must the
outputs (1e-6 absolute: both sides compute the same roundings on a CPU).
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from adalora import apply_method
from tests.test_peft_equivalence import _orth_reg_of, _peft_params
from tests.tiny import VOCAB, cls_batch

peft = pytest.importorskip("peft")

T, TINIT, TFINAL, DELTA_T = 40, 4, 12, 2  # T - tfinal = 28 is a multiple of ΔT (PEFT's forced mask coincides)


def tiny_gpt2(seed: int = 0) -> GPT2ForSequenceClassification:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, num_labels=2, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    return GPT2ForSequenceClassification(cfg)


def tiny_llama(seed: int = 0) -> LlamaForSequenceClassification:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, head_dim=8,
                      num_labels=2, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    return LlamaForSequenceClassification(cfg)


# The targets as PEFT names them: GPT-2's four Conv1D layers, Llama's seven Linear projections.
CASES = {
    "gpt2": (tiny_gpt2, ["c_attn", "c_proj", "c_fc"], 8),
    "llama": (tiny_llama, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 14),
}


def _pair(arch: str):
    """Our AdaLoRA and PEFT's on two copies of one tiny model, PEFT's A/E/B copied from ours, heads frozen."""
    build, peft_targets, matrices = CASES[arch]
    ours = build()
    handle = apply_method(ours, {"name": "adalora", "init_r": 4, "target_r": 2, "alpha": 16, "tinit": TINIT,
                                 "tfinal": TFINAL, "deltaT": DELTA_T, "orth_reg_weight": 0.1})
    handle.set_total_steps(T)
    config = peft.AdaLoraConfig(init_r=4, target_r=2, lora_alpha=16, lora_dropout=0.0, tinit=TINIT, tfinal=TFINAL,
                                deltaT=DELTA_T, beta1=0.85, beta2=0.85, orth_reg_weight=0.1, total_step=T,
                                target_modules=peft_targets, fan_in_fan_out=arch == "gpt2")
    theirs = peft.get_peft_model(build(), config)
    assert len(handle.svd_modules) == matrices
    assert sorted(n for n, m in theirs.base_model.model.named_modules() if hasattr(m, "lora_E")) == sorted(handle.svd_modules)
    with torch.no_grad():
        for name, mod in handle.svd_modules.items():
            for kind in ("lora_A", "lora_E", "lora_B"):
                _peft_params(theirs, name, kind).copy_(getattr(mod, kind))
    for name, p in ours.named_parameters():
        p.requires_grad_(p.requires_grad and not name.startswith("score."))
    for name, p in theirs.named_parameters():
        p.requires_grad_(".lora_" in name)
    return ours, handle, theirs


@pytest.mark.parametrize("arch", sorted(CASES))
def test_adalora_matches_peft_masks_lambdas_and_outputs(arch):
    ours, handle, theirs = _pair(arch)
    opt_ours = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=5e-3, weight_decay=0.01)
    opt_theirs = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=5e-3, weight_decay=0.01)
    mask_steps, max_diff, max_out_diff = 0, 0.0, 0.0
    for step in range(T):
        batch = cls_batch(step)
        out_ours, out_theirs = ours(**batch), theirs.base_model.model(**batch)
        max_out_diff = max(max_out_diff, (out_ours.logits - out_theirs.logits).abs().max().item())
        (out_ours.loss + handle.regularization_loss()).backward()
        opt_ours.step()
        handle.step(step)
        opt_ours.zero_grad()
        # Our penalty on both sides, as in the DeBERTa test (the official penalty is not smooth at orthogonality).
        (out_theirs.loss + 0.1 * _orth_reg_of(theirs, handle)).backward()
        opt_theirs.step()
        theirs.base_model.update_and_allocate(step)
        opt_theirs.zero_grad()

        budget, mask_now = handle.allocator.budget_schedule(step)
        for name, mod in handle.svd_modules.items():
            e_ours, e_theirs = mod.lora_E.detach(), _peft_params(theirs, name, "lora_E").detach()
            if mask_now:
                assert torch.equal(e_ours == 0, e_theirs == 0), f"mask differs at step {step} in {name}"
            max_diff = max(max_diff, (e_ours - e_theirs).abs().max().item())
        if mask_now:
            mask_steps += 1
            assert sum(int((m.lora_E != 0).sum()) for m in handle.svd_modules.values()) <= budget
    assert mask_steps > 10
    assert max_diff <= 1e-6, f"lambda differs by up to {max_diff:.2e}"
    assert max_out_diff <= 1e-6, f"logits differ by up to {max_out_diff:.2e}"
    final = handle.rank_pattern()
    assert sum(final.values()) == 2 * len(handle.svd_modules)  # b(T) = target_r · n
    assert len(set(final.values())) > 1, "allocation should be uneven across matrices"


def test_merged_gpt2_conv1d_equals_the_adapted_model():
    """ΔW goes into a ``Conv1D``'s (in, out) weight transposed: the merged model computes what the adapter does."""
    ours, handle, _ = _pair("gpt2")
    with torch.no_grad():
        for mod in handle.svd_modules.values():
            mod.lora_E.normal_(std=0.5)  # E = 0 at init would hide a wrong layout
    ours.eval()
    batch = cls_batch(1)
    expected = ours(**batch).logits
    merged = handle.merged_model().eval()
    torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tiny_gpt2().eval()(**batch).logits, expected, atol=1e-3)
