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
  ``scorer``: ``gsm8k`` (strict and flexible exact match), ``gsm8k_peft`` (those and PEFT's MetaMathQA
  ``peft_accuracy``), ``rouge`` (free-form), or ``commonsense`` (LLM-Adapters' parser, accuracy against ``answer``).
- ``eval_type: multiple_choice``: the log-likelihood of ``" " + choice`` after the prompt for each of
  ``choices``; ``acc`` and ``acc_norm`` against ``gold`` (an index); with ``scorer: commonsense`` the
  generate-then-parse accuracy of LLM-Adapters/DoRA is reported beside them as ``acc_parsed``.

Separate evaluation data (``eval_sets``): a task may train on one data set and report on others, each
with its own data, split, formats and scoring: MetaMathQA trains, GSM8K's test reports; commonsense_170k
trains, eight commonsense sets report. ``eval_sets`` maps a set's name to its ``dataset`` and ``split`` and
the evaluation keys above (:data:`EVAL_SET_KEYS`); the template, separator and lengths are the task's (the
model is asked the way it was trained). Each set is validated when the task loads; its metrics are
``<set>_<metric>``, with ``avg`` (the mean of each set's main metric, the task's default main metric) and
``avg_<metric>`` for every metric all sets report. ``preprocess`` names a row transform that
lm-evaluation-harness writes in Python rather than in a template (:data:`PREPROCESSORS`), and
``multiple_inputs`` scores the choices as contexts of one continuation (the harness's WinoGrande).

``protocol=heldout`` selects on rows held out of the training split (``task.heldout``). A task with ``eval_sets``
scores them as ``heldout_eval`` says (:meth:`CausalLMTask.heldout_eval_task`), keyed as the sets it stands in for.

All metrics are percentages, as every task's are.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from experiments.llm_scoring import (
    COMMONSENSE_ANSWERS,
    commonsense_parse,
    gsm8k_scores,
    loglikelihood,
    multiple_choice_correct,
    truncate_at,
)
from experiments.metrics import _ROUGE_TYPES as ROUGE_TYPES
from experiments.metrics import peft_accuracy, peft_parse_answer, rouge_metrics
from experiments.tasks.base import (
    DataValidationError,
    SplitRef,
    Task,
    _describe_source,
    _split_files,
    cap,
    inference,
    load_raw_dataset,
    require_columns,
    tokenize,
)
from experiments.tasks.config import TaskConfig, TaskConfigError
from experiments.tasks.heldout import HELDOUT_SPLIT
from experiments.tasks.registry import register_task_family

if TYPE_CHECKING:  # only annotations here; experiments.tasks.base imports ``datasets`` where data is loaded
    import datasets

LABEL_PAD_ID = -100
TEMPLATES = ("chat", "plain")
LOSS_ON = ("response", "all")
EVAL_TYPES = ("generate", "multiple_choice")
SCORERS = ("gsm8k", "gsm8k_peft", "rouge", "commonsense", "none")
GOLD_CHOICE = "gold_choice"  # a response_format field: the text of the row's gold choice
_MAIN_METRIC = {"gsm8k": "exact_match_flexible", "gsm8k_peft": "exact_match_flexible", "rouge": "rougeL",
                "commonsense": "accuracy"}
# ``commonsense_task`` of data that mixes the eight tasks (commonsense_170k): each row is parsed with the answer
# vocabulary its gold answer word belongs to, the vocabulary LLM-Adapters parses that row's task with.
BY_ANSWER = "by_answer"


# The keys of one ``eval_sets`` entry: its data and how it is scored (the rendering is the task's).
EVAL_SET_KEYS = ("dataset", "split", "eval_type", "scorer", "main_metric", "prompt_format", "answer_format",
                 "choices_column", "choice_formats", "gold_column", "gold_values", "gold_labels_column",
                 "max_new_tokens", "until", "commonsense_task", "parse_question_format", "preprocess",
                 "multiple_inputs")
