"""GLUE: sentence(-pair) classification, and STS-B regression, scored like transformers' run_glue.

``glue_task: custom`` runs any single-text or text-pair classification set in the GLUE schema
(the BBC demo tasks): the config names its ``text_columns`` (one or two) and ``num_labels``,
and it is scored by accuracy and macro-F1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import DataCollatorWithPadding

from experiments.metrics import GLUE_MAIN_METRIC, glue_metrics
from experiments.tasks.base import SplitRef, Task, batches, require_strings, tokenize
from experiments.tasks.config import TaskConfig
from experiments.tasks.registry import register_task_family

if TYPE_CHECKING:  # only annotations here; experiments.tasks.base imports ``datasets`` where data is loaded
    import datasets

# Text columns per task, as in run_glue's ``task_to_keys`` (second is None for single sentences).
TASK_TO_KEYS: dict[str, tuple[str, str | None]] = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
}
STSB_RANGE = (0.0, 5.0)
CUSTOM = "custom"


@dataclass(frozen=True)
class GlueConfig(TaskConfig):
    """``glue_task``: one of :data:`TASK_TO_KEYS`, or ``custom`` with ``text_columns`` (one or two)
    and ``num_labels``."""

    glue_task: str | None = None
    text_columns: tuple[str, ...] | None = None
    num_labels: int | None = None
    max_seq_length: int = 128


@register_task_family
class GlueTask(Task):
    family = "glue"
    config_cls = GlueConfig
    head = "sequence_classification"
    budget_families = frozenset({"glue", "qa"})  # the GLUE ablations (Tables 4/5) use the QA "%" levels
    archs = frozenset({"deberta-v2", "bert", "roberta"})
    peft_task_type = "SEQ_CLS"

    def configure(self, config: GlueConfig) -> None:
        glue_task = config.glue_task
        if glue_task not in (*TASK_TO_KEYS, CUSTOM):
            raise ValueError(f"task.glue_task must be one of {sorted(TASK_TO_KEYS)} or {CUSTOM!r}, got {glue_task!r}")
        self.glue_task: str = glue_task
        self.is_regression = glue_task == "stsb"
        if glue_task == CUSTOM:
            self.text_keys, self.num_labels = _custom_columns_and_labels(config)
        else:
            self.num_labels = 1 if self.is_regression else 3 if glue_task == "mnli" else 2
            self.text_keys = [key for key in TASK_TO_KEYS[glue_task] if key is not None]
        self.max_seq_length: int = config.max_seq_length

    def default_eval_splits(self) -> list[str]:
        if self.glue_task == "mnli":
            return ["validation_matched", "validation_mismatched"]
        return ["validation"]

    def default_main_metric(self) -> str:
        return "accuracy" if self.glue_task == CUSTOM else GLUE_MAIN_METRIC[self.glue_task]

    def required_columns(self) -> list[str]:
        return [*self.text_keys, "label"]

    def validate_split(self, dataset: datasets.Dataset, ref: SplitRef) -> None:
        for key in self.text_keys:
            require_strings(dataset, key, ref, non_empty=False)
        # GLUE test splits are unlabelled and carry -1; anywhere else it is a data bug.
        unlabelled_ok = ref.split == "test"
        for row, label in enumerate(dataset["label"]):
            if unlabelled_ok and label == -1:
                continue
            problem = self._label_problem(label)
            if problem:
                raise ref.error(row, "label", problem)

    def _label_problem(self, label: object) -> str | None:
        if isinstance(label, bool):
            return f"expected a number, got {label!r}"
        # One fractional label turns the whole column to floats (0 -> 0.0): judge the value, not the type.
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if self.is_regression:
            low, high = STSB_RANGE
            if not isinstance(label, int | float) or math.isnan(label) or not low <= label <= high:
                return f"expected a similarity score in [{low:g}, {high:g}], got {label!r}"
            return None
        if not isinstance(label, int) or not 0 <= label < self.num_labels:
            return f"expected an integer class in 0..{self.num_labels - 1}, got {label!r}"
        return None

    def _encode(self, tokenizer) -> Callable[[dict], dict]:
        def encode(batch: dict) -> dict:
            texts = [batch[key] for key in self.text_keys]
            features = tokenizer(*texts, truncation=True, max_length=self.max_seq_length)
            cast = float if self.is_regression else int
            features["labels"] = [cast(label) for label in batch["label"]]
            return features

        return encode

    def train_dataset(self, tokenizer) -> datasets.Dataset:
        raw = self.load()[self.train_split]
        return tokenize(raw, self._encode(tokenizer), desc=f"Tokenizing {self.name} {self.train_split}")

    def collator(self, tokenizer) -> Callable:
        return DataCollatorWithPadding(tokenizer)

    def evaluate_split(self, model, tokenizer, split: str, batch_size: int, device) -> dict[str, float]:
        features = self.cached_eval_data(
            tokenizer,
            split,
            lambda: tokenize(
                self.load()[split], self._encode(tokenizer), desc=f"Tokenizing {self.name} {split}"
            ),
        )
        predictions, references = [], []
        for batch in batches(features, self.collator(tokenizer), batch_size, device):
            references.append(batch.pop("labels").cpu())
            logits = model(**batch).logits.float().cpu()
            predictions.append(logits.squeeze(-1) if self.is_regression else logits.argmax(dim=-1))
        preds, refs = torch.cat(predictions).numpy(), torch.cat(references).numpy()
        if self.glue_task == CUSTOM:
            return custom_metrics(preds, refs, self.num_labels)
        return glue_metrics(self.glue_task, preds, refs)


def _custom_columns_and_labels(config: GlueConfig) -> tuple[list[str], int]:
    columns = list(config.text_columns or ())
    if len(columns) not in (1, 2):
        raise ValueError(f"glue_task=custom needs task.text_columns with one or two column names, got {columns}")
    num_labels = config.num_labels
    if num_labels is None or num_labels < 2:
        raise ValueError(f"glue_task=custom needs task.num_labels, an integer >= 2, got {num_labels!r}")
    return columns, num_labels


def custom_metrics(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 over all ``num_labels`` classes, in percent."""
    from sklearn.metrics import accuracy_score, f1_score  # scikit-learn: slow to import, scoring only

    labels = list(range(num_labels))
    return {"accuracy": 100.0 * float(accuracy_score(references, predictions)),
            "f1_macro": 100.0 * float(f1_score(references, predictions, labels=labels, average="macro",
                                               zero_division=0))}
