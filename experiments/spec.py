"""One run, resolved once: ``resolve(cfg) -> RunSpec``.

Hydra hands a run an untyped tree; before this module, five places derived the effective
configuration from it (the runner's merge, its validation, the schedule in steps, ``apply_method``
and the identity), and two of them had diverged: a PEFT LoRA-family row trained with the task's
``lora`` block but was hashed without it, so a run at another learning rate looked finished.

This module is the only reader of Hydra's config. It

- checks the task, its dataset and the model against typed schemas (an unknown or misspelt key is
  an error naming it and the nearest valid key; ranges are checked where a field is declared),
- writes the hyperparameter precedence once (:func:`task_hparams`): ``default`` < the kind's
  ``hparams_blocks`` < the method's exact name < the method config and the command line,
- and returns a frozen :class:`RunSpec`, from which the identity, the record, the build and the
  training read. Fields that cannot change a result say so where they are declared
  (``metadata={"result": False}``), and the identity leaves them out.

The identity of a record written before the spec (schema 1: no stored identity) is computed from
its stored config alone, without importing anything (:func:`record_identity`; docs/identity.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from adalora.budget import BudgetLevel, level_settings
from adalora.methods import (
    DESCRIPTIVE_KEYS,
    METHODS,
    MethodConfigError,
    MethodHandle,
    has_size_knob,
    resolve_kind,
)
from adalora.methods.registry import settings_keys, settings_values
from adalora.methods.settings import checked_values, nearest_key
from experiments.identity import (
    CONTENT_KEY,
    NON_RESULT_TRAINER_KEYS,
    identity_block,
    override_dirname,
    stored_identity,
)
from experiments.lr_search import selected_lr
from experiments.protocol import DEFAULT_PROTOCOL, Protocol, get_protocol, identity_view
from experiments.tasks import Task, TaskConfig, TaskConfigError, family_of
from experiments.training import TrainSettings
from experiments.validation import run_input_problems

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A configuration that cannot run; raised before anything is created on disk."""


