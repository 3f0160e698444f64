"""The benchmark's models: which backbone (a conf/model entry or the paper's dimensions), built
with random or packaged weights, and synthetic batches for it.

The paper-size models are built from their configs (random init) so that no download is needed
on a GPU machine without internet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CONF_MODEL = ROOT / "conf" / "model"

DEBERTA_V3_BASE = {
    "vocab_size": 128100, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 0, "relative_attention": True,
    "position_buckets": 256, "pos_att_type": ["p2c", "c2p"], "share_att_key": True, "norm_rel_ebd": "layer_norm",
    "max_relative_positions": -1, "position_biased_input": False, "layer_norm_eps": 1e-7, "num_labels": 2,
}
BART_LARGE = {
    "vocab_size": 50265, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12, "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096, "encoder_attention_heads": 16, "decoder_attention_heads": 16,
    "max_position_embeddings": 1024, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
    "decoder_start_token_id": 2, "forced_eos_token_id": 2,
}

# Llama-3.2-1B (meta-llama/Llama-3.2-1B's config.json): GQA with 8 KV heads, llama3 RoPE scaling, the output
# layer tied to the embeddings. 1,235,814,400 parameters; the seven projections of 16 layers are adapted.
LLAMA3_2_1B = {
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
    "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": True, "bos_token_id": 128000,
    "eos_token_id": 128001,
}
# Its depth (16 layers x 7 projections: as many adapted matrices, the same ranks) and head geometry (head
# dimension 64, 4 query heads per KV head) at 1/8 of its width, with an 8,192-token vocabulary: a step a
# shared 2-core CPU runs in about a second, whose output layer does not drown the adapters' share
# (the full vocabulary's would be three quarters of the step's arithmetic at this width).
LLAMA_REDUCED = {"hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4, "num_key_value_heads": 1,
                 "vocab_size": 8192, "bos_token_id": None, "eos_token_id": None}

NARROW = {"vocab_size": 1000, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128,
          "position_buckets": 32}
NARROW_BART = {"vocab_size": 1000, "d_model": 64, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
               "encoder_attention_heads": 2, "decoder_attention_heads": 2}


@dataclass(frozen=True)
class ModelSpec:
    """How to build a benchmark model: a conf/model entry (tiny, package) or a config (random init)."""

    conf: str | None = None
    config: dict[str, Any] | None = None
    arch: str = "bert"  # the transformers model_type of ``config``
    head: str = "sequence_classification"  # experiments.models.HEADS: what the batches' labels are
    level: str = "glue_1.2m"
    note: str = ""
    tiny_config: dict[str, Any] | None = None  # overrides of the conf entry's tiny_config


MODELS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(conf="tiny_deberta", arch="deberta-v2", note="2-layer DeBERTa-v2, d=32, random init"),
    "tiny4": ModelSpec(conf="tiny_deberta", arch="deberta-v2", tiny_config={"num_hidden_layers": 4},
                       note="4-layer DeBERTa-v2, d=32, random init (op-count scaling check)"),
    "minilm": ModelSpec(conf="minilm", arch="bert", note="all-MiniLM-L6-v2, real weights (6 layers, d=384)"),
    "deberta_v3_base": ModelSpec(config=DEBERTA_V3_BASE, arch="deberta-v2",
                                 note="DeBERTaV3-base dimensions, random init"),
    "bart_large": ModelSpec(config=BART_LARGE, arch="bart", head="seq2seq_lm", level="nlg_1.10",
                            note="BART-large dimensions, random init"),
    # The paper models' depth (as many adapted matrices, the same ranks) at width 64: the step's
    # arithmetic is negligible, so its time on a CPU is the host's per-step cost (Python, dispatch,
    # autograd), which bounds a GPU step when kernels are small (see benchmarks/README.md).
    "deberta_v3_base_narrow": ModelSpec(config={**DEBERTA_V3_BASE, **NARROW}, arch="deberta-v2",
                                        note="DeBERTaV3-base depth at width 64: host cost per step"),
    "bart_large_narrow": ModelSpec(config={**BART_LARGE, **NARROW_BART}, arch="bart", head="seq2seq_lm",
                                   level="nlg_1.10",
                                   note="BART-large depth at width 64: host cost per step"),
    # A decoder LLM at the llm_r8 budget (LoRA r = 8 on all seven projections; AdaLoRA 12 -> 8).
    "llama3_2_1b": ModelSpec(config=LLAMA3_2_1B, arch="llama", head="causal_lm", level="llm_r8",
                             note="Llama-3.2-1B dimensions, random init"),
    "llama3_2_1b_reduced": ModelSpec(config={**LLAMA3_2_1B, **LLAMA_REDUCED}, arch="llama", head="causal_lm",
                                     level="llm_r8", note="Llama-3.2-1B depth and heads at 1/8 width, vocab 8192"),
}

# The transformers auto class of each head (experiments.models.HEADS) for the models built from a config.
AUTO_CLASSES = {"sequence_classification": "AutoModelForSequenceClassification",
                "seq2seq_lm": "AutoModelForSeq2SeqLM", "causal_lm": "AutoModelForCausalLM"}


def build_model(name: str, device: torch.device, seed: int = 0) -> nn.Module:
    """The model in training mode on ``device``; a ``meta`` device builds shapes only (op counts).

    conf/model entries are read with PyYAML, not OmegaConf, so that the benchmark runs where only
    torch, transformers, peft and accelerate are installed (a GPU box without Hydra).
    """
    spec = MODELS[name]
    torch.manual_seed(seed)
    if spec.conf is not None:
        import yaml

        from experiments.models import load_model

        cfg = yaml.safe_load((CONF_MODEL / f"{spec.conf}.yaml").read_text())
        if spec.tiny_config:
            cfg["tiny_config"] = {**(cfg.get("tiny_config") or {}), **spec.tiny_config}
        model = load_model(cfg, spec.head, num_labels=2).to(device)
    else:
        import transformers

        config = transformers.AutoConfig.for_model(spec.arch, **spec.config)
        with torch.device(device):
            model = getattr(transformers, AUTO_CLASSES[spec.head]).from_config(config)
    return model.train()


def make_batches(model: nn.Module, head: str, batch: int, length: int, device: torch.device,
                 n: int = 4) -> list[dict[str, torch.Tensor]]:
    """``n`` random batches with the labels ``head`` trains on: a class, a target sequence a quarter as long,
    or (``causal_lm``) the inputs themselves, which the model shifts by one token."""
    gen = torch.Generator().manual_seed(1234)
    vocab = model.config.vocab_size
    out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (batch, length), generator=gen)
        b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if head == "seq2seq_lm":
            b["labels"] = torch.randint(5, vocab, (batch, max(2, length // 4)), generator=gen)
        elif head == "causal_lm":
            b["labels"] = ids
        else:
            b["labels"] = torch.randint(0, 2, (batch,), generator=gen)
        out.append({k: v.to(device) for k, v in b.items()})
    return out