# The keys of ``heldout_eval``: ``as`` (the name its metrics take) and an eval set's scoring keys (its data is the
# rows ``heldout`` holds out of the training split).
HELDOUT_EVAL_KEYS = ("as", *(k for k in EVAL_SET_KEYS if k not in ("dataset", "split")))


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
    parse_question_format: str | None = None  # the question of LLM-Adapters' instruction (acc_parsed)
    gold_labels_column: str | None = None  # gold is the index of the gold value in this (dotted) list column
    preprocess: str | None = None  # a named row transform (PREPROCESSORS) applied before validation
    multiple_inputs: bool = False  # choices are contexts, the prompt their one continuation (WinoGrande)
    eval_sets: Mapping | None = None  # name -> {dataset, split, evaluation keys}: data scored apart
    heldout_eval: Mapping | None = None  # protocol=heldout with eval_sets: how the held-out training rows are scored


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
        vocabularies = (*COMMONSENSE_ANSWERS, BY_ANSWER) if self.eval_type == "generate" else tuple(COMMONSENSE_ANSWERS)
        if self.scorer == "commonsense" and self.commonsense_task not in vocabularies:
            raise ValueError(f"task.commonsense_task must name the answer vocabulary ({', '.join(vocabularies)}) "
                             f"when task.scorer is commonsense, got {self.commonsense_task!r}")
        self.parse_question_format = config.parse_question_format
        self.gold_labels_column = config.gold_labels_column
        self.preprocess = config.preprocess
        if self.preprocess is not None and self.preprocess not in PREPROCESSORS:
            raise ValueError(f"task.preprocess must be one of {sorted(PREPROCESSORS)} or null, got {self.preprocess!r}")
        self.multiple_inputs = config.multiple_inputs
        if self.multiple_inputs and self.eval_type != "multiple_choice":
            raise ValueError("task.multiple_inputs needs task.eval_type multiple_choice (the choices are contexts)")
        self.template_used: str | None = None  # "chat" or "plain" once the training data is built
        self.instruction_format: str | None = None  # the training prompt an eval set's acc_parsed is asked in
        self.eval_sets = self.eval_set_tasks(config)
        self.heldout_eval = self.heldout_eval_task(config)

    @classmethod
    def parse_config(cls, cfg: Mapping) -> TaskConfig:
        """The typed config, every ``eval_sets`` entry built and checked too: a bad entry is refused where the
        task config is checked (``experiments.spec.check_task``), before anything is created or loaded."""
        config = super().parse_config(cfg)
        cls.eval_set_tasks(config)
        cls.heldout_eval_task(config)
        return config

    @classmethod
    def more_datasets(cls, task_cfg: Mapping) -> dict[str, Mapping]:
        """Every eval set's data set (``eval_sets.<name>``): its files and revision are part of what ran."""
        sets = task_cfg.get("eval_sets") or {}
        return {f"eval_sets.{name}": entry["dataset"] for name, entry in sets.items()
                if isinstance(entry, Mapping) and isinstance(entry.get("dataset"), Mapping)}

    @classmethod
    def eval_set_tasks(cls, config: CausalLMConfig) -> dict[str, CausalLMTask]:
        """One task per ``eval_sets`` entry: its own data and formats, the template, separator and lengths of the
        task that trains (the model is asked the way it was trained); an entry's error names the entry."""
        if not config.eval_sets:
            return {}
        if config.eval_splits:
            raise TaskConfigError("task.eval_splits and task.eval_sets exclude each other: an eval set names its "
                                  "own split (task.eval_sets.<name>.split)")
        sets = {}
        for name, entry in config.eval_sets.items():
            where = f"task.eval_sets.{name}"
            if not isinstance(entry, Mapping):
                raise TaskConfigError(f"{where} must be a mapping of {list(EVAL_SET_KEYS)}, got {entry!r}")
            unknown = [k for k in entry if k not in EVAL_SET_KEYS]
            missing = [k for k in ("dataset", "split") if not entry.get(k)]
            if unknown or missing:
                problem = f"has unknown key(s) {unknown}" if unknown else f"needs {missing}"
                raise TaskConfigError(f"{where} {problem}; an eval set takes {list(EVAL_SET_KEYS)} (the template, "
                                      "separator and lengths are the task's)")
            scoring = {k: v for k, v in entry.items() if k != "split"}
            sets[str(name)] = cls._scoring_task(config, where, f"{config.name or cls.family}.{name}", entry["split"],
                                                scoring)
        return sets

    @classmethod
    def _scoring_task(cls, config: CausalLMConfig, where: str, name: str, split: str,
                      scoring: Mapping[str, Any]) -> CausalLMTask:
        """The task that scores one split apart from the training task (an eval set, or the held-out rows): its
        own ``scoring`` keys over the template, separator and lengths of the task that trains; an error names
        ``where``."""
        cfg = {"family": cls.family, "name": name, "template": config.template, "separator": config.separator,
               "max_length": config.max_length, "eval_splits": [split], **scoring}
        try:
            task = cls(cfg)
        except ValueError as err:
            raise TaskConfigError(str(err).replace("task.", f"{where}.", 1)) from None
        if task.main_metric not in task.metric_names():
            raise TaskConfigError(f"{where}.main_metric {task.main_metric!r} is not one of its metrics "
                                  f"{task.metric_names()}")
        task.instruction_format = config.prompt_format  # acc_parsed asks as the model was trained
        return task

    @classmethod
    def heldout_eval_task(cls, config: CausalLMConfig) -> tuple[str, CausalLMTask] | None:
        """``(as, the task scoring the held-out rows)`` of a task that reports on ``eval_sets``, or None.

        Under ``protocol=heldout`` such a task selects on rows held out of its training data, whose schema is
        not its eval sets' (MetaMathQA's query/response, not GSM8K's question/answer), so ``heldout_eval`` says
        how they are scored: the training prompt, then the keys of eval set ``as`` where there is one, then its
        own. Its metrics are named as an eval set ``as`` would be (``<as>_<metric>``, ``avg``): they stand in for
        the reported sets, as an encoder task's carved validation split stands in for dev. A ``heldout`` block
        without it, or metrics without the task's main metric, are refused here, before anything runs.
        """
        entry = config.heldout_eval
        if entry is None:
            if config.eval_sets and config.heldout is not None:
                raise TaskConfigError("task.heldout_eval is not set, and a task with task.eval_sets needs it to score "
                                      "the rows task.heldout holds out of its training data: add e.g. "
                                      "`heldout_eval: {as: <an eval set>}` (docs/llm.md)")
            return None
        where = "task.heldout_eval"
        if not config.eval_sets:
            raise TaskConfigError(f"{where} applies to a task with task.eval_sets; without them the held-out rows are "
                                  "scored as the task's own eval splits: remove it")
        if not isinstance(entry, Mapping) or not isinstance(entry.get("as"), str):
            raise TaskConfigError(f"{where} must be a mapping with `as` (the name its metrics take), got {entry!r}")
        unknown = [k for k in entry if k not in HELDOUT_EVAL_KEYS]
        if unknown:
            raise TaskConfigError(f"{where} has unknown key(s) {unknown}; it takes {list(HELDOUT_EVAL_KEYS)}")
        name = entry["as"]
        inherited = config.eval_sets.get(name) or {}
        scoring = {"prompt_format": config.prompt_format,
                   **{k: v for k, v in inherited.items() if k not in ("dataset", "split")},
                   **{k: v for k, v in entry.items() if k != "as"}}
        task = cls._scoring_task(config, where, f"{config.name or cls.family}.heldout", HELDOUT_SPLIT, scoring)
        names = eval_set_metric_names(name, task.metric_names())
        main = config.main_metric or "avg"
        if main not in names:
            raise TaskConfigError(f"{where} scores the held-out rows as {names}, without the task's main metric "
                                  f"{main!r}: set {where}.as to the eval set whose metric it is")
        return name, task

    # ------------------------------------------------------------------ data
    def default_eval_splits(self) -> list[str]:
        """No eval split of the training data when ``eval_sets`` report (they load their own)."""
        return [] if self.eval_sets else super().default_eval_splits()

    def metric_names(self) -> list[str]:
        """The metrics :meth:`evaluate_split` reports, known before anything runs (a main metric is checked)."""
        if self.eval_type == "multiple_choice":
            return ["acc", "acc_norm"] + (["acc_parsed"] if self.scorer == "commonsense" else [])
        gsm8k = ["exact_match_strict", "exact_match_flexible"]
        return {"gsm8k": gsm8k, "gsm8k_peft": [*gsm8k, "peft_accuracy"], "commonsense": ["accuracy"],
                "rouge": list(ROUGE_TYPES)}[self.scorer]

    def default_main_metric(self) -> str:
        if self.eval_sets:
            return "avg"
        return "acc" if self.eval_type == "multiple_choice" else _MAIN_METRIC[self.scorer]

    def required_columns(self) -> list[str]:
        """The columns the training formats name (``{gold_choice}``: the gold choice's text, of a
        multiple-choice task's choice columns)."""
        fields = [f for f in _fields(self.prompt_format, self.response_format) if f != GOLD_CHOICE]
        if GOLD_CHOICE in _fields(self.response_format):
            fields += [f for f in self._choice_columns() if f not in fields]
        return fields

    def _choice_columns(self) -> list[str]:
        gold = [self.gold_column] + ([self.gold_labels_column.split(".")[0]] if self.gold_labels_column else [])
        if self.choice_formats:
            return _fields(*self.choice_formats) + [c for c in gold if c not in _fields(*self.choice_formats)]
        return list(dict.fromkeys([self.choices_column.split(".")[0], *gold]))

    def _eval_columns(self) -> list[str]:
        if self.eval_type == "multiple_choice":
            return _fields(self.prompt_format, self.parse_question_format or "") + self._choice_columns()
        return _fields(self.prompt_format, self.answer_format)

    def validate_split(self, dataset: datasets.Dataset, ref: SplitRef) -> None:
        if ref.split == self.train_split:
            _require(dataset, ref, self.required_columns(), self.eval_type)
        elif not (ref.split == HELDOUT_SPLIT and self.heldout_eval):  # heldout_eval validates its rows itself
            self.validate_eval(dataset, ref)

    def validate_eval(self, dataset: datasets.Dataset, ref: SplitRef) -> None:
        """An evaluation split's columns and, for multiple choice, every row's choices and gold."""
        _require(dataset, ref, self._eval_columns(), self.eval_type)
        if self.eval_type != "multiple_choice":
            self._validate_answers(dataset, ref)
            return
        for row, item in enumerate(dataset):
            choices = self.choices(item)
            if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)):
                raise ref.error(row, self.choices_column, f"expected a list of at least 2 non-empty strings, got {choices!r}")
            try:
                self.row_gold(item, len(choices))
            except ValueError as err:
                raise ref.error(row, self.gold_labels_column or self.gold_column, str(err)) from None

    def _validate_answers(self, dataset: datasets.Dataset, ref: SplitRef) -> None:
        """Every reference answer the scorer must read: PEFT's marker (``gsm8k_peft``), a word of some
        commonsense vocabulary (``commonsense_task: by_answer``). A reference that cannot be scored is a data
        error before training, not a crash or a silent zero after it."""
        column = (_fields(self.answer_format) or [self.answer_format])[0]
        for row, item in enumerate(dataset):
            answer = self.answer_format.format(**item)
            if self.scorer == "gsm8k_peft" and peft_parse_answer(answer) is None:
                raise ref.error(row, column, f"no answer PEFT's parse_answer reads ('The answer is: N' or '#### N') "
                                             f"in {answer[-60:]!r}; fix the row or use scorer gsm8k")
            if self.commonsense_task == BY_ANSWER and _vocabulary_of(answer) is None:
                raise ref.error(row, column, f"{answer!r} is no answer word of any commonsense task "
                                             f"({', '.join(COMMONSENSE_ANSWERS.values())})")

    def row_gold(self, row: Mapping[str, Any], n_choices: int) -> int:
        """A row's gold index: :meth:`gold_index` of its gold value, or, with ``gold_labels_column``, the gold
        value's position in that list (the harness's ARC/OBQA ``choices.label.index(answerKey)``)."""
        gold = row[self.gold_column]
        if self.gold_labels_column:
            labels = _lookup(row, self.gold_labels_column)
            key = gold.strip() if isinstance(gold, str) else gold
            if not isinstance(labels, list) or key not in labels:
                raise ValueError(f"gold {gold!r} is not one of {self.gold_labels_column} {labels!r}")
            gold = labels.index(key)
        return self.gold_index(gold, n_choices)

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
        return _lookup(row, self.choices_column)

    # ------------------------------------------------------------------ separate evaluation data
    def load(self) -> datasets.DatasetDict:
        """The training data (and eval splits), then every eval set's data, each validated (cached)."""
        if self._raw is None:
            if self.preprocess:
                raise DataValidationError(f"task {self.name}: task.preprocess applies to eval sets only "
                                          "(task.eval_sets.<name>.preprocess)")
            super().load()
            for eval_set in self.eval_sets.values():
                eval_set.load_as_eval_set(self.config.max_eval_samples)
            if self.heldout is not None and self.heldout_eval:
                _, scoring = self.heldout_eval
                source = f"task {self.name}: the rows task.heldout holds out of split '{self.train_split}'"
                scoring.use_eval_rows(self._raw[HELDOUT_SPLIT], SplitRef(source, HELDOUT_SPLIT, ()))
        return self._raw

    def load_as_eval_set(self, max_samples: int | None) -> None:
        """This eval set's one split from its own data set: capped, preprocessed, validated."""
        split = self.eval_splits[0]
        dataset_cfg = dict(self.config.dataset or {})
        files = dataset_cfg.get("data_files")
        if files:
            if split not in files:
                raise DataValidationError(f"task {self.name}: {_describe_source(dataset_cfg, split)}: split "
                                          f"'{split}' not found; set task.eval_sets.<name>.split to one of {list(files)}")
            dataset_cfg["data_files"] = {split: files[split]}
        raw = load_raw_dataset(dataset_cfg)
        ref = SplitRef(f"task {self.name}: {_describe_source(dataset_cfg, split)}", split, _split_files(dataset_cfg, split))
        if split not in raw:
            raise DataValidationError(f"{ref.source}: split '{split}' not found; available splits: {list(raw)}")
        data = cap(raw[split], max_samples)
        if len(data) == 0:
            raise DataValidationError(f"{ref.source}: split '{split}' is empty")
        self.use_eval_rows(data, ref)

    def use_eval_rows(self, data: datasets.Dataset, ref: SplitRef) -> None:
        """Score ``data`` as this task's one eval split: preprocessed (``preprocess``), then validated."""
        import datasets  # loading data is where ``datasets`` is needed (see the module's imports)

        if self.preprocess:
            columns, transform = PREPROCESSORS[self.preprocess]
            require_columns(data, columns, ref)
            data = data.map(transform, desc=f"{self.preprocess} {self.name}")
        self.validate_eval(data, ref)
        self._raw = datasets.DatasetDict({self.eval_splits[0]: data})

    def evaluate(self, model, tokenizer, batch_size: int, device, splits=None) -> dict[str, float]:
        """With ``eval_sets``: every set's metrics as ``<set>_<metric>``, ``avg`` (the mean of the sets' main
        metrics) and ``avg_<metric>`` (each metric all sets report); else the splits' (``Task.evaluate``)."""
        if not self.eval_sets or splits is not None:
            return super().evaluate(model, tokenizer, batch_size, device, splits)
        self.load()
        with inference(model):
            per_set = {name: s.evaluate_split(model, tokenizer, s.eval_splits[0], batch_size, device)
                       for name, s in self.eval_sets.items()}
        return eval_set_metrics(per_set, {name: s.main_metric for name, s in self.eval_sets.items()})

    def evaluate_heldout(self, model, tokenizer, batch_size: int, device) -> dict[str, float]:
        """The held-out training rows' metrics; with ``heldout_eval``, scored by it and named as eval set ``as``
        (``<as>_<metric>``, ``avg``), so the selection reads the key the reported metrics have."""
        if not self.heldout_eval or self.heldout is None:
            return super().evaluate_heldout(model, tokenizer, batch_size, device)
        self.load()
        name, scoring = self.heldout_eval
        with inference(model):
            metrics = scoring.evaluate_split(model, tokenizer, HELDOUT_SPLIT, batch_size, device)
        return eval_set_metrics({name: metrics}, {name: scoring.main_metric})

    def ran(self) -> dict[str, Any]:
        """Whether the prompts were rendered with the tokenizer's chat template (``template: chat`` falls back to
        plain text on a tokenizer without one): the task config alone does not say which."""
        return {"prompt_template": self.template_used}

    def uses_chat_template(self, tokenizer) -> bool:
        """Whether prompts are rendered with the chat template: asked for and the tokenizer has one."""
        return self.template == "chat" and bool(getattr(tokenizer, "chat_template", None))

    def render_prompt(self, tokenizer, row: Mapping[str, Any], prompt_format: str | None = None) -> str:
        """A row's prompt as the model sees it (chat template where used, else the plain text + separator);
        ``prompt_format`` replaces the task's (acc_parsed asks in the training prompt)."""
        prompt = (prompt_format or self.prompt_format).format(**row)
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

        self.template_used = "chat" if self.uses_chat_template(tokenizer) else "plain"  # set here: map may be cached
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
    def generate(self, model, tokenizer, rows: list[Mapping[str, Any]], batch_size: int, device,
                 prompt_format: str | None = None) -> list[str]:
        """Greedy generations (new tokens only, decoded, cut at ``until``), from left-padded prompts."""
        pad_id = _pad_id(tokenizer)
        outputs: list[str] = []
        for start in range(0, len(rows), batch_size):
            encoded = [tokenizer(self.render_prompt(tokenizer, r, prompt_format))["input_ids"]
                       for r in rows[start:start + batch_size]]
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
        if self.scorer in ("gsm8k", "gsm8k_peft"):
            metrics = {key: 100.0 * value for key, value in gsm8k_scores(generations, answers).items()}
            if self.scorer == "gsm8k_peft":
                metrics["peft_accuracy"] = peft_accuracy(generations, answers)
            return metrics
        if self.scorer == "commonsense":
            return {"accuracy": self._parsed_accuracy(generations, answers)}
        return rouge_metrics(generations, answers)

    def _multiple_choice(self, model, tokenizer, rows, batch_size: int, device) -> dict[str, float]:
        """acc / acc_norm by log-likelihood (context: the prompt without the separator, as the harness's
        ``doc_to_text``; each continuation ``" " + choice``; with ``multiple_inputs`` each choice is a context and
        the prompt the continuation), plus the parsed accuracy for commonsense."""
        acc = acc_norm = 0
        golds = []
        for row in rows:
            choices = list(self.choices(row))
            gold = self.row_gold(row, len(choices))
            golds.append(gold)
            prompt = self.render_prompt(tokenizer, row) if self.uses_chat_template(tokenizer) else \
                self.prompt_format.format(**row)
            pairs = [(choice, " " + prompt) for choice in choices] if self.multiple_inputs else \
                [(prompt, " " + choice) for choice in choices]
            lls = [loglikelihood(model, tokenizer, context, continuation)[0] for context, continuation in pairs]
            right, right_norm = multiple_choice_correct(lls, choices, gold)
            acc, acc_norm = acc + right, acc_norm + right_norm
        metrics = {"acc": 100.0 * acc / len(rows), "acc_norm": 100.0 * acc_norm / len(rows)}
        if self.scorer == "commonsense":
            answers = [("false", "true")[gold] if self.commonsense_task == "boolq" else
                       f"{_answer_word(self.commonsense_task)}{gold + 1}" for gold in golds]
            metrics["acc_parsed"] = self._parsed_accuracy(self._parse_generations(model, tokenizer, rows, batch_size,
                                                                                  device), answers)
        return metrics

    def _parse_generations(self, model, tokenizer, rows, batch_size: int, device) -> list[str]:
        """The generations ``acc_parsed`` parses: from LLM-Adapters' instruction in the training prompt where
        ``parse_question_format`` is set (an eval set of a task trained on commonsense_170k), else from the prompt."""
        if not self.parse_question_format:
            return self.generate(model, tokenizer, rows, batch_size, device)
        instructed = [{**row, "instruction": commonsense_instruction(
            self.commonsense_task, self.parse_question_format.format(**row), row.get("options") or self.choices(row)),
            "input": ""} for row in rows]
        return self.generate(model, tokenizer, instructed, batch_size, device, self.instruction_format or "{instruction}")

    def _parsed_accuracy(self, generations: list[str], answers: list[str]) -> float:
        right = 0
        for generation, answer in zip(generations, answers, strict=True):
            gold = answer.strip().lower()
            vocabulary = _vocabulary_of(gold) if self.commonsense_task == BY_ANSWER else self.commonsense_task
            right += commonsense_parse(vocabulary, generation) == gold
        return 100.0 * right / len(answers)


