"""The Task interface shared by GLUE, SQuAD and summarization, and the code all three share.

The training loop only ever talks to a ``Task``: it asks for a tokenized training set, a
collator, the model head to build and a metric dict from ``evaluate``. Everything that is
specific to a benchmark (columns, preprocessing, post-processing, metrics) lives in one
subclass per family, so adding a benchmark never touches the loop.

Raw data always goes through one code path after loading: hub datasets (real runs) and
JSONL fixtures in the same schema (offline tests) become the same ``DatasetDict`` and are
validated the same way, so a test on fixtures exercises what a real run executes.
"""

from __future__ import annotations

import abc
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.utils.data import DataLoader

from experiments.tasks.config import TaskConfig, parse_task_config
from experiments.tasks.heldout import HELDOUT_SPLIT, HeldoutSpec, carve

if TYPE_CHECKING:  # ``datasets`` (with pandas and pyarrow) is imported by the functions that load data, so that
    import datasets  # importing a task family (every ``python -m experiments.run``, the analysis) stays cheap


class DataValidationError(ValueError):
    """Raised when raw data cannot be used; the message names the source, row and field."""


@dataclass(frozen=True)
class SplitRef:
    """Where a split came from, so that a data error can point at the file, line and field to fix.

    ``files`` are the split's JSONL files, in load order: row ``r`` of the split is the r-th
    non-blank line over them, which :meth:`error` reports as an editor numbers it (1-based).
    A hub data set has no lines; its errors give the 0-based row.
    """

    source: str
    split: str
    files: tuple[str, ...] = ()

    def error(self, row: int, field: str, problem: str) -> DataValidationError:
        located = _locate_row(self.files, row)
        if located is not None:
            path, line = located
            return DataValidationError(
                f"file '{path}', line {line} (split '{self.split}', row {row}), field '{field}': {problem}"
            )
        return DataValidationError(
            f"{self.source}, split '{self.split}', row {row} (0-based), field '{field}': {problem}"
        )


def _locate_row(files: Sequence[str], row: int) -> tuple[str, int] | None:
    """(file, 1-based line) of the ``row``-th record over JSONL ``files`` (blank lines hold none)."""
    seen = 0
    for path in files:
        if not os.path.isfile(path):  # a URL (a commit-pinned file on GitHub): no lines to point at
            return None
        with open(path, encoding="utf-8") as fh:
            for line_number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if seen == row:
                    return path, line_number
                seen += 1
    return None


def _split_files(dataset_cfg: Mapping, split: str) -> tuple[str, ...]:
    files = (dataset_cfg.get("data_files") or {}).get(split)
    if files is None:
        return ()
    return (str(files),) if isinstance(files, str) else tuple(str(f) for f in files)


def _first_bad_json_line(paths: Sequence[str]) -> str | None:
    """``file '...', line N[, field 'f']: ...`` for the first line that is not one JSON object of
    UTF-8 text and finite numbers, if any.

    The JSON builder's own errors name neither file nor line: a non-UTF-8 byte surfaces as a bare
    ``UnicodeDecodeError``, a number that overflows to inf (an STS-B label ``1e999``) as an opaque
    generation error.
    """
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            for line_number, raw in enumerate(fh, start=1):
                problem = _json_line_problem(raw)
                if problem:
                    return f"file '{path}', line {line_number}{problem}"
    return None


