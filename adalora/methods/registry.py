"""Where kinds and their variants are registered, and ``apply_method``, the one entry point.

A method config names a *method* (``name``) and, optionally, its *kind*::

    {"name": "lora", "r": 8}                                 # a kind used as itself
    {"name": "lora_qk", "r": 2}                              # a registered variant of the lora kind
    {"name": "my_lora", "kind": "lora", "r": 4, "alpha": 8}  # a new name for a configured kind
    {"name": "mine", "module": "my_methods", "width": 8}     # a kind in the user's own module

Kinds come from three places, none of which needs an edit of the suite: the built-in modules of
this package, a config's ``module:`` (imported before the lookup, so a file on ``PYTHONPATH``
that calls :func:`register_kind` registers its kind), and installed packages exposing an entry
point in the group ``adalora.methods`` (loaded the first time a name is not found).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

from adalora.architectures import architecture_of
from adalora.budget import BudgetLevel, budget_target, get_budget, level_settings
from adalora.methods.base import DESCRIPTIVE_KEYS, MethodHandle
from adalora.methods.settings import MethodConfigError
from adalora.plugins import entry_point_objects, import_config_module

ENTRY_POINT_GROUP = "adalora.methods"

_KINDS: dict[str, type[MethodHandle]] = {}
# Method name -> (kind, the defaults that define the variant): the suite's methods (each with a
# conf/method/<name>.yaml). A registered kind's own name needs no entry.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {}

K = TypeVar("K", bound=type[MethodHandle])


def register_kind(cls: K) -> K:
    """Class decorator: register a :class:`MethodHandle` subclass under ``cls.kind`` (a config may name
    it as its method: ``{"name": <kind>}``). Registering the same class twice is harmless; another class under a taken name is
    an error."""
    if not (isinstance(cls, type) and issubclass(cls, MethodHandle)) or not cls.kind:
        raise TypeError(f"{cls!r} must be a MethodHandle subclass with a non-empty `kind`")
    known = _KINDS.get(cls.kind)
    if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"method kind {cls.kind!r} is already registered by {known.__module__}.{known.__qualname__}")
    _KINDS[cls.kind] = cls
    return cls


def register_variant(name: str, kind: str, **defaults: Any) -> None:
    """Register method ``name`` as ``kind`` with ``defaults`` (an ablation: a config, not code)."""
    if kind not in _KINDS:
        raise ValueError(f"variant {name!r}: kind {kind!r} is not registered; registered: {registered_kinds()}")
    METHODS[name] = (kind, dict(defaults))


def registered_kinds() -> list[str]:
    """Names of the registered kinds (entry points included), sorted."""
    _load_entry_points()
    return sorted(_KINDS)


def _load_entry_points() -> None:
    """The ``adalora.methods`` entry points; one that gives a kind class registers it."""
    for loaded in entry_point_objects(ENTRY_POINT_GROUP):
        if isinstance(loaded, type) and issubclass(loaded, MethodHandle):
            register_kind(loaded)


def get_kind(kind: str) -> type[MethodHandle]:
    """The registered kind class; an unknown name is an error listing the registered ones."""
    if kind not in _KINDS:
        _load_entry_points()
    if kind not in _KINDS:
        raise MethodConfigError(f"method kind {kind!r} is not registered; registered kinds: {registered_kinds()} "
                                f"(a kind of your own: method.module=<your module>, or an entry point in group "
                                f"{ENTRY_POINT_GROUP!r})")
    return _KINDS[kind]


def import_method_module(module: str | None) -> None:
    """Import a config's ``module:`` so that the kinds it registers are known."""
    import_config_module(module, "method.module", MethodConfigError)


def resolve_kind(cfg: Mapping[str, Any]) -> tuple[str, type[MethodHandle], dict[str, Any]]:
    """(method name, kind class, the variant's defaults) of a method config."""
    name = cfg.get("name")
    if not name:
        raise MethodConfigError(f"method.name is required (one of {sorted(METHODS)}, or a name of your own with "
                                "method.kind)")
    import_method_module(cfg.get("module"))
    if cfg.get("kind") is None and name not in METHODS and name not in _KINDS:
        _load_entry_points()
    variant_kind, defaults = METHODS.get(name, (name if name in _KINDS else None, {}))
    kind = cfg.get("kind") or variant_kind
    if kind is None:
        raise MethodConfigError(f"method.name {name!r} is not registered and the config sets no method.kind; "
                                f"registered methods: {sorted(METHODS)}; registered kinds: {registered_kinds()}")
    cls = get_kind(kind)
    return name, cls, (defaults if variant_kind == kind else {})


def settings_values(cfg: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The variant's defaults under the config's set (non-null) knobs."""
    return {**defaults, **{k: v for k, v in cfg.items() if k not in DESCRIPTIVE_KEYS and v is not None}}


def has_size_knob(cfg: Mapping[str, Any] | str) -> bool:
    """Whether a method (a config, or a registered method name) is sized by a budget level."""
    return resolve_kind({"name": cfg} if isinstance(cfg, str) else cfg)[1].has_size_knob()


def apply_method(model: nn.Module, cfg: Mapping[str, Any], budget: BudgetLevel | str | None = None) -> MethodHandle:
    """Insert the method's layers into ``model`` in place and freeze what it does not train.

    ``budget`` (a level or its name, e.g. ``"glue_0.3m"``): knobs the config leaves unset are taken
    from it by the kind's budget rule, and the handle records the level's parameter target. Call
    after seeding: initialisations draw random numbers.
    """
    name, cls, defaults = resolve_kind(cfg)
    values = settings_values(cfg, defaults)
    target = None
    if budget is not None and cls.has_size_knob():
        level = get_budget(budget) if isinstance(budget, str) else budget
        try:
            values.update(level_settings(level, values, (f.name for f in dataclasses.fields(cls.settings_cls)), name))
        except ValueError as err:
            raise MethodConfigError(str(err)) from None
        for key, value in cls.budget_knobs(level, values, model).items():
            values.setdefault(key, value)
        target = budget_target(model, level)
    settings = cls.parse_settings(values, name)
    handle = cls(name, settings, model, architecture_of(model), module=cfg.get("module"))
    handle.insert_layers()
    handle.mark_trainable()
    handle.budget_target = target
    handle.trainable_paper_start = handle.parameter_counts()["trainable_paper"]
    return handle


def settings_keys() -> set[str]:
    """Every settings field of every registered kind (the method keys a task's hparams may set)."""
    return {f.name for cls in _KINDS.values() for f in dataclasses.fields(cls.settings_cls)}