def _fields(*formats: str) -> list[str]:
    """The row fields that ``str.format`` templates name, in order, without repeats."""
    names: list[str] = []
    for fmt in formats:
        for _, field, _, _ in string.Formatter().parse(fmt):
            if field and field not in names:
                names.append(field)
    return names


def _vocabulary_of(answer: str) -> str | None:
    """The first commonsense task whose answer vocabulary holds ``answer`` (its parse is the same for every task
    sharing that vocabulary), None if none does."""
    word = answer.strip().lower()
    return next((task for task, words in COMMONSENSE_ANSWERS.items() if re.fullmatch(words, word)), None)


def _answer_word(commonsense_task: str | None) -> str:
    """The stem of LLM-Adapters' answer words for a task whose gold is an index (boolq's is true/false)."""
    stems = {"piqa": "solution", "hellaswag": "ending", "winogrande": "option"}
    return stems.get(commonsense_task or "", "answer")


def _pad_id(tokenizer) -> int:
    """The pad id: the tokenizer's, else EOS (decoder LLMs often ship without a pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _lookup(row: Mapping[str, Any], dotted: str) -> Any:
    """``row[a][b]`` for ``"a.b"``; None where a key is missing."""
    value: Any = row
    for key in dotted.split("."):
        value = value[key] if isinstance(value, Mapping) and key in value else None
    return value


def _require(dataset: datasets.Dataset, ref: SplitRef, columns: list[str], eval_type: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ref.error(0, missing[0], f"missing column(s) {missing} (task formats and eval_type={eval_type} need "
                                       f"{columns}); present: {dataset.column_names}")


def eval_set_metric_names(name: str, metrics: list[str]) -> list[str]:
    """The keys :func:`eval_set_metrics` gives one set ``name`` reporting ``metrics``."""
    return list(eval_set_metrics({name: dict.fromkeys(metrics, 0.0)}, {name: metrics[0]}))  # one naming rule


def eval_set_metrics(per_set: Mapping[str, Mapping[str, float]], main: Mapping[str, str]) -> dict[str, float]:
    """``<set>_<metric>`` for every set's metrics, ``avg`` (the mean of each set's ``main`` metric, as
    LLM-Adapters and DoRA average their eight commonsense accuracies) and ``avg_<metric>`` where all sets have it."""
    out = {f"{name}_{key}": float(value) for name, metrics in per_set.items() for key, value in metrics.items()}
    out["avg"] = sum(float(per_set[n][main[n]]) for n in per_set) / len(per_set)
    shared = set.intersection(*(set(m) for m in per_set.values()))
    out.update({f"avg_{key}": sum(float(m[key]) for m in per_set.values()) / len(per_set) for key in sorted(shared)})
    return out


# LLM-Adapters' instruction per commonsense task (the prefix of its dataset/<task>/test.json instructions, which its
# commonsense_evaluate.py asks in the Alpaca prompt it trained with) and how it lists the options.
_INSTRUCTION_PREFIX = {
    "boolq": "Please answer the following question with true or false, question: ",
    "piqa": "Please choose the correct solution to the question: ",
    "siqa": "Please choose the correct answer to the question: ",
    "arc_easy": "Please choose the correct answer to the question: ",
    "arc_challenge": "Please choose the correct answer to the question: ",
    "openbookqa": "Please choose the correct answer to the question: ",
    "hellaswag": "Please choose the correct ending to complete the given sentence: ",
    "winogrande": "Please choose the correct answer to fill in the blank to complete the given sentence: ",
}


def commonsense_instruction(task: str | None, question: str, options: list[str]) -> str:
    """LLM-Adapters' instruction for one item: prefix, question, the numbered options (``Solution1: ...``; none
    for BoolQ) and the answer format line (``Answer format: solution1/solution2``)."""
    if task not in _INSTRUCTION_PREFIX:
        raise ValueError(f"commonsense task {task!r} has no LLM-Adapters instruction; known: {sorted(_INSTRUCTION_PREFIX)}")
    if task == "boolq":
        return f"{_INSTRUCTION_PREFIX[task]}{question}\n\nAnswer format: true/false"
    stem = _answer_word(task)
    listed = ("\n\n" if task == "piqa" else " ").join(f"{stem.capitalize()}{i + 1}: {o}" for i, o in enumerate(options))
    answers = "/".join(f"{stem}{i + 1}" for i in range(len(options)))
    return f"{_INSTRUCTION_PREFIX[task]}{question}\n\n{listed}\n\nAnswer format: {answers}"


def _hellaswag_text(text: str) -> str:
    """lm-evaluation-harness's hellaswag ``preprocess``: strip, `` [title]`` -> ``. ``, drop ``[...]``, single spaces."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def _hellaswag_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The harness's hellaswag ``process_docs``: ``query`` (activity label: context), cleaned ``choices``, ``gold``."""
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {"query": _hellaswag_text(row["activity_label"] + ": " + ctx),
            "choices": [_hellaswag_text(e) for e in row["endings"]], "gold": int(row["label"])}


def _winogrande_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The harness's winogrande (``preprocess_winogrande``): each option fills the blank and ends the context
    (``contexts``), the rest of the sentence is the one continuation; ``gold`` from answer "1"/"2"."""
    sentence = row["sentence"]
    blank = sentence.index("_") if "_" in sentence else len(sentence)
    options = [row["option1"], row["option2"]]
    return {"contexts": [sentence[:blank] + option for option in options],
            "continuation": sentence[blank + 1:].strip(), "options": options,
            "gold": {"1": 0, "2": 1}.get(str(row["answer"]), -1)}


def _metamathqa_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A MetaMathQA row in GSM8K's columns, so the held-out rows are scored as GSM8K's test is: ``question`` is
    the query, ``answer`` is ``#### N`` with N the answer PEFT's parse reads after ``The answer is: ``
    (empty where none is: such a row is then refused by ``gsm8k_peft``'s reference check)."""
    answer = peft_parse_answer(row["response"])
    return {"question": row["query"], "answer": "" if answer is None else f"#### {answer}"}


# Row transforms an eval set may name (``preprocess``): the columns they read and the transform.
PREPROCESSORS: dict[str, tuple[list[str], Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
    "hellaswag": (["activity_label", "ctx_a", "ctx_b", "endings", "label"], _hellaswag_row),
    "winogrande": (["sentence", "option1", "option2", "answer"], _winogrande_row),
    "metamathqa": (["query", "response"], _metamathqa_row),
}