def _json_line_problem(raw: bytes) -> str | None:
    """``[, field 'f']: what is wrong`` for one raw JSONL line, or None (blank lines are fine)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        try:  # name the field whose text holds the bad byte, where the rest of the line is JSON
            value = json.loads(raw.decode("utf-8", errors="replace"))
            field = next((k for k, v in _leaves(value) if isinstance(v, str) and "\ufffd" in v), None)
        except json.JSONDecodeError:
            field = None
        where = f", field '{field}'" if field else ""
        return (f"{where}: byte {raw[err.start]:#04x} at byte {err.start} of the line is not UTF-8 text "
                "(save the file as UTF-8)")
    if not line.strip():
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        return f", column {err.colno}: not valid JSON ({err.msg}); each line of a JSONL file must be one JSON object"
    if not isinstance(value, dict):
        return f": expected one JSON object per line, got {value!r:.60}; each line of a JSONL file must be one JSON object"
    for field, leaf in _leaves(value):
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return f", field '{field}': {leaf} is not a finite number (a value beyond the float range or NaN)"
    return None


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted field name, value) of every non-container value in a parsed JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item, prefix)
    else:
        yield prefix, value


def _describe_source(dataset_cfg: Mapping, split: str) -> str:
    data_files = dataset_cfg.get("data_files")
    if data_files:
        files = data_files.get(split)
        if files is None:
            return f"data_files for splits {list(data_files)}"
        if isinstance(files, str):
            return f"file '{files}'"
        return f"files {list(files)}"
    config_name = dataset_cfg.get("name")
    suffix = f" (config '{config_name}')" if config_name else ""
    return f"dataset '{dataset_cfg.get('path')}'{suffix}"


def materialize_dataset(dataset_cfg: Mapping) -> Mapping:
    """``dataset_cfg`` with ``data_files`` filled in by its ``builder``, if it names one.

    A builder derives a data set from a local corpus (``bbc_topic``, ``bbc_pair``: the offline
    demo, ``experiments.tasks.bbc``) and writes it as JSONL files in a cache directory; from there
    on it is loaded and validated like any ``data_files`` data set.
    """
    builder = dataset_cfg.get("builder")
    if not builder:
        return dataset_cfg
    from experiments.tasks import bbc

    if builder not in bbc.TASKS:
        raise DataValidationError(f"dataset.builder {builder!r} is unknown; known: {list(bbc.TASKS)}")
    return {**dataset_cfg, "data_files": bbc.materialize(str(builder))}


def load_raw_dataset(dataset_cfg: Mapping) -> datasets.DatasetDict:
    """Load every split of a hub dataset, or the JSONL files of ``data_files`` (or of a ``builder``).

    Compute nodes are often offline; a dataset missing from the cache then surfaces as an
    opaque hub error, so it is turned into one that says which dataset to prefetch.
    """
    import datasets  # loading data is where ``datasets`` is needed (see the module's imports)

    dataset_cfg = materialize_dataset(dataset_cfg)
    data_files = dataset_cfg.get("data_files")
    if data_files:
        return datasets.DatasetDict(
            {str(split): _load_json_split(dataset_cfg, str(split)) for split in data_files}
        )
    path, name = dataset_cfg.get("path"), dataset_cfg.get("name")
    revision = dataset_cfg.get("revision")  # branch, tag or commit; None: main (experiments.content)
    try:
        return datasets.load_dataset(path, name, revision=None if revision is None else str(revision))
    except Exception as exc:
        if datasets.config.HF_HUB_OFFLINE or isinstance(exc, ConnectionError):
            dataset_id = (f"{path}" + (f" (config '{name}')" if name else "")
                          + (f" at revision '{revision}'" if revision is not None else ""))
            raise RuntimeError(
                f"Dataset {dataset_id} is not in the Hugging Face cache and the hub cannot be reached "
                f"({type(exc).__name__}: {exc}). Run `make prefetch` on a machine with internet access "
                "(e.g. a login node) to fill the cache, then run again."
            ) from exc
        raise


def _load_json_split(dataset_cfg: Mapping, split: str) -> datasets.Dataset:
    """One split from its JSONL file(s).

    Splits are loaded one by one because the JSON builder casts every split to the first
    one's columns, which would hide a missing column behind an opaque cast error; and an
    empty file is caught here because the builder fails on it without saying which.
    """
    import datasets  # loading data is where ``datasets`` is needed (see the module's imports)

    data_files = dataset_cfg["data_files"][split]
    # str()/list() also turn OmegaConf nodes into the plain types ``datasets`` expects.
    paths = [str(data_files)] if isinstance(data_files, str) else [str(p) for p in data_files]
    if all(os.path.isfile(p) and not _has_rows(p) for p in paths):
        raise DataValidationError(f"{_describe_source(dataset_cfg, split)}: split '{split}' is empty")
    try:
        return datasets.load_dataset("json", data_files={split: paths}, split=split)
    except Exception as exc:
        # The JSON builder's error (DatasetGenerationError) names neither the file nor the line.
        bad = _first_bad_json_line(paths)
        if bad is not None:
            raise DataValidationError(bad) from exc
        raise


def _has_rows(path: str) -> bool:
    with open(path, "rb") as f:  # bytes: a non-UTF-8 byte is reported by _first_bad_json_line, with its line
        return any(line.strip() for line in f)


def require_columns(dataset: datasets.Dataset, columns: Sequence[str], ref: SplitRef) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataValidationError(
            f"{ref.source}, split '{ref.split}': missing column(s) {missing}; present columns: {dataset.column_names}"
        )


def require_strings(dataset: datasets.Dataset, column: str, ref: SplitRef, *, non_empty: bool) -> None:
    """Every value of ``column`` must be a string (and, if asked, not blank)."""
    for row, value in enumerate(dataset[column]):
        if not isinstance(value, str):
            raise ref.error(row, column, f"expected a string, got {value!r}")
        if non_empty and not value.strip():
            raise ref.error(row, column, "is empty")


@contextmanager
def inference(model: torch.nn.Module) -> Iterator[None]:
    """``model.eval()`` + ``no_grad`` for the block; the caller's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def batches(
    dataset: datasets.Dataset, collator: Callable, batch_size: int, device: torch.device | str
) -> Iterator[dict[str, torch.Tensor]]:
    """Eval batches in dataset order (post-processing relies on the order), on ``device``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    for batch in loader:
        yield {k: v.to(device) for k, v in batch.items()}


def tokenize(dataset: datasets.Dataset, function: Callable, desc: str) -> datasets.Dataset:
    """Batched ``map`` that keeps only the columns ``function`` returns."""
    return dataset.map(function, batched=True, remove_columns=dataset.column_names, desc=desc)


def cap(dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    """The first ``max_samples`` rows (smoke runs); all rows when it is None."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.select(range(int(max_samples)))


