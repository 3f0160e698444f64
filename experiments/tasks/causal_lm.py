"""Decoder-LLM fine-tuning on prompt/response examples, scored the way lm-evaluation-harness scores.

Training: each example is ``prompt`` then ``response``; the prompt is rendered with the tokenizer's
chat template where the task asks for it and the tokenizer has one (``template: chat``), else as
plain text (``template: plain``: ``prompt + separator + response``); what was used is in
:attr:`CausalLMTask.template_used` and reaches the record through the task config. The loss is on the
response tokens only (``loss_on: response``, the default; ``all`` trains on the prompt too): the
prompt's and the response's token ids are encoded separately and concatenated, so the label mask
covers exactly the prompt's tokens.

Columns are named by ``str.format`` templates over a row (``prompt_format``, ``response_format``,
``answer_format``, ``choice_formats``), so a data set's own schema (GSM8K's question/answer, PIQA's
goal/sol1/sol2) needs no conversion.

Evaluation (``experiments.llm_scoring`` holds the scoring, pinned to the harness by tests):

- ``eval_type: generate``: greedy generation from the left-padded prompt, cut at ``until``, scored by
  ``scorer``: ``gsm8k`` (strict and flexible exact match), ``rouge`` (free-form), or ``commonsense``
  (LLM-Adapters' parser, accuracy against ``answer``).
- ``eval_type: multiple_choice``: the log-likelihood of ``" " + choice`` after the prompt for each of
  ``choices``; ``acc`` and ``acc_norm`` against ``gold`` (an index); with ``scorer: commonsense`` the
  generate-then-parse accuracy of LLM-Adapters/DoRA is reported beside them as ``acc_parsed``.

All metrics are percentages, as every task's are.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import datasets
import torch

from experiments.llm_scoring import (
    commonsense_parse,
    gsm8k_scores,
    loglikelihood,
    multiple_choice_correct,
    truncate_at,
)
from experiments.metrics import rouge_metrics
from experiments.tasks.base import SplitRef, Task, tokenize
from experiments.tasks.config import TaskConfig
from experiments.tasks.registry import register_task_family

LABEL_PAD_ID = -100
TEMPLATES = ("chat", "plain")
LOSS_ON = ("response", "all")
EVAL_TYPES = ("generate", "multiple_choice")
SCORERS = ("gsm8k", "rouge", "commonsense", "none")
GOLD_CHOICE = "gold_choice"  # a response_format field: the text of the row's gold choice
_MAIN_METRIC = {"gsm8k": "exact_match_flexible", "rouge": "rougeL", "commonsense": "accuracy"}


def _choice(value: str, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"task.{key} must be one of {list(allowed)}, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class CausalLMConfig(TaskConfig):
    """Formats (``str.format`` over a row), template, loss mask, evaluation and decoding (module docstring)."""

    eval_type: str = "generate"
    scorer: str | None = None  # None: rouge for generate, none for multiple_choice
    template: str = "chat"
    loss_on: str = "response"
    prompt_format: str = "{prompt}"
    response_format: str = "{response}"
    answer_format: str = "{answer}"
    separator: str = " "
    choices_column: str = "choices"
    choice_formats: tuple[str, ...] | None = None
    gold_column: str = "gold"
    gold_values: tuple[Any, ...] | None = None
    max_length: int = 512
    max_new_tokens: int = 64
    until: tuple[str, ...] = ()
    commonsense_task: str | None = None


@register_task_family
class CausalLMTask(Task):
    family = "causal_lm"
    config_cls = CausalLMConfig
    head = "causal_lm"
    budget_families = frozenset({"llm"})
    archs = None  # any decoder the architecture registry knows (the model must have a causal LM head)
    peft_task_type = "CAUSAL_LM"

    def configure(self, config: CausalLMConfig) -> None:
        self.eval_type = _choice(config.eval_type, "eval_type", EVAL_TYPES)
        default_scorer = "none" if self.eval_type == "multiple_choice" else "rouge"
        self.scorer = _choice(config.scorer or default_scorer, "scorer", SCORERS)
        if self.eval_type == "generate" and self.scorer == "none":
            raise ValueError("task.scorer must name how generations are scored (gsm8k, rouge or commonsense) "
                             "when task.eval_type is generate")
        self.template = _choice(config.template, "template", TEMPLATES)
        self.loss_on = _choice(config.loss_on, "loss_on", LOSS_ON)
        self.prompt_format = config.prompt_format
        self.response_format = config.response_format
        self.answer_format = config.answer_format
        self.separator = config.separator
        self.choices_column = config.choices_column  # a list column; dotted: choices.text
        self.choice_formats = list(config.choice_formats) if config.choice_formats else None
        self.gold_column = config.gold_column
        self.gold_values = list(config.gold_values) if config.gold_values is not None else None
        self.max_length = config.max_length
        self.max_new_tokens = config.max_new_tokens
        self.until = tuple(config.until)
        self.commonsense_task = config.commonsense_task
        if self.scorer == "commonsense" and not self.commonsense_task:
            raise ValueError("task.commonsense_task must name the answer vocabulary (boolq, piqa, siqa, arc_easy, "
                             "arc_challenge, openbookqa, hellaswag, winogrande) when task.scorer is commonsense")

    # ------------------------------------------------------------------ data
    def default_main_metric(self) -> str:
        return "acc" if self.eval_type == "multiple_choice" else _MAIN_METRIC[self.scorer]

    def required_columns(self) -> list[str]:
        """The columns the training formats name (``{gold_choice}``: the gold choice's text, of a
        multiple-choice task's choice columns)."""
        fields = [f for f in _fields(self.prompt_format, self.response_format) if f != GOLD_CHOICE]
        if GOLD_CHOICE in _fields(self.response_format):
            fields += [f for f in self._choice_columns() if f not in fields]
        return fields

    def _choice_columns(self) -> list[str]:
        if self.choice_formats:
            return _fields(*self.choice_formats) + [self.gold_column]
        return [self.choices_column.split(".")[0], self.gold_column]

    def _eval_columns(self) -> list[str]:
        if self.eval_type == "multiple_choice":
            return _fields(self.prompt_format) + self._choice_columns()
        return _fields(self.prompt_format, self.answer_format)

    def validate_split(self, dataset: datasets.Dataset, ref: SplitRef) -> None:
        columns = self.required_columns() if ref.split == self.train_split else self._eval_columns()
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise ref.error(0, missing[0], f"missing column(s) {missing} (task formats and eval_type="
                                           f"{self.eval_type} need {columns}); present: {dataset.column_names}")
        if ref.split == self.train_split or self.eval_type != "multiple_choice":
            return
        for row, item in enumerate(dataset):
            choices, gold = self.choices(item), item[self.gold_column]
            if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)):
                raise ref.error(row, self.choices_column, f"expected a list of at least 2 non-empty strings, got {choices!r}")
            try:
                self.gold_index(gold, len(choices))
            except ValueError as err:
                raise ref.error(row, self.gold_column, str(err)) from None

    def gold_index(self, gold: Any, n_choices: int) -> int:
        """The gold choice's index: the value itself, or its position in ``gold_values`` (e.g. A/B/C/D)."""
        index = self.gold_values.index(gold) if self.gold_values is not None and gold in self.gold_values else gold
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_choices:
            known = f" or one of gold_values {self.gold_values}" if self.gold_values is not None else ""
            raise ValueError(f"expected an index into the choices (0..{n_choices - 1}){known}, got {gold!r}")
        return index

    def choices(self, row: Mapping[str, Any]) -> list:
        """A row's answer choices: ``choice_formats`` filled in, or the (dotted) ``choices_column``."""
        if self.choice_formats:
            return [fmt.format(**row) for fmt in self.choice_formats]
        value: Any = row
        for key in self.choices_column.split("."):
            value = value[key] if isinstance(value, Mapping) and key in value else None
        return value

    def uses_chat_template(self, tokenizer) -> bool:
        """Whether prompts are rendered with the chat template: asked for and the tokenizer has one."""
        return self.template == "chat" and bool(getattr(tokenizer, "chat_template", None))

    def render_prompt(self, tokenizer, row: Mapping[str, Any]) -> str:
        """A row's prompt as the model sees it (chat template where used, else the plain text + separator)."""
        prompt = self.prompt_format.format(**row)
        if self.uses_chat_template(tokenizer):
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        return prompt + self.separator

    def encode_example(self, tokenizer, row: Mapping[str, Any]) -> dict[str, list[int]]:
        """input_ids and labels of one example; labels are -100 on exactly the prompt's tokens (loss_on=response).

        The prompt is encoded with the tokenizer's special tokens (BOS where it adds one), the response
        without, followed by EOS: the model learns to stop. Over-long examples lose the prompt's start.
        """
        prompt_ids = tokenizer(self.render_prompt(tokenizer, row))["input_ids"]
        if GOLD_CHOICE in _fields(self.response_format):
            choices = self.choices(row)
            row = {**row, GOLD_CHOICE: choices[self.gold_index(row[self.gold_column], len(choices))]}
        response = self.response_format.format(**row)
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + response_ids)[-self.max_length:]
        prompt_kept = max(0, len(ids) - len(response_ids))
        labels = list(ids) if self.loss_on == "all" else [LABEL_PAD_ID] * prompt_kept + ids[prompt_kept:]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    def train_dataset(self, tokenizer) -> datasets.Dataset:
        def encode(batch: dict) -> dict:
            rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
            encoded = [self.encode_example(tokenizer, row) for row in rows]
            return {key: [e[key] for e in encoded] for key in ("input_ids", "attention_mask", "labels")}

        raw = self.load()[self.train_split]
        return tokenize(raw, encode, desc=f"Tokenizing {self.name} {self.train_split}")

    def collator(self, tokenizer) -> Callable:
        pad_id = _pad_id(tokenizer)

        def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            """Right padding for training: pad tokens get attention 0 and label -100."""
            width = max(len(r["input_ids"]) for r in rows)
            out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
            for row in rows:
                pad = width - len(row["input_ids"])
                out["input_ids"].append(list(row["input_ids"]) + [pad_id] * pad)
                out["attention_mask"].append(list(row["attention_mask"]) + [0] * pad)
                out["labels"].append(list(row["labels"]) + [LABEL_PAD_ID] * pad)
            return {key: torch.tensor(value) for key, value in out.items()}

        return collate

    # ------------------------------------------------------------------ evaluation
    def generate(self, model, tokenizer, rows: list[Mapping[str, Any]], batch_size: int, device) -> list[str]:
        """Greedy generations (new tokens only, decoded, cut at ``until``), from left-padded prompts."""
        pad_id = _pad_id(tokenizer)
        outputs: list[str] = []
        for start in range(0, len(rows), batch_size):
            encoded = [tokenizer(self.render_prompt(tokenizer, r))["input_ids"] for r in rows[start:start + batch_size]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded], device=device)
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
            generated = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=self.max_new_tokens,
                                       do_sample=False, pad_token_id=pad_id)
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            outputs.extend(truncate_at(text, self.until) for text in texts)
        return outputs

    def evaluate_split(self, model, tokenizer, split: str, batch_size: int, device) -> dict[str, float]:
        rows = list(self.load()[split])
        if self.eval_type == "multiple_choice":
            return self._multiple_choice(model, tokenizer, rows, batch_size, device)
        answers = [self.answer_format.format(**row) for row in rows]
        generations = self.generate(model, tokenizer, rows, batch_size, device)
        if self.scorer == "gsm8k":
            return {key: 100.0 * value for key, value in gsm8k_scores(generations, answers).items()}
        if self.scorer == "commonsense":
            return {"accuracy": self._parsed_accuracy(generations, answers)}
        return rouge_metrics(generations, answers)

    def _multiple_choice(self, model, tokenizer, rows, batch_size: int, device) -> dict[str, float]:
        """acc / acc_norm by log-likelihood (context: the prompt without the separator, as the harness's
        ``doc_to_text``; each continuation ``" " + choice``), plus the parsed accuracy for commonsense."""
        acc = acc_norm = 0
        golds = []
        for row in rows:
            choices = list(self.choices(row))
            gold = self.gold_index(row[self.gold_column], len(choices))
            golds.append((gold, choices))
            context = self.render_prompt(tokenizer, row) if self.uses_chat_template(tokenizer) else \
                self.prompt_format.format(**row)
            lls = [loglikelihood(model, tokenizer, context, " " + choice)[0] for choice in choices]
            right, right_norm = multiple_choice_correct(lls, choices, gold)
            acc, acc_norm = acc + right, acc_norm + right_norm
        metrics = {"acc": 100.0 * acc / len(rows), "acc_norm": 100.0 * acc_norm / len(rows)}
        if self.scorer == "commonsense":
            answers = [choices[gold].lower() if self.commonsense_task == "boolq" else
                       f"{_answer_word(self.commonsense_task)}{gold + 1}" for gold, choices in golds]
            metrics["acc_parsed"] = self._parsed_accuracy(self.generate(model, tokenizer, rows, batch_size, device),
                                                          answers)
        return metrics

    def _parsed_accuracy(self, generations: list[str], answers: list[str]) -> float:
        right = sum(commonsense_parse(self.commonsense_task, g) == a.strip().lower()
                    for g, a in zip(generations, answers, strict=True))
        return 100.0 * right / len(answers)


def _fields(*formats: str) -> list[str]:
    """The row fields that ``str.format`` templates name, in order, without repeats."""
    names: list[str] = []
    for fmt in formats:
        for _, field, _, _ in string.Formatter().parse(fmt):
            if field and field not in names:
                names.append(field)
    return names


def _answer_word(commonsense_task: str | None) -> str:
    """The stem of LLM-Adapters' answer words for a task whose gold is an index (boolq's is true/false)."""
    stems = {"piqa": "solution", "hellaswag": "ending", "winogrande": "option"}
    return stems.get(commonsense_task or "", "answer")


def _pad_id(tokenizer) -> int:
    """The pad id: the tokenizer's, else EOS (decoder LLMs often ship without a pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
