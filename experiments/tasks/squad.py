"""SQuAD v1.1 / v2.0: sliding-window extractive QA with n-best post-processing.

Preprocessing and post-processing follow the logic of transformers' run_qa / utils_qa (the
paper's QA code is a fork of it), rewritten here: a context longer than ``max_seq_length``
becomes several overlapping windows ("features"); training labels a window with the CLS
position when the answer is not wholly inside it, and evaluation gathers the best span over
all windows of an example, comparing it with the null (CLS) score for v2.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from transformers import DataCollatorWithPadding

from experiments.metrics import squad_metrics
from experiments.tasks.base import SplitRef, Task, batches, require_strings, tokenize
from experiments.tasks.config import TaskConfig
from experiments.tasks.registry import register_task_family

if TYPE_CHECKING:  # only annotations here; experiments.tasks.base imports ``datasets`` where data is loaded
    import datasets

Offsets = Sequence[tuple[int, int] | None]
# Keys of the eval features that post-processing needs but the model must not see.
META_COLUMNS = ["example_id", "offset_mapping"]


@dataclass(frozen=True)
class QAFeature:
    """One tokenized window as post-processing sees it.

    ``offsets[i]`` is the character span of token ``i`` in the context, or None when the
    token is not part of the context (question, special tokens), so it can never be an answer.
    """

    example_id: str
    offsets: Offsets


def postprocess_qa_predictions(
    contexts: Mapping[str, str],
    features: Sequence[QAFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    version_2: bool,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> dict[str, str]:
    """The answer text per example id from per-window start/end logits.

    Candidates are the pairs among each window's ``n_best_size`` best starts and ends that
    lie inside the context, do not end before they start and span at most
    ``max_answer_length`` tokens; the best one scores ``start + end`` logits. For v2 the
    example's null score is the lowest CLS score (``start[0] + end[0]``) over its windows,
    and the prediction is "" when it beats the best span by more than the threshold.
    Logits may be padded beyond a window's length; the padding is ignored.
    """
    windows_of: dict[str, list[int]] = defaultdict(list)
    for index, feature in enumerate(features):
        windows_of[feature.example_id].append(index)

    predictions = {}
    for example_id, context in contexts.items():
        best_score, best_text = -np.inf, ""
        null_score = np.inf
        for index in windows_of[example_id]:
            offsets = features[index].offsets
            start = np.asarray(start_logits[index][: len(offsets)], dtype=np.float64)
            end = np.asarray(end_logits[index][: len(offsets)], dtype=np.float64)
            null_score = min(null_score, start[0] + end[0])
            for score, text in _span_candidates(context, offsets, start, end, n_best_size, max_answer_length):
                if score > best_score:
                    best_score, best_text = score, text
        if version_2 and null_score - best_score > null_score_diff_threshold:
            best_text = ""
        predictions[example_id] = best_text
    return predictions


def _span_candidates(
    context: str,
    offsets: Offsets,
    start: np.ndarray,
    end: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
):
    """(score, text) of every admissible span built from the window's top starts and ends."""
    top_starts = np.argsort(start)[::-1][:n_best_size]
    top_ends = np.argsort(end)[::-1][:n_best_size]
    for s in top_starts:
        for e in top_ends:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            text = context[offsets[s][0] : offsets[e][1]]
            if text:
                yield float(start[s] + end[e]), text