# Key suffixes of the GLUE convention (run_glue): MNLI's mismatched split reports ``accuracy_mm``.
SPLIT_SUFFIXES = {"validation_mismatched": "_mm"}


def merge_split_metrics(per_split: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """One flat metric dict over several eval splits.

    The first split's keys stay bare (so ``main_metric`` names the usual number); later
    splits get a suffix (``_mm`` for MNLI-mismatched, else ``_<split>``), and with more than
    one split every bare key also gets its mean over the splits as ``<key>_avg``.
    """
    splits = list(per_split)
    merged: dict[str, float] = {}
    for i, split in enumerate(splits):
        suffix = "" if i == 0 else SPLIT_SUFFIXES.get(split, f"_{split}")
        merged.update({f"{key}{suffix}": float(value) for key, value in per_split[split].items()})
    if len(splits) > 1:
        for key in per_split[splits[0]]:
            merged[f"{key}_avg"] = sum(float(per_split[s][key]) for s in splits) / len(splits)
    return merged


class Task(abc.ABC):
    """One task family: its typed config, the model head it needs, raw data, preprocessing,
    collation, evaluation and metrics, and what it accepts and exports as.

    A family is a registered subclass (``experiments.tasks.registry.register_task_family``) that
    sets the class attributes below and implements the abstract methods; the harness, the
    exporter and the analysis only call this interface. ``load`` is shared: it selects the
    configured splits, applies the smoke-run caps and validates every split before anything is
    tokenized. After :meth:`hold_out` (``protocol=heldout``) it also carves a validation split
    from the training split (``experiments.tasks.heldout``), keeping whole ``heldout_group`` groups.

    Class attributes (read before a task is built):

    ``family``           the name a task config's ``family:`` selects
    ``config_cls``       its typed config, a :class:`~experiments.tasks.config.TaskConfig` subclass
    ``head``             the model head it trains (``experiments.models`` heads)
    ``budget_families``  the budget families (``conf/budget/*.yaml`` ``family:``) its tasks take
    ``archs``            the architectures (``model.arch``) it runs on; None: any
    ``peft_task_type``   PEFT's ``task_type`` of an adapter trained on it (``--format peft``)
    """

    family: ClassVar[str]
    config_cls: ClassVar[type[TaskConfig]] = TaskConfig
    head: ClassVar[str]
    budget_families: ClassVar[frozenset[str]]
    archs: ClassVar[frozenset[str] | None] = None
    peft_task_type: ClassVar[str]
    num_labels: int | None = None
    heldout_group: str | None = None  # column whose rows are held out together (SQuAD: the article)

    def __init__(self, cfg: Mapping) -> None:
        self.cfg = cfg
        self.config = self.parse_config(cfg)
        self.configure(self.config)
        self.name: str = self.config.name or self.family
        self.train_split: str = self.config.train_split
        self.eval_splits: list[str] = list(self.config.eval_splits or self.default_eval_splits())
        self.main_metric: str = self.config.main_metric or self.default_main_metric()
        self._raw: datasets.DatasetDict | None = None
        self._eval_cache: dict[tuple[int, str], Any] = {}
        self.heldout: HeldoutSpec | None = None

    @classmethod
    def parse_config(cls, cfg: Mapping) -> TaskConfig:
        """The typed config (unknown keys refused naming the nearest valid one, types checked)."""
        return parse_task_config(cls.config_cls, cfg, cls.family)

    def configure(self, config: TaskConfig) -> None:
        """Family-specific checks and derived attributes of the parsed config (before the defaults
        of ``eval_splits`` and ``main_metric`` are asked for). Default: nothing."""
        return None

    @classmethod
    def accepts_arch(cls, arch: str) -> bool:
        """Whether the family runs on a model of architecture ``arch`` (``model.arch``)."""
        return cls.archs is None or arch in cls.archs

    @classmethod
    def accepted_budget_families(cls, task_cfg: Mapping) -> frozenset[str]:
        """The budget families a task of this family takes: the task's ``budget_families`` when it
        sets them (tiny smoke tasks take every level), else the family's."""
        own = task_cfg.get("budget_families")
        return frozenset(str(f) for f in own) if own else cls.budget_families

    @classmethod
    def more_datasets(cls, task_cfg: Mapping) -> dict[str, Mapping]:
        """The data sets a task reads besides ``task.dataset``, by name, for the run's content identity
        (``experiments.content``): a file edited or a revision moved there changes what ran. Default: none."""
        return {}

    def ran(self) -> dict[str, Any]:
        """What this task did that its config alone does not say (e.g. whether a chat template rendered the
        prompts), for the run record's ``train.task``; called after training. Default: nothing."""
        return {}

    def hold_out(self) -> None:
        """Carve the ``task.heldout`` validation split from the training split when loading
        (``protocol=heldout``); a missing or bad ``heldout:`` block is a ValueError naming it."""
        if self._raw is not None:
            raise RuntimeError(f"task {self.name}: hold_out() must come before the data is loaded")
        self.heldout = HeldoutSpec.from_config(self.config.heldout, self.name)

    def default_eval_splits(self) -> list[str]:
        return ["validation"]

    @abc.abstractmethod
    def default_main_metric(self) -> str: ...

    @abc.abstractmethod
    def required_columns(self) -> list[str]: ...

    @abc.abstractmethod
    def validate_split(self, dataset: datasets.Dataset, ref: SplitRef) -> None:
        """Row-level checks of one split whose required columns are known to be present."""

    @abc.abstractmethod
    def train_dataset(self, tokenizer) -> datasets.Dataset: ...

    @abc.abstractmethod
    def collator(self, tokenizer) -> Callable: ...

    @abc.abstractmethod
    def evaluate_split(self, model, tokenizer, split: str, batch_size: int, device) -> dict[str, float]:
        """Metrics (percent) of ``model`` on one eval split; called under ``inference``."""

    def load(self) -> datasets.DatasetDict:
        """The train split and the eval splits, capped and validated (cached)."""
        import datasets  # loading data is where ``datasets`` is needed (see the module's imports)

        if self._raw is not None:
            return self._raw
        dataset_cfg = materialize_dataset(self.config.dataset or {})
        raw = load_raw_dataset(dataset_cfg)
        caps = {self.train_split: self.config.max_train_samples}
        caps.update({split: self.config.max_eval_samples for split in self.eval_splits})
        if self.heldout is not None:
            raw = self._carve_heldout(raw, dataset_cfg, self.heldout)
            caps[HELDOUT_SPLIT] = self.config.max_eval_samples
        selected = {}
        for split, max_samples in caps.items():
            if split not in raw:
                raise DataValidationError(
                    f"{_describe_source(dataset_cfg, split)}: split '{split}' not found; available splits: {list(raw)}"
                )
            ref = SplitRef(_describe_source(dataset_cfg, split), split, _split_files(dataset_cfg, split))
            dataset = cap(raw[split], max_samples)
            if len(dataset) == 0:
                raise DataValidationError(f"{ref.source}: split '{split}' is empty")
            require_columns(dataset, self.required_columns(), ref)
            try:
                self.validate_split(dataset, ref)
            except UnicodeDecodeError as err:  # the JSON builder keeps invalid UTF-8; reading a column fails
                raise DataValidationError(_first_bad_json_line(ref.files) or f"{ref.source}: {err}") from err
            selected[split] = dataset
        self._raw = datasets.DatasetDict(selected)
        return self._raw

    def _carve_heldout(
        self, raw: datasets.DatasetDict, dataset_cfg: Mapping, spec: HeldoutSpec
    ) -> datasets.DatasetDict:
        """``raw`` with its training split cut in two: the rest (trains) and ``HELDOUT_SPLIT``.

        The whole training split is validated first, before any cap: an error then names the
        file line of the bad row, which the carved splits' row numbers no longer match.
        """
        import datasets  # loading data is where ``datasets`` is needed (see the module's imports)

        split = self.train_split
        if split not in raw:
            raise DataValidationError(
                f"{_describe_source(dataset_cfg, split)}: split '{split}' not found; available splits: {list(raw)}"
            )
        ref = SplitRef(_describe_source(dataset_cfg, split), split, _split_files(dataset_cfg, split))
        require_columns(raw[split], self.required_columns(), ref)
        self.validate_split(raw[split], ref)
        try:
            rest, held = carve(raw[split], spec, self.heldout_group)
        except ValueError as err:
            raise DataValidationError(f"{ref.source}: split '{split}': {err}") from err
        return datasets.DatasetDict({**raw, split: rest, HELDOUT_SPLIT: held})

    def evaluate(
        self, model, tokenizer, batch_size: int, device, splits: Sequence[str] | None = None
    ) -> dict[str, float]:
        """Metrics on every eval split (or on ``splits``), merged into one flat dict (see
        ``merge_split_metrics``)."""
        with inference(model):
            per_split = {
                split: self.evaluate_split(model, tokenizer, split, batch_size, device)
                for split in (self.eval_splits if splits is None else splits)
            }
        return merge_split_metrics(per_split)

    def evaluate_heldout(self, model, tokenizer, batch_size: int, device) -> dict[str, float]:
        """Metrics on the carved validation split (after :meth:`hold_out`), keyed like the dev metrics."""
        if self.heldout is None:
            raise RuntimeError(f"task {self.name}: evaluate_heldout() needs hold_out() first")
        return self.evaluate(model, tokenizer, batch_size, device, splits=[HELDOUT_SPLIT])

    def cached_eval_data(self, tokenizer, split: str, build: Callable[[], Any]) -> Any:
        """Tokenized eval data, built once per tokenizer and split: ``evaluate`` runs many times a run."""
        key = (id(tokenizer), split)
        if key not in self._eval_cache:
            self._eval_cache[key] = build()
        return self._eval_cache[key]