# ---------------------------------------------------------------------------- typed configs
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """``task.dataset``: where the data comes from (``datasets.load_dataset`` arguments)."""

    path: str | None = None
    name: str | None = None
    data_files: Any = None
    revision: str | None = None
    builder: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``model``: the backbone (experiments/models.py reads it; its docstring says what each key does)."""

    name: str
    source: str
    arch: str
    pretrained: str | None = None
    tiny_config: Any = None
    package: str | None = None
    revision: str | None = None
    arch_module: str | None = None
    use_kernels: bool = False
    gguf_file: str | None = None
    gguf_quant: str | None = None

    def __post_init__(self) -> None:
        from adalora.architectures import ArchitectureError, get_architecture
        from experiments.models import SOURCES

        if self.source not in SOURCES:
            raise ConfigError(f"model.source must be one of {list(SOURCES)}, got {self.source!r}")
        try:
            get_architecture(self.arch, self.arch_module)
        except ArchitectureError as err:
            raise ConfigError(f"model.arch: {err}") from None
        if (self.gguf_file is None) != (self.gguf_quant is None):
            raise ConfigError("model.gguf_file and model.gguf_quant go together (the file and the quantisation "
                              "it must declare, e.g. Q4_1): set both or neither")


_MODEL_HPARAM_KEYS = {"cls_dropout"}  # model settings a task's hparams may give per method


def typed(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """``cls(**values)`` checked by the methods' settings machinery: unknown keys name the nearest valid
    one, types are checked against the annotations, ranges by ``cls.__post_init__``."""
    try:
        return cls(**checked_values(cls, values, prefix, prefix=prefix))
    except MethodConfigError as err:
        raise ConfigError(str(err)) from err
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{prefix}: {err}") from err


def check_task(task: Mapping[str, Any]) -> tuple[type[Task], TaskConfig]:
    """The task's family (the registry: built in, ``task.module`` or an entry point) and its typed config
    (unknown keys refused naming the nearest valid one), and the dataset block's keys."""
    try:
        family = family_of(task)
        checked = family.parse_config(task)
    except (TaskConfigError, ValueError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    if isinstance(task.get("dataset"), Mapping):
        typed(DatasetConfig, task["dataset"], "task.dataset")
    elif task.get("dataset") is not None:
        raise ConfigError(f"task.dataset must be a mapping (path, name, data_files, revision), got {task['dataset']!r}")
    return family, checked


def check_task_model_budget(family: type[Task], task: Mapping[str, Any], model: ModelConfig,
                            budget: Mapping[str, Any], kind: type[MethodHandle]) -> BudgetLevel | None:
    """Whether the task's family takes this model's architecture and this budget level (the family says:
    ``accepts_arch``, ``accepted_budget_families``); the level a sized method trains at (None for a
    fixed-size one), built from the budget config (``conf/budget/<name>.yaml``)."""
    if not family.accepts_arch(model.arch):
        raise ConfigError(f"task={task.get('name')} ({family.family}) needs a model with arch in "
                          f"{sorted(family.archs or ())}, got model={model.name} ({model.arch})")
    if not kind.has_size_knob():
        return None
    name = budget.get("name")
    if name == "none":
        raise ConfigError(f"budget=none only fits methods without a size knob (full_ft, bitfit), not method={kind.kind}")
    try:
        level = BudgetLevel.from_config(budget)
    except ValueError as err:
        raise ConfigError(f"budget={name}: {str(err).splitlines()[0]} (the levels: conf/budget/*.yaml)") from None
    allowed = family.accepted_budget_families(task)
    if level.family not in allowed:
        raise ConfigError(f"budget={name} is a {level.family} level; task={task.get('name')} takes {sorted(allowed)} levels")
    return level


# ---------------------------------------------------------------------------- the precedence
def task_hparams(task: Mapping[str, Any], name: str, blocks: tuple[str, ...]) -> dict[str, Any]:
    """THE hyperparameter precedence: the task's ``hparams`` blocks ``default`` < the kind's blocks
    (``hparams_blocks``: ``lora``; a PEFT LoRA-family row: ``lora``, ``peft``) < the method's exact name.
    The method config and the command line win over all of them (:func:`resolve`)."""
    hp = task.get("hparams") or {}
    merged: dict[str, Any] = {}
    for key in ("default", *blocks, name):
        merged.update(hp.get(key) or {})
    return merged


def stored_blocks(method: Mapping[str, Any]) -> tuple[str, ...]:
    """The blocks a record written before the spec was hashed with: its kind's name, found from the stored
    config alone (explicit ``kind``, a registered variant's kind, or the name itself); nothing is imported."""
    name = method.get("name")
    return (method.get("kind") or METHODS.get(name, (name, None))[0],)


# ---------------------------------------------------------------------------- the spec
def _meta(result: bool) -> dict[str, Any]:
    return {"result": result}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything a run is, resolved once. Fields with ``result: False`` cannot change its numbers."""

    seed: int
    task: Mapping[str, Any]  # the checked task config (its family's TaskConfig), as the family reads it
    model: Mapping[str, Any]  # the checked model config (ModelConfig)
    method: Mapping[str, Any]  # effective method settings: task hparams < method config < budget knobs
    method_name: str
    method_kind: str
    hparams_blocks: tuple[str, ...]  # the task hparams blocks this method read, lowest first
    train: TrainSettings
    cls_dropout: float | None
    budget: BudgetLevel | None  # the level a sized method trains at; None for fixed-size methods
    budget_name: str  # the effective budget: ``none`` for a fixed-size method at any level
    protocol: Protocol
    config: Mapping[str, Any] = dataclasses.field(metadata=_meta(False))  # the resolved config, as recorded
    run_dir: Path = dataclasses.field(default=Path("."), metadata=_meta(False))
    sweep_name: str = dataclasses.field(default="adhoc", metadata=_meta(False))
    output_root: str = dataclasses.field(default="outputs", metadata=_meta(False))
    force: bool = dataclasses.field(default=False, metadata=_meta(False))
    logger: Any = dataclasses.field(default=None, metadata=_meta(False))
    label: str = dataclasses.field(default="", metadata=_meta(False))
    overrides: tuple[str, ...] | None = dataclasses.field(default=None, metadata=_meta(False))  # this job's CLI

    def identity(self) -> dict[str, Any]:
        """The result-defining part of this run's config (no data content: :meth:`identity_block`)."""
        return config_identity(self.config, self.budget_name, self.hparams_blocks)

    def identity_block(self) -> dict[str, Any]:
        """The identity with ``content`` (what the data files and hub revisions are now), hashed."""
        return identity_block(with_content(self.identity(), self.config))

    def schedule(self, total_steps: int) -> dict[str, Any]:
        """The method settings with fractional ``tinit``/``tfinal`` in optimiser steps of T = ``total_steps``."""
        return schedule_in_steps(self.method, total_steps)

    def run_info(self) -> dict[str, Any]:
        """The record's ``run`` block: where this run sits in the tables."""
        return {"sweep": self.sweep_name, "task": self.task["name"], "family": self.task["family"],
                "method": self.method_name, "budget": self.budget_name, "seed": self.seed,
                "model": self.model["name"], "label": self.label, "protocol": self.protocol.name}


# Top-level config keys that never change a run's numbers: the spec fields declared ``result: False``
# plus the keys Hydra adds around a run. Everything else is identity (fail-safe: a new key is hashed).
NON_RESULT_KEYS = frozenset({f.name for f in dataclasses.fields(RunSpec) if not f.metadata.get("result", True)}
                            - {"config", "label", "overrides"} | {"launcher", "sweep", "hydra"})
NON_RESULT_METHOD_KEYS = frozenset({"label", "description"})
# Keys already in the standard path: overriding them never adds a sub-directory.
PATH_KEYS = frozenset({"task", "method", "budget", "seed"})


def _plain(cfg: DictConfig) -> dict[str, Any]:
    """``OmegaConf.to_container(cfg, resolve=True)`` without the ``hydra`` node a sweep job's config carries; a
    failing interpolation (a selection file's bad entry) is one line naming it, not a traceback.

    Each top-level node is converted where it is, exactly as ``to_container`` converts a child of the root
    (dereferenced, then converted; a missing value stays ``???``). A masked copy of ``cfg`` gave the same
    values but re-created, and re-parsed, every node of the config on each run: about a third of resolving
    a sweep's jobs. (Hydra hands a job its config without the ``hydra`` node, so a run sees the same keys.)
    """
    try:
        return {key: _plain_child(cfg, key) for key in cfg if key != "hydra"}
    except OmegaConfBaseException as err:
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ConfigError(f"config: {str(cause).splitlines()[0]}") from None


def _plain_child(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` as ``to_container(cfg, resolve=True)`` gives it (public API only: a missing value stays ``???``)."""
    if OmegaConf.is_missing(cfg, key):
        return "???"
    value = cfg[key]  # interpolations resolved against the root, as to_container resolves them
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def resolve(cfg: DictConfig) -> RunSpec:
    """The run's :class:`RunSpec`, every check that needs neither data nor model done: nothing is created
    on disk for a configuration that cannot run."""
    problems = run_input_problems(cfg)
    if problems:
        raise ConfigError("invalid setting(s): " + "; ".join(problems))
    config = _plain(cfg)
    family, _ = check_task(config["task"])
    model = typed(ModelConfig, config["model"], "model")
    try:
        name, kind, defaults = resolve_kind(config["method"])
    except MethodConfigError as err:
        raise ConfigError(str(err)) from err
    method_cfg = config["method"]
    blocks = tuple(kind.hparams_blocks({**defaults, **method_cfg}))
    hp = task_hparams(config["task"], name, blocks)
    unknown = sorted(set(hp) - {f.name for f in dataclasses.fields(TrainSettings)} - settings_keys() - _MODEL_HPARAM_KEYS)
    if unknown:
        raise ConfigError(f"task.hparams for {name!r} has unknown key(s) {unknown}")
    level = check_task_model_budget(family, config["task"], model, config["budget"], kind)
    method = _method_settings(kind, defaults, method_cfg, hp, level)
    train = _train_settings(hp, config["trainer"])
    try:
        protocol = get_protocol(config.get("protocol"))
        protocol.check(config["task"])
    except ValueError as err:
        raise ConfigError(str(err)) from err
    spec = RunSpec(
        seed=int(config["seed"]), task=MappingProxyType(config["task"]), model=MappingProxyType(config["model"]),
        method=MappingProxyType(method), method_name=name, method_kind=kind.kind, hparams_blocks=blocks, train=train,
        cls_dropout=hp.get("cls_dropout"), budget=level, budget_name="none" if level is None else config["budget"]["name"],
        protocol=protocol, config=MappingProxyType(config), run_dir=Path(str(config["run_dir"])),
        sweep_name=str(config["sweep_name"]), output_root=str(config["output_root"]), force=bool(config.get("force")),
        logger=config.get("logger"), label=str(method_cfg.get("label") or name), overrides=_job_overrides(),
    )
    _check_method_knobs(spec, kind, defaults)
    return spec


def _job_overrides() -> tuple[str, ...] | None:
    """The command-line overrides of this job (what Hydra keeps in ``.hydra/overrides.yaml``); None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return tuple(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def run_dir_of(cfg: DictConfig) -> Path:
    """Where the run's outcome goes, even when the rest of its config cannot be resolved (a sweep's ledger)."""
    return Path(str(cfg.run_dir))


def _method_settings(kind: type[MethodHandle], defaults: Mapping[str, Any], method_cfg: Mapping[str, Any],
                     hp: Mapping[str, Any], level: BudgetLevel | None) -> dict[str, Any]:
    """The method's effective settings: the task's hparams for the kind's own keys (a shared ``default`` block
    may hold other kinds' keys) < the method config's set keys (a misspelt one is an error) < the level's knobs
    for keys still unset."""
    own = {f.name for f in dataclasses.fields(kind.settings_cls)}
    method = {**{k: v for k, v in hp.items() if k in own}, **{k: v for k, v in method_cfg.items() if v is not None}}
    if level is not None:
        try:
            method.update(level_settings(level, {**defaults, **method}, own, str(method_cfg.get("name"))))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        values = {**defaults, **{k: v for k, v in method.items() if k not in DESCRIPTIVE_KEYS}}
        try:
            knobs = kind.budget_knobs(level, values, None)
        except MethodConfigError as err:
            raise ConfigError(str(err)) from err
        for key, value in knobs.items():
            method.setdefault(key, value)
    return method


def _train_settings(hp: Mapping[str, Any], trainer_cfg: Mapping[str, Any]) -> TrainSettings:
    """Trainer defaults < the task's hparams < set ``trainer.*`` values; keys, types and ranges checked where the
    ranges are declared (the ``TrainSettings`` fields), and whether this device can run the precision."""
    keys = {f.name for f in dataclasses.fields(TrainSettings)}
    trainer = {k: v for k, v in hp.items() if k in keys}
    trainer.update({k: v for k, v in trainer_cfg.items() if v is not None})
    for key in ("lr", "batch_size"):
        if key not in trainer:
            raise ConfigError(f"trainer.{key} is not set by task.hparams or the command line (trainer.{key}=...)")
    unknown = sorted(set(trainer) - keys)
    if unknown:
        raise ConfigError(f"trainer has unknown key(s) {unknown}{nearest_key(unknown[0], keys, 'trainer')}; "
                          f"allowed: {sorted(keys)}")
    try:
        settings = TrainSettings(**trainer)
    except ValueError as err:  # TrainSettings' own check (precision)
        raise ConfigError(f"bad trainer config: {err}") from err
    problems = settings.range_problems()
    if problems:
        raise ConfigError("invalid trainer setting(s): " + "; ".join(problems))
    if settings.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("trainer.precision=fp16 cannot run on this device (CPU: no fp16 autocast, it would train in "
                          "fp32 and record fp16); use trainer.precision=bf16 or fp32, or run on a CUDA GPU")
    return settings


_ANY_T = 10**12  # a training length for checking method knobs before the data fixes T


def _check_method_knobs(spec: RunSpec, kind: type[MethodHandle], defaults: Mapping[str, Any]) -> None:
    """The method's knobs as the method will parse them (fractional ``tinit``/``tfinal`` are checked against T
    when the data gives it; a size knob the count rule sets from the model is checked when the model exists)."""
    try:
        values = settings_values(schedule_in_steps(spec.method, _ANY_T), defaults)
        if kind.size_knob is not None and kind.size_knob not in values and spec.budget is not None:
            checked_values(kind.settings_cls, values, f"method {spec.method_name!r} ({kind.kind})")
        else:
            kind.parse_settings(values, spec.method_name)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad method config: {err}") from err


def schedule_in_steps(method: Mapping[str, Any], total_steps: int) -> dict[str, Any]:
    """AdaLoRA's tinit/tfinal may be given as fractions of T (tiny and demo tasks)."""
    out = dict(method)
    for key in ("tinit", "tfinal"):
        value = out.get(key)
        if isinstance(value, float) and 0 < value < 1:
            out[key] = int(round(value * total_steps))
    if "tinit" in out and "tfinal" in out and out["tinit"] + out["tfinal"] >= total_steps:
        raise ConfigError(
            f"method.tinit + method.tfinal = {out['tinit']} + {out['tfinal']} must be < T = {total_steps} "
            "optimiser steps (AdaLoRA needs a budget-decrease phase); shorten them or train longer"
        )
    return out


def total_batches(examples: int, batch_size: int, world_size: int) -> int:
    """Batches per epoch on one rank: under DDP each rank steps through its shard (accelerate's even_batches)."""
    return math.ceil(math.ceil(examples / batch_size) / world_size)


# ---------------------------------------------------------------------------- identity
def config_identity(config: Mapping[str, Any], budget: str, blocks: tuple[str, ...]) -> dict[str, Any]:
    """The result-defining part of a resolved config, the task's hyperparameters merged as :func:`task_hparams`
    with ``blocks``.

    Trainer and method settings are the effective ones (``trainer.lr=null`` and the task's value given
    explicitly are one identity). ``budget`` is the effective budget, so the jobs a sweep maps to one directory
    share one identity. Null means "the default" and is dropped, and so are the default protocol's keys.
    """
    from experiments.identity import normalise_paths, set_values, without_null_defaults

    config = identity_view(config)
    trainer_cfg = config.get("trainer") or {}
    method_cfg = config.get("method") or {}
    merged = task_hparams(config.get("task") or {}, str(method_cfg.get("name")), blocks)
    hparams = {k: v for k, v in merged.items() if k not in NON_RESULT_TRAINER_KEYS}
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in NON_RESULT_KEYS:
            continue
        if key == "budget":  # a level on a target subset (targets: qv) is another run than its name alone says
            targets = value.get("targets", "all") if isinstance(value, Mapping) and budget != "none" else "all"
            out[key] = budget if targets == "all" else {"name": budget, "targets": targets}
        elif key == "task" and isinstance(value, Mapping):
            out[key] = {k: without_null_defaults(v) if k == "dataset" else v for k, v in value.items() if k != "hparams"}
        elif key == "model" and isinstance(value, Mapping):
            out[key] = without_null_defaults(value)
        elif key == "trainer" and isinstance(value, Mapping):
            both = {**{k: v for k, v in hparams.items() if k in trainer_cfg}, **set_values(value)}
            out[key] = without_null_defaults({k: v for k, v in both.items() if k not in NON_RESULT_TRAINER_KEYS})
        elif key == "method" and isinstance(value, Mapping):
            both = {**{k: v for k, v in hparams.items() if k in method_cfg}, **set_values(value)}
            out[key] = {k: v for k, v in both.items() if k not in NON_RESULT_METHOD_KEYS}
        else:
            out[key] = value
    rest = {k: v for k, v in hparams.items() if k not in trainer_cfg and k not in method_cfg}
    if rest:  # e.g. cls_dropout, a model setting the task file gives per method
        out["hparams"] = rest
    return normalise_paths(out)


def run_identity(config: Mapping[str, Any], budget: str) -> dict[str, Any]:
    """The identity of the user's own resolved config: the kind's ``hparams_blocks`` (a config on the command
    line may import its method module; a stored one goes through :func:`record_identity`)."""
    method = config.get("method") or {}
    try:
        _, kind, defaults = resolve_kind(method)
    except MethodConfigError:
        return config_identity(config, budget, stored_blocks(method))
    return config_identity(config, budget, tuple(kind.hparams_blocks({**defaults, **method})))


def record_identity(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A record's identity: stored (schema >= 2), else computed from its stored config alone (schema 1), with the
    blocks it was hashed with then (:func:`stored_blocks`). Imports nothing; no ``content`` (unknown)."""
    stored = stored_identity(record)
    if stored is not None:
        return stored
    config = record.get("config")
    budget = (record.get("run") or {}).get("budget")
    if not isinstance(config, Mapping) or budget is None:
        return None
    return config_identity(config, budget, stored_blocks(config.get("method") or {}))


def current_identity(config: Mapping[str, Any], budget: str) -> dict[str, Any]:
    """:func:`run_identity` plus ``content``: what the data files and hub revisions are *now* (a run about to
    start). A revision that resolved is identified by its commit alone: pinning the commit a branch pointed at
    keeps the runs' identity (docs/identity.md)."""
    return with_content(run_identity(config, budget), config)


def with_content(identity: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` plus ``content``; a resolved revision leaves the keys (its commit identifies it)."""
    from experiments.content import content_of

    content = identity[CONTENT_KEY] = content_of(config)
    for part, block in (("data", (identity.get("task") or {}).get("dataset")), ("model", identity.get("model"))):
        if isinstance(block, dict) and "revision" in content.get(part, {}):
            block.pop("revision", None)
    return identity


# ---------------------------------------------------------------------------- run directory
def dirname_overrides(overrides: list[str]) -> list[str]:
    """The overrides that name a sub-directory: not in the standard path, able to change the result
    (``protocol=paper``, the default, does not)."""
    keep = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        top, _, rest = key.partition(".")
        if key in PATH_KEYS or top in NON_RESULT_KEYS or override == f"protocol={DEFAULT_PROTOCOL}":
            continue
        if top == "trainer" and rest in NON_RESULT_TRAINER_KEYS:
            continue
        keep.append(override)
    return sorted(keep)


def override_dir() -> str:
    """``/k=v,k2=v2`` (the ``${override_dir:}`` resolver) for this job's result-changing overrides: a multirun over
    ``trainer.lr`` never shares one directory. Empty outside Hydra and for standard runs."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    keep = dirname_overrides(list(HydraConfig.get().overrides.task))
    return "/" + override_dirname(keep) if keep else ""


# ---------------------------------------------------------------------------- resolvers
def effective_budget(method: str | Mapping[str, Any], budget_name: str) -> str:
    """A method without a size knob (full FT, BitFit) always records under ``none``; ``method``: its config
    (``${effective_budget:${method},...}``) or a name. A sweep's methods × budgets then maps every budget of a
    fixed-size method to one run directory, and the repeats find it finished and skip."""
    if isinstance(method, DictConfig):
        method = OmegaConf.to_container(method, resolve=True)
    try:
        sized = has_size_knob(method)
    except MethodConfigError as err:
        raise ConfigError(str(err)) from err
    return budget_name if sized else "none"


def register_resolvers() -> None:
    """``${project_root:}`` points configs at shipped fixtures; ``${effective_budget:m,b}`` see above;
    ``${override_dir:}`` experiments.identity; ``${selected_lr:task,method,budget,fallback}`` the lr chosen
    by ``make lr-search``."""
    for name, fn in (("project_root", lambda: str(PROJECT_ROOT)), ("effective_budget", effective_budget),
                     ("override_dir", override_dir), ("selected_lr", selected_lr)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
