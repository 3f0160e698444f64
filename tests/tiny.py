"""Tiny random-init transformers for unit tests of the core library (no tokenizer needed), and the
paper-size DeBERTaV3-base shape on the meta device for parameter accounting (no weights, no download)."""

from __future__ import annotations

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
)

VOCAB = 64


def tiny_deberta(seed: int = 0, num_labels: int = 2) -> DebertaV2ForSequenceClassification:
    torch.manual_seed(seed)
    cfg = DebertaV2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
        position_biased_input=False, share_att_key=True, norm_rel_ebd="layer_norm", max_relative_positions=-1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, cls_dropout=0.0, num_labels=num_labels,
    )
    return DebertaV2ForSequenceClassification(cfg)


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2,
    )
    return BertForSequenceClassification(cfg)


def tiny_bart(seed: int = 0) -> BartForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
    )
    return BartForConditionalGeneration(cfg)


def cls_batch(seed: int, batch: int = 8, length: int = 12, num_labels: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=gen)
    labels = torch.randint(0, num_labels, (batch,), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def seq2seq_batch(seed: int, batch: int = 4, length: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=gen)
    labels = torch.randint(5, VOCAB, (batch, length // 2), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def deberta_v3_base_on_meta() -> DebertaV2ForSequenceClassification:
    """DeBERTaV3-base's architecture with no storage: counts parameters the paper's way in milliseconds."""
    cfg = DebertaV2Config(
        vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        relative_attention=True, position_buckets=256, pos_att_type=["p2c", "c2p"], share_att_key=True,
        norm_rel_ebd="layer_norm", max_relative_positions=-1, position_biased_input=False,
    )
    with torch.device("meta"):
        return DebertaV2ForSequenceClassification(cfg)


def load_synthetic_generator():
    """``tests/fixtures/results/make_synthetic.py`` as a module (its hand-chosen values and writers)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "fixtures" / "results" / "make_synthetic.py"
    spec = importlib.util.spec_from_file_location("make_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