def answer_token_span(
    offsets: Offsets, sequence_ids: Sequence[int | None], start_char: int, end_char: int
) -> tuple[int, int] | None:
    """First and last token of the answer ``[start_char, end_char)`` in this window.

    None when the answer is not wholly inside the window's context part; the caller then
    labels the window with the CLS position ("no answer here").
    """
    context_tokens = [i for i, seq in enumerate(sequence_ids) if seq == 1]
    if not context_tokens:
        return None
    first, last = context_tokens[0], context_tokens[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return None
    start_token = max(i for i in range(first, last + 1) if offsets[i][0] <= start_char)
    end_token = min(i for i in range(first, last + 1) if offsets[i][1] >= end_char)
    return start_token, end_token


def _answers_problem(answers: object, context: str, needs_answer: bool) -> tuple[str, str] | None:
    """(field, what is wrong) for an unusable ``answers`` record, else None."""
    if not isinstance(answers, dict) or not {"text", "answer_start"} <= answers.keys():
        return "answers", f"expected {{'text': [...], 'answer_start': [...]}}, got {answers!r}"
    texts, starts = answers["text"], answers["answer_start"]
    if len(texts) != len(starts):
        return "answers.answer_start", f"{len(starts)} start(s) for {len(texts)} answer text(s)"
    if needs_answer and not texts:
        return (
            "answers.text",
            "a SQuAD v1.1 example needs at least one answer (only v2.0 has unanswerable questions)",
        )
    for text, start in zip(texts, starts, strict=True):
        if isinstance(start, float) and start.is_integer():  # one fractional start turns the column to floats
            start = int(start)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            return "answers.answer_start", f"expected a character offset >= 0, got {start!r}"
        if start + len(text) > len(context):
            return ("answers.answer_start",
                    f"the answer {text!r} at offset {start} ends past the context ({len(context)} characters)")
        found = context[start : start + len(text)]
        if not text or found != text:
            return (
                "answers.answer_start",
                f"context[{start}:{start + len(text)}] is {found!r}, not the answer {text!r}",
            )
    return None


@dataclass(frozen=True)
class SquadConfig(TaskConfig):
    """Windowing and post-processing as run_qa's arguments of the same names."""

    version_2_with_negative: bool = False
    max_seq_length: int = 384
    doc_stride: int = 128
    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0


@register_task_family
class SquadTask(Task):
    family = "squad"
    config_cls = SquadConfig
    head = "question_answering"
    budget_families = frozenset({"qa"})
    archs = frozenset({"deberta-v2", "bert", "roberta"})
    peft_task_type = "QUESTION_ANS"
    heldout_group = "title"  # an article's questions share its context: held out together

    def configure(self, config: SquadConfig) -> None:
        self.version_2: bool = config.version_2_with_negative
        self.max_seq_length: int = config.max_seq_length
        self.doc_stride: int = config.doc_stride
        self.n_best_size: int = config.n_best_size
        self.max_answer_length: int = config.max_answer_length
        self.null_score_diff_threshold: float = config.null_score_diff_threshold

    def default_main_metric(self) -> str:
        return "f1"

    def required_columns(self) -> list[str]:
        return ["id", "question", "context", "answers"]

    def validate_split(self, dataset: datasets.Dataset, ref: SplitRef) -> None:
        for column in ("id", "question", "context"):
            require_strings(dataset, column, ref, non_empty=True)
        # Post-processing keys predictions by id, so a duplicate would silently drop an example.
        seen: set[str] = set()
        for row, example_id in enumerate(dataset["id"]):
            if example_id in seen:
                raise ref.error(row, "id", f"duplicate id {example_id!r}")
            seen.add(example_id)
        # SQuAD v1.1 has no unanswerable questions: a row without an answer can be neither
        # trained on nor scored. v2.0 rows may have none.
        needs_answer = not self.version_2
        for row, (example_id, context, answers) in enumerate(
            zip(dataset["id"], dataset["context"], dataset["answers"], strict=True)
        ):
            problem = _answers_problem(answers, context, needs_answer)
            if problem:
                field, message = problem
                raise ref.error(row, field, f"(id {example_id!r}) {message}")

    def _windows(self, tokenizer, batch: dict):
        """Tokenize question/context pairs into overlapping windows of the context."""
        questions = [q.lstrip() for q in batch["question"]]
        return tokenizer(
            questions,
            batch["context"],
            truncation="only_second",
            max_length=self.max_seq_length,
            stride=self.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )

    def _train_features(self, tokenizer) -> Callable[[dict], dict]:
        def encode(batch: dict) -> dict:
            windows = self._windows(tokenizer, batch)
            example_of = windows.pop("overflow_to_sample_mapping")
            all_offsets = windows.pop("offset_mapping")
            windows["start_positions"], windows["end_positions"] = [], []
            for i, offsets in enumerate(all_offsets):
                cls_index = windows["input_ids"][i].index(tokenizer.cls_token_id)
                answers = batch["answers"][example_of[i]]
                span = None
                if answers["text"]:
                    start_char = answers["answer_start"][0]
                    end_char = start_char + len(answers["text"][0])
                    span = answer_token_span(offsets, windows.sequence_ids(i), start_char, end_char)
                start, end = span or (cls_index, cls_index)
                windows["start_positions"].append(start)
                windows["end_positions"].append(end)
            return windows

        return encode

    def _eval_features(self, tokenizer) -> Callable[[dict], dict]:
        def encode(batch: dict) -> dict:
            windows = self._windows(tokenizer, batch)
            example_of = windows.pop("overflow_to_sample_mapping")
            windows["example_id"] = [batch["id"][j] for j in example_of]
            windows["offset_mapping"] = [
                [
                    span if seq == 1 else None
                    for span, seq in zip(offsets, windows.sequence_ids(i), strict=True)
                ]
                for i, offsets in enumerate(windows["offset_mapping"])
            ]
            return windows

        return encode

    def train_dataset(self, tokenizer) -> datasets.Dataset:
        raw = self.load()[self.train_split]
        return tokenize(
            raw, self._train_features(tokenizer), desc=f"Windowing {self.name} {self.train_split}"
        )

    def collator(self, tokenizer) -> Callable:
        return DataCollatorWithPadding(tokenizer)

    def _eval_data(self, tokenizer, split: str) -> tuple[datasets.Dataset, list[QAFeature]]:
        encoded = tokenize(
            self.load()[split], self._eval_features(tokenizer), desc=f"Windowing {self.name} {split}"
        )
        features = [
            QAFeature(example_id, offsets)
            for example_id, offsets in zip(encoded["example_id"], encoded["offset_mapping"], strict=True)
        ]
        return encoded.remove_columns(META_COLUMNS), features

    def evaluate_split(self, model, tokenizer, split: str, batch_size: int, device) -> dict[str, float]:
        model_inputs, features = self.cached_eval_data(
            tokenizer, split, lambda: self._eval_data(tokenizer, split)
        )
        start_logits, end_logits = [], []
        for batch in batches(model_inputs, self.collator(tokenizer), batch_size, device):
            outputs = model(**batch)
            start_logits.extend(outputs.start_logits.float().cpu().numpy())
            end_logits.extend(outputs.end_logits.float().cpu().numpy())
        raw = self.load()[split]
        predictions = postprocess_qa_predictions(
            dict(zip(raw["id"], raw["context"], strict=True)),
            features,
            start_logits,
            end_logits,
            version_2=self.version_2,
            n_best_size=self.n_best_size,
            max_answer_length=self.max_answer_length,
            null_score_diff_threshold=self.null_score_diff_threshold,
        )
        references = {
            answer_id: answers["text"] for answer_id, answers in zip(raw["id"], raw["answers"], strict=True)
        }
        return squad_metrics(predictions, references, version_2=self.version_2)
