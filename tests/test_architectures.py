"""Issue 34 items 1-2: the architecture contract and the built-in backbones.

Every built-in architecture added by the issue x every method kind (ours and the PEFT rows), each on its
tiny config (conf/model/tiny_<arch>.yaml, built offline): applies, meets the budget rule, trains, saves and
reloads to identical logits, exports (PEFT and merged) and reloads, and draws a labelled heatmap. Then the
contract itself: an unknown architecture is refused naming the registered ones, and a user's module
registers a backbone of its own with nothing of the suite edited.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from adalora import apply_method
from adalora.architectures import (
    Architecture,
    ArchitectureError,
    architecture_of,
    display_label,
    get_architecture,
    register_architecture,
)
from adalora.budget import budget_target, closest_knob, get_budget
from adalora.methods import ExportError, MethodConfigError, MethodHandle
from analysis.figures import rank_heatmap
from experiments.models import load_model

peft = pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3")
ARCHS = ("roberta", "t5", "gpt2", *LLAMA_FAMILY)
# Σ (d_in + d_out) over every adaptable matrix of the tiny configs (hidden 32, FFN 64, 2 layers), by hand:
# RoBERTa 2·(4·64 + 96 + 96); T5 2·(enc 4·64 + 96 + 96) + 2·(dec 8·64 + 96 + 96); GPT-2 2·(c_attn 32+96,
# c_proj 64, c_fc 96, c_proj 96); Llama (4 heads of 8, 2 KV heads) 2·(64 + 48 + 48 + 64 + 3·96).
WIDTH = {"roberta": 896, "t5": 2304, "gpt2": 768, **dict.fromkeys(LLAMA_FAMILY, 1024)}
# Heatmap rows, in the architecture's order (an encoder-decoder's by stack, as BART's in the paper's appendix).
ROWS = {
    "roberta": ["W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2"],
    "t5": [f"enc.{t}" for t in ("W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2")]
    + [f"dec.{block}W_{t}" for block in ("self.", "cross.") for t in ("q", "k", "v", "o")] + ["dec.W_f1", "dec.W_f2"],
    "gpt2": ["W_qkv", "W_o", "W_f1", "W_f2"],
    **dict.fromkeys(LLAMA_FAMILY, ["W_q", "W_k", "W_v", "W_o", "W_gate", "W_up", "W_down"]),
}
# Ours and the PEFT rows (PEFT's LoRA through rsLoRA's row, PEFT's own AdaLoRA).
METHODS = ("lora", "adalora", "adapter_houlsby", "bitfit", "full_ft", "peft_rslora", "peft_adalora")
SCHEDULE = {"tinit": 1, "tfinal": 1, "deltaT": 1, "alpha": 16.0, "orth_reg_weight": 0.1}
STEPS, LEVEL = 4, "glue_0.3m"
NO_BIAS = {"t5", "llama", "mistral", "qwen3", "gemma", "gemma2", "gemma3"}  # BitFit has nothing to train there
# The heavy part, exports of every Llama-family member: slow (gpt2 and llama cover the two new layouts).
SLOW_EXPORT = {"mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"}


def tiny_cfg(arch: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"tiny_{arch}.yaml"))


def head_of(arch: str) -> str:
    return "seq2seq_lm" if get_architecture(arch).encoder_decoder else "sequence_classification"


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return load_model(tiny_cfg(arch), head_of(arch), num_labels=2)


def method_cfg(name: str) -> dict:
    """The shipped method config, null keys left to the budget level; AdaLoRA's schedule for a 4-step run."""
    shipped = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml"))
    cfg = {k: v for k, v in shipped.items() if v is not None}
    return {**SCHEDULE, **cfg} if "tinit" in shipped else cfg


def batch(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (4, 10), generator=gen)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if model.config.is_encoder_decoder:
        out["labels"] = torch.randint(5, model.config.vocab_size, (4, 5), generator=gen)
    else:
        out["labels"] = torch.randint(0, 2, (4,), generator=gen)
    return out


def logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """Eval-mode logits without a loss (a loaded PEFT AdaLoRA adds its penalty to a loss and needs training state)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = labels
    with torch.no_grad():
        return model.eval()(**inputs).logits


def train(handle: MethodHandle) -> None:
    handle.set_total_steps(STEPS)
    opt = torch.optim.AdamW(handle.optimizer_param_groups(0.0, 1e-2), lr=1e-2)
    handle.model.train()
    for step in range(STEPS):
        loss = handle.model(**batch(handle.model, step)).loss + handle.regularization_loss()
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        handle.step(step)
        opt.zero_grad()


def check_budget_rule(handle: MethodHandle, arch: str) -> None:
    """The level's target is LoRA at r = 2 on every adaptable matrix; each kind reaches it by its own rule."""
    counts = handle.parameter_counts()
    if not handle.has_size_knob():
        assert counts["budget_target"] is None
        return
    assert counts["budget_target"] == 2 * WIDTH[arch] == budget_target(build(arch), get_budget(LEVEL))
    if handle.kind == "lora":
        assert handle.settings.r == get_budget(LEVEL).lora_r
        if not handle.settings.budget_targets:  # lora_qk: the rank of r's count on W_q, W_k instead (test_ablations)
            assert counts["trainable_paper"] == counts["budget_target"]  # the target *is* LoRA at the level's r
    elif handle.kind == "peft" and handle.settings.peft_type == "lora":  # the count rule
        values = {**method_cfg(handle.name), "peft_type": "lora"}
        rule = closest_knob(lambda r: type(handle).count_for(build(arch), {**values, "r": r}, handle.name),
                            counts["budget_target"])
        assert handle.settings.r == rule
    else:  # the paper's knobs for the level (AdaLoRA's r_init / r̄(T), the adapters' widths)
        level_knobs = type(handle).budget_knobs(get_budget(LEVEL), dataclasses.asdict(handle.settings), build(arch))
        assert level_knobs and all(getattr(handle.settings, k) == v for k, v in level_knobs.items())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_runs_every_method(tmp_path, arch, method):
    model = build(arch)
    if method == "bitfit" and arch in NO_BIAS:
        with pytest.raises(MethodConfigError, match=f"this {arch} model has no bias terms"):
            apply_method(model, method_cfg(method), budget=LEVEL)
        return
    base = logits(build(arch), batch(model, 99))
    handle = apply_method(model, method_cfg(method), budget=LEVEL)
    assert architecture_of(handle.model if handle.kind != "peft" else handle.backbone).name == arch
    if handle.adapted and method != "adapter_houlsby":  # every projection, labelled as the architecture says
        assert sorted({t for _, t in handle.weight_types.values()}) == sorted(ROWS[arch])
    check_budget_rule(handle, arch)

    train(handle)
    inputs = batch(model, 99)
    trained = logits(handle.model, inputs)
    assert torch.isfinite(trained).all() and not torch.allclose(trained, base)

    handle.save(tmp_path / "saved")
    reloaded = MethodHandle.load(build(arch), tmp_path / "saved")
    assert torch.equal(logits(reloaded.model, inputs), trained)

    pattern = handle.rank_pattern()
    if pattern is not None:  # the rank-adaptive kinds: Figure 3, rows named and ordered by the architecture
        fig, matrix = rank_heatmap(pattern, handle.weight_types)
        assert list(matrix.index) == ROWS[arch] and list(matrix.columns) == [0, 1]
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [display_label(t) for t in ROWS[arch]]


EXPORTABLE = ("lora", "adalora", "bitfit", "full_ft", "peft_rslora", "peft_adalora")


@pytest.mark.parametrize(("arch", "method"), [
    pytest.param(a, m, marks=[pytest.mark.slow] if a in SLOW_EXPORT else []) for a in ARCHS for m in EXPORTABLE
    if not (m == "bitfit" and a in NO_BIAS)  # refused there (test_every_architecture_runs_every_method)
])
def test_every_architecture_exports_and_reloads(tmp_path, arch, method):
    handle = apply_method(build(arch), method_cfg(method), budget=LEVEL)
    train(handle)
    inputs = batch(handle.model, 99)
    expected = logits(handle.model, inputs)
    if "peft" in handle.export_formats:
        handle.export(tmp_path / "peft", "peft")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PEFT's notes on AdaLoRA's rank_pattern keys (tests/test_export.py)
            theirs = peft.PeftModel.from_pretrained(build(arch), str(tmp_path / "peft"))
        torch.testing.assert_close(logits(theirs, inputs), expected, atol=1e-5, rtol=1e-5)
    handle.export(tmp_path / "merged", "merged")
    merged = type(build(arch)).from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits(merged, inputs), expected, atol=1e-5, rtol=1e-5)


def test_adapters_have_no_export_on_any_architecture(tmp_path):
    handle = apply_method(build("gpt2"), method_cfg("adapter_houlsby"), budget=LEVEL)
    with pytest.raises(ExportError, match="exports as nothing"):
        handle.export(tmp_path / "x", "merged")


def test_gpt2_fused_projection_is_one_weight_type_named_as_fused():
    arch = get_architecture("gpt2")
    assert arch.weight_type("transformer.h.1.attn.c_attn") == (1, "W_qkv")
    assert display_label("W_qkv") == "W_qkv (fused W_q, W_k, W_v)"
    handle = apply_method(build("gpt2"), {"name": "lora_qk", "r": 2, "budget_targets": []})
    assert sorted(handle.adapted) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]  # W_q holds in it
    layer = handle.adapted["transformer.h.0.attn.c_attn"]
    assert (layer.in_features, layer.out_features, layer.fan_in_fan_out) == (32, 96, True)
    assert layer.delta_weight().shape == layer.base_layer.weight.shape == (32, 96)  # Conv1D's (in, out)


