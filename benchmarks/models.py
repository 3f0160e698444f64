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

NARROW = {"vocab_size": 1000, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128,
          "position_buckets": 32}
NARROW_BART = {"vocab_size": 1000, "d_model": 64, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
               "encoder_attention_heads": 2, "decoder_attention_heads": 2}


@dataclass(frozen=True)
class ModelSpec:
    """How to build a benchmark model: a conf/model entry (tiny, package) or a config (random init)."""

    conf: str | None = None
    config: dict[str, Any] | None = None
    arch: str = "bert"
    seq2seq: bool = False
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
    "bart_large": ModelSpec(config=BART_LARGE, arch="bart", seq2seq=True, level="nlg_1.10",
                            note="BART-large dimensions, random init"),
    # The paper models' depth (as many adapted matrices, the same ranks) at width 64: the step's
    # arithmetic is negligible, so its time on a CPU is the host's per-step cost (Python, dispatch,
    # autograd), which bounds a GPU step when kernels are small (see benchmarks/README.md).
    "deberta_v3_base_narrow": ModelSpec(config={**DEBERTA_V3_BASE, **NARROW}, arch="deberta-v2",
                                        note="DeBERTaV3-base depth at width 64: host cost per step"),
    "bart_large_narrow": ModelSpec(config={**BART_LARGE, **NARROW_BART}, arch="bart", seq2seq=True, level="nlg_1.10",
                                   note="BART-large depth at width 64: host cost per step"),
}


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
        head = "seq2seq_lm" if spec.seq2seq else "sequence_classification"
        model = load_model(cfg, head, num_labels=2).to(device)
    else:
        from transformers import (
            BartConfig,
            BartForConditionalGeneration,
            DebertaV2Config,
            DebertaV2ForSequenceClassification,
        )

        if spec.arch == "bart":
            cls, config = BartForConditionalGeneration, BartConfig(**spec.config)
        else:
            cls, config = DebertaV2ForSequenceClassification, DebertaV2Config(**spec.config)
        with torch.device(device):
            model = cls(config)
    return model.train()


def make_batches(model: nn.Module, seq2seq: bool, batch: int, length: int, device: torch.device,
                 n: int = 4) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1234)
    vocab = model.config.vocab_size
    out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (batch, length), generator=gen)
        b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if seq2seq:
            b["labels"] = torch.randint(5, vocab, (batch, max(2, length // 4)), generator=gen)
        else:
            b["labels"] = torch.randint(0, 2, (batch,), generator=gen)
        out.append({k: v.to(device) for k, v in b.items()})
    return out
