"""Abstractive summarization (XSum, CNN/DailyMail) with a seq2seq LM, scored by ROUGE on beam-search output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from experiments.metrics import rouge_metrics
from experiments.tasks.base import SplitRef, Task, batches, require_strings, tokenize
from experiments.tasks.config import TaskConfig
from experiments.tasks.registry import register_task_family

if TYPE_CHECKING:  # only annotations here; experiments.tasks.base imports ``datasets`` where data is loaded
    import datasets

# Ignored by the cross-entropy loss, so padded label positions cost nothing.
LABEL_PAD_ID = -100
# What ROUGE compares the generated summaries with:
#   truncated_labels: the reference tokenised as a training label (max_target_length) and decoded, as the
#                     official run_summarization_no_trainer.py scored (its eval labels are truncated too);
#   raw:              the full reference summary text.
ROUGE_REFERENCES = ("truncated_labels", "raw")


@dataclass(frozen=True)
class SummarizationConfig(TaskConfig):
    """Columns, lengths and decoding; ``generation_max_length`` None: ``max_target_length``;
    ``rouge_reference``: one of :data:`ROUGE_REFERENCES`."""

    text_column: str = "document"
    summary_column: str = "summary"
    max_source_length: int = 1024
    max_target_length: int = 128
    num_beams: int = 1
    generation_max_length: int | None = None
    rouge_reference: str = "raw"


@register_task_family
class SummarizationTask(Task):
    family = "summarization"
    config_cls = SummarizationConfig
    head = "seq2seq_lm"
    budget_families = frozenset({"nlg"})
    archs = frozenset({"bart"})
    peft_task_type = "SEQ_2_SEQ_LM"

    def configure(self, config: SummarizationConfig) -> None:
        self.text_column: str = config.text_column
        self.summary_column: str = config.summary_column
        self.max_source_length: int = config.max_source_length
        self.max_target_length: int = config.max_target_length
        self.num_beams: int = config.num_beams
        self.generation_max_length: int = config.generation_max_length or self.max_target_length
        self.rouge_reference: str = config.rouge_reference
        if self.rouge_reference not in ROUGE_REFERENCES:
            raise ValueError(f"task.rouge_reference must be one of {ROUGE_REFERENCES}, got {self.rouge_reference!r}")

    def default_main_metric(self) -> str:
        return "rougeL"

    def required_columns(self) -> list[str]:
        return [self.text_column, self.summary_column]

    def validate_split(self, dataset: datasets.Dataset, ref: SplitRef) -> None:
        for column in self.required_columns():
            require_strings(dataset, column, ref, non_empty=True)

    def _encode_sources(self, tokenizer, batch: dict) -> dict:
        return tokenizer(batch[self.text_column], max_length=self.max_source_length, truncation=True)

    def train_dataset(self, tokenizer) -> datasets.Dataset:
        def encode(batch: dict) -> dict:
            features = self._encode_sources(tokenizer, batch)
            targets = tokenizer(
                text_target=batch[self.summary_column], max_length=self.max_target_length, truncation=True
            )
            features["labels"] = targets["input_ids"]
            return features

        raw = self.load()[self.train_split]
        return tokenize(raw, encode, desc=f"Tokenizing {self.name} {self.train_split}")

    def references(self, tokenizer, summaries: list[str]) -> list[str]:
        """The texts ROUGE scores against (``rouge_reference``, see ``ROUGE_REFERENCES``)."""
        if self.rouge_reference == "raw":
            return summaries
        labels = tokenizer(text_target=summaries, max_length=self.max_target_length, truncation=True)["input_ids"]
        return [text.strip() for text in tokenizer.batch_decode(labels, skip_special_tokens=True)]

    def collator(self, tokenizer) -> Callable:
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=LABEL_PAD_ID)

    def evaluate_split(self, model, tokenizer, split: str, batch_size: int, device) -> dict[str, float]:
        raw = self.load()[split]
        sources = self.cached_eval_data(
            tokenizer,
            split,
            lambda: tokenize(
                raw,
                lambda batch: self._encode_sources(tokenizer, batch),
                desc=f"Tokenizing {self.name} {split}",
            ),
        )
        predictions, lengths = [], []
        # Sources only: the seq2seq collator would add a ``labels: None`` entry.
        for batch in batches(sources, DataCollatorWithPadding(tokenizer), batch_size, device):
            generated = model.generate(
                **batch, num_beams=self.num_beams, max_length=self.generation_max_length
            ).cpu()
            predictions.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
            # As run_summarization's gen_len: generated tokens that are not padding.
            lengths.extend((generated != tokenizer.pad_token_id).sum(dim=-1).tolist())
        metrics = rouge_metrics(predictions, self.references(tokenizer, list(raw[self.summary_column])))
        return {**metrics, "gen_len": float(np.mean(lengths))}