def test_llama_family_paper_targets_select_all_seven_projections():
    """The paper's six names select their Llama counterparts: W_f1 is gate and up, W_f2 is down."""
    handle = apply_method(build("qwen2"), {"name": "lora", "r": 2, "targets": ["W_f1"]})
    assert sorted({t for _, t in handle.weight_types.values()}) == ["W_gate", "W_up"]
    handle = apply_method(build("qwen2"), {"name": "lora", "r": 2, "targets": ["W_gate"]})
    assert sorted({t for _, t in handle.weight_types.values()}) == ["W_gate"]


@pytest.mark.parametrize("method", ["lora_qk", "lora_regu", "adalora_sensitivity", "adalora_magnitude",
                                    "adalora_no_orth", "svd_lora", "prune_lora", "adapter_pfeiffer",
                                    "peft_dora", "peft_loraplus"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ablation_variants_apply_and_train_on_conv1d_and_llama(arch, method):
    handle = apply_method(build(arch), method_cfg(method), budget=LEVEL)
    check_budget_rule(handle, arch)
    train(handle)


def test_unknown_architecture_is_refused_naming_the_registered_ones():
    with pytest.raises(ArchitectureError) as err:
        get_architecture("no_such_arch")
    message = str(err.value)
    assert "unsupported architecture 'no_such_arch': not registered" in message and "docs/architectures.md" in message
    assert all(name in message for name in ("bert", "gpt2", "llama", "qwen3", "roberta", "t5"))
    model = build("gpt2")
    model.config.model_type = "no_such_arch"
    with pytest.raises(ArchitectureError, match="registered: \\['bart', 'bert'"):
        apply_method(model, {"name": "lora", "r": 2})
    with pytest.raises(ValueError, match="model 'x': model.arch: unsupported architecture 'nope': not registered"):
        load_model({"name": "x", "source": "tiny", "arch": "nope"}, "sequence_classification")


def test_a_taken_architecture_name_is_refused():
    with pytest.raises(ValueError, match="'gpt2' is already registered"):
        register_architecture(Architecture("gpt2", ((r"h\.(\d+)\.attn\.c_attn", "W_qkv"),), ("score.",)))


USER_MODULE = '''
from adalora.architectures import Architecture, register_architecture

# OPT: decoder.layers.N.self_attn.{q,k,v,out}_proj and fc1/fc2, a ``score`` head.
register_architecture(Architecture(
    "opt",
    ((r"layers\\.(\\d+)\\.self_attn\\.q_proj", "W_q"), (r"layers\\.(\\d+)\\.self_attn\\.k_proj", "W_k"),
     (r"layers\\.(\\d+)\\.self_attn\\.v_proj", "W_v"), (r"layers\\.(\\d+)\\.self_attn\\.out_proj", "W_o"),
     (r"layers\\.(\\d+)\\.fc1", "W_f1"), (r"layers\\.(\\d+)\\.fc2", "W_f2")),
    ("score.",), config_class="OPTConfig", classifier_dropout_field=None,
    tiny_defaults={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 64,
                   "word_embed_proj_dim": 32, "max_position_embeddings": 64},
))
'''


def test_a_users_module_registers_an_architecture(tmp_path, monkeypatch):
    """One file and one model config of the user's: OPT is adapted, counted and drawn, nothing of the suite edited."""
    (tmp_path / "my_opt_arch.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_opt_arch", raising=False)
    cfg = {"name": "tiny_opt", "source": "tiny", "arch": "opt", "arch_module": "my_opt_arch", "tiny_config": {}}
    torch.manual_seed(0)
    model = load_model(cfg, "sequence_classification", num_labels=2)
    handle = apply_method(model, method_cfg("adalora"), budget=LEVEL)
    assert len(handle.adapted) == 12 and handle.arch.name == "opt"
    assert handle.parameter_counts()["budget_target"] == 2 * 2 * (4 * 64 + 96 + 96)
    train(handle)
    _, matrix = rank_heatmap(handle.rank_pattern(), handle.weight_types)
    assert list(matrix.index) == ["W_q", "W_k", "W_v", "W_o", "W_f1", "W_f2"]


def test_an_arch_module_named_by_a_file_read_from_disk_is_not_imported(tmp_path, monkeypatch):
    """A record's ``model.arch_module`` is never imported by reading it back (adalora.trust)."""
    from adalora import trust

    (tmp_path / "my_untrusted_arch.py").write_text(USER_MODULE.replace('"opt"', '"opt_untrusted"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(trust.TRUST_ENV, raising=False)
    with trust.reading(str(tmp_path / "result.json")), pytest.raises(trust.UntrustedCode):
        get_architecture("opt_untrusted", "my_untrusted_arch")
    assert "my_untrusted_arch" not in sys.modules
