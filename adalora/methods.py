"""One entry point for every compared method: ``apply_method(model, cfg) -> MethodHandle``.

A method config is a mapping with ``name`` (the label used in results) and the knobs of
its *kind*. Ablation variants are configs of the same kinds, never forked code paths::

    {"name": "lora", "r": 8, "alpha": 16}
    {"name": "adalora", "init_r": 12, "target_r": 8, "alpha": 16, "tinit": 200, "tfinal": 500,
     "deltaT": 10, "orth_reg_weight": 0.1}
    {"name": "svd_lora", "kind": "adalora", "allocate": False, "init_r": 2, "target_r": 2, ...}

Unknown keys are errors that name the key, so a typo never silently trains the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from adalora.allocator import IMPORTANCE_METRICS, RankAllocator
from adalora.architectures import (
    ENCODER_WEIGHT_TYPES,
    Architecture,
    architecture_of,
    find_targets,
    replace_module,
)
from adalora.budget import count_parameters
from adalora.fused import BatchedProducts
from adalora.layers import ADAPTER_UP_INITS, AdaptedOutput, LoRALinear, SVDLinear
from adalora.regularizers import ORTH_REG_FORMS, OrthogonalPenalty


@dataclass
class LoRASettings:
    """LoRA; ``orth_reg_weight`` > 0 adds a penalty on A and B (Table 5's LoRA_regu).

    ``budget_targets``: when set, ``r`` is the rank LoRA would have on *those* matrices, and the
    layers on ``targets`` get the rank with the same parameter count,
    ``round(r · Σ_budget_targets (d_in + d_out) / Σ_targets (d_in + d_out))`` (Table 14's LoRA on
    W_q, W_k at the 0.3M of LoRA r=2 on all six: r = 9 on DeBERTaV3-base).
    """

    r: int
    alpha: float = 16.0
    targets: tuple[str, ...] = ENCODER_WEIGHT_TYPES
    orth_reg_weight: float = 0.0
    orth_reg: str = "frd"
    budget_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.orth_reg_weight < 0:
            raise ValueError(f"method.orth_reg_weight must be >= 0, got {self.orth_reg_weight}")
        if self.orth_reg not in ORTH_REG_FORMS:
            raise ValueError(f"method.orth_reg must be one of {ORTH_REG_FORMS}, got {self.orth_reg!r}")


@dataclass
class AdaLoRASettings:
    init_r: int
    target_r: int
    tinit: int
    tfinal: int
    deltaT: int
    alpha: float = 16.0
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.1
    orth_reg: str = "official"
    importance: str = "sensitivity_uncertainty"
    allocate: bool = True
    train_lambda: bool = True  # False: LoRA doublets behind a fixed 0/1 gate (prune_lora)
    targets: tuple[str, ...] = ENCODER_WEIGHT_TYPES
    # PEFT's exact roundings (True) or the fused forms (False); None: exact on a CPU, fused on a
    # GPU (adalora.layers.exact_rounding_on). Same mathematics, rounding differs.
    exact_rounding: bool | None = None

    def __post_init__(self) -> None:
        if self.orth_reg_weight < 0:
            raise ValueError(f"method.orth_reg_weight must be >= 0, got {self.orth_reg_weight}")
        if self.orth_reg not in ORTH_REG_FORMS:
            raise ValueError(f"method.orth_reg must be one of {ORTH_REG_FORMS}, got {self.orth_reg!r}")
        if self.importance not in IMPORTANCE_METRICS:
            raise ValueError(f"method.importance must be one of {IMPORTANCE_METRICS}, got {self.importance!r}")
        if self.target_r > self.init_r:
            raise ValueError(f"method.target_r ({self.target_r}) must be <= method.init_r ({self.init_r})")
        if self.exact_rounding not in (None, True, False):
            raise ValueError(f"method.exact_rounding must be true, false or null, got {self.exact_rounding!r}")
        if not self.train_lambda and self.importance == "magnitude":
            raise ValueError("method.importance=magnitude ranks by |λ| and needs method.train_lambda=true")


ADAPTER_DROPOUT_POSITIONS = ("after", "before")


@dataclass
class AdapterSettings:
    """Bottleneck adapters after W_o and W_f2 (Houlsby) or W_f2 only (Pfeiffer).

    Defaults follow the official fork (docs/fidelity.md): ``dropout_position`` ``after`` puts
    the adapter after the block's hidden dropout, ``up_init`` ``normal`` draws the up-projection
    from N(0, 0.02). ``dropout_position: null`` means ``after`` where the block has a dropout
    module (DeBERTa, BERT) and ``before`` where its dropout is functional (BART: the fork has no
    BART adapters and the paper runs none on NLG). ``before`` + ``zero`` is the earlier behaviour.
    """

    bottleneck: int
    placement: str = "houlsby"
    activation: str = "swish"
    dropout_position: str | None = None
    up_init: str = "normal"

    def __post_init__(self) -> None:
        if self.placement not in ("houlsby", "pfeiffer"):
            raise ValueError(f"method.placement must be 'houlsby' or 'pfeiffer', got {self.placement!r}")
        if self.dropout_position not in (None, *ADAPTER_DROPOUT_POSITIONS):
            raise ValueError(
                f"method.dropout_position must be one of {ADAPTER_DROPOUT_POSITIONS} or null, got {self.dropout_position!r}"
            )
        if self.up_init not in ADAPTER_UP_INITS:
            raise ValueError(f"method.up_init must be one of {ADAPTER_UP_INITS}, got {self.up_init!r}")


@dataclass
class NoSettings:
    """full_ft and bitfit have no knobs."""


_KIND_SETTINGS: dict[str, type] = {
    "full_ft": NoSettings,
    "bitfit": NoSettings,
    "lora": LoRASettings,
    "adapter": AdapterSettings,
    "adalora": AdaLoRASettings,
}

# Method name -> (kind, defaults that define the variant).
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "full_ft": ("full_ft", {}),
    "bitfit": ("bitfit", {}),
    "lora": ("lora", {}),
    "lora_qk": ("lora", {"targets": ("W_q", "W_k"), "budget_targets": ENCODER_WEIGHT_TYPES}),
    "lora_regu": ("lora", {"orth_reg_weight": 0.1, "orth_reg": "frd"}),
    "adapter_houlsby": ("adapter", {"placement": "houlsby", "activation": "swish"}),
    "adapter_pfeiffer": ("adapter", {"placement": "pfeiffer", "activation": "relu"}),
    "adalora": ("adalora", {}),
    "adalora_sensitivity": ("adalora", {"importance": "sensitivity"}),
    "adalora_magnitude": ("adalora", {"importance": "magnitude"}),
    "adalora_no_orth": ("adalora", {"orth_reg_weight": 0.0}),
    "svd_lora": ("adalora", {"allocate": False}),
    "prune_lora": ("adalora", {"train_lambda": False, "orth_reg_weight": 0.0}),
}

# Keys a Hydra method config may carry that describe it rather than configure the layers.
_DESCRIPTIVE_KEYS = {"name", "kind", "description"}


def parse_method_config(cfg: Mapping[str, Any]) -> tuple[str, str, Any]:
    """(name, kind, settings dataclass) from a config mapping, with key-naming errors."""
    cfg = dict(cfg)
    name = cfg.get("name")
    if name is None:
        raise ValueError("method.name is required (one of " + ", ".join(sorted(METHODS)) + ")")
    kind, defaults = METHODS.get(name, (cfg.get("kind"), {}))
    kind = cfg.get("kind", kind)
    if kind not in _KIND_SETTINGS:
        raise ValueError(
            f"method.name {name!r} is not registered and method.kind {kind!r} is not one of {sorted(_KIND_SETTINGS)}"
        )
    settings_cls = _KIND_SETTINGS[kind]
    allowed = {f.name for f in fields(settings_cls)}
    knobs = {k: v for k, v in cfg.items() if k not in _DESCRIPTIVE_KEYS and v is not None}
    unknown = sorted(set(knobs) - allowed)
    if unknown:
        raise ValueError(f"method {name!r} ({kind}) has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    merged = {**defaults, **knobs}
    for key in ("targets", "budget_targets"):
        if key in merged:
            merged[key] = tuple(merged[key])
    try:
        settings = settings_cls(**merged)
    except TypeError as err:
        missing = sorted(f.name for f in fields(settings_cls) if f.name not in merged and f.default is MISSING)
        raise ValueError(f"method {name!r} ({kind}) is missing required key(s) {missing}") from err
    return name, kind, settings


@dataclass
class MethodHandle:
    """What the training loop needs from a method after it has been applied."""

    name: str
    kind: str
    settings: Any
    model: nn.Module
    arch: Architecture
    adapted: dict[str, nn.Module] = field(default_factory=dict)
    weight_types: dict[str, tuple[int, str]] = field(default_factory=dict)
    allocator: RankAllocator | None = None
    _penalty: OrthogonalPenalty | None = field(default=None, repr=False)

    @property
    def svd_modules(self) -> dict[str, SVDLinear]:
        return {n: m for n, m in self.adapted.items() if isinstance(m, SVDLinear)}

    def set_total_steps(self, total_steps: int) -> None:
        """Tell the allocator T once the data loader is built (validates the schedule)."""
        if self.allocator is not None:
            self.allocator.set_total_step(total_steps)

    def regularization_loss(self) -> torch.Tensor | None:
        """γ·R(P, Q) to add to the task loss, or None when the method has no penalty."""
        weight = getattr(self.settings, "orth_reg_weight", 0.0)
        if self.kind not in ("adalora", "lora") or weight == 0.0:
            return None
        if self._penalty is None:
            mods = list(self.adapted.values())
            self._penalty = OrthogonalPenalty([m.lora_A for m in mods], [m.lora_B for m in mods],
                                              self.settings.orth_reg, getattr(self.settings, "exact_rounding", None))
        return weight * self._penalty()

    def step(self, global_step: int) -> int | None:
        """Run the allocator after ``optimizer.step()``; returns b(t) or None."""
        if self.allocator is None:
            return None
        return self.allocator.update_and_mask(global_step)

    def rank_pattern(self) -> dict[str, int] | None:
        """Kept triplets per SVD matrix (init_r everywhere when nothing is allocated)."""
        if self.kind != "adalora":
            return None
        if self.allocator is None:
            return {n: m.r for n, m in self.svd_modules.items()}
        return self.allocator.rank_pattern()

    def parameter_counts(self) -> dict[str, int]:
        counts = count_parameters(
            self.model,
            self.arch.head_prefixes,
            adalora_ranks=self.rank_pattern(),
            adalora_modules=self.svd_modules or None,
        )
        if self.kind == "full_ft":
            counts["trainable_paper"] = counts["total"]  # the paper's "184M" is the whole model
        counts["adapted_matrices"] = len(self.adapted)
        return counts

    def state_dict(self) -> dict[str, Any]:
        return {} if self.allocator is None else {"allocator": self.allocator.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.allocator is not None:
            self.allocator.load_state_dict(state["allocator"])


def _wrap_targets(model: nn.Module, arch: Architecture, targets: tuple[str, ...], build) -> tuple[dict, dict]:
    found = find_targets(model, arch, targets)
    adapted = {}
    for name in found:
        layer = build(model.get_submodule(name))
        replace_module(model, name, layer)
        adapted[name] = layer
    return adapted, found


def _wrap_adapters(model: nn.Module, arch: Architecture, targets: tuple[str, ...],
                   settings: AdapterSettings) -> tuple[dict, dict]:
    """Wrap each output projection; with ``after``, move the block's dropout inside the wrapper."""
    found = find_targets(model, arch, targets)
    adapted = {}
    for name in found:
        parent_name, _, _ = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        block_dropout = getattr(parent, "dropout", None)
        has_module = isinstance(block_dropout, nn.Dropout)
        position = settings.dropout_position or ("after" if has_module else "before")
        if position == "after" and not has_module:
            raise ValueError(
                f"method.dropout_position=after needs an nn.Dropout module beside {name} (its block applies "
                f"dropout functionally); use method.dropout_position=before for {arch.name}"
            )
        layer = AdaptedOutput(model.get_submodule(name), settings.bottleneck, settings.activation, settings.up_init,
                              dropout=block_dropout if position == "after" else None)
        replace_module(model, name, layer)
        if position == "after":
            parent.dropout = nn.Identity()  # applied once, inside the wrapper, before the adapter
        adapted[name] = layer
    return adapted, found


def _budget_matched_rank(model: nn.Module, arch: Architecture, settings: LoRASettings) -> int:
    """The rank on ``targets`` with the parameter count of rank ``r`` on ``budget_targets``."""
    def width(targets: tuple[str, ...]) -> int:
        found = find_targets(model, arch, targets)
        return sum(model.get_submodule(n).in_features + model.get_submodule(n).out_features for n in found)

    return max(1, round(settings.r * width(settings.budget_targets) / width(settings.targets)))


def _mark_trainable(model: nn.Module, arch: Architecture, kind: str) -> None:
    """Freeze the backbone; train the method's parameters and, always, the task head."""
    for name, param in model.named_parameters():
        if kind == "full_ft":
            trainable = True
        elif name.startswith(arch.head_prefixes):
            trainable = True
        elif kind == "bitfit":
            trainable = name.endswith(".bias")
        else:
            trainable = ".lora_" in name or ".adapter." in name
        param.requires_grad_(trainable)
    for module in model.modules():  # fixed gates of LoRA doublets (SVDLinear(train_lambda=False))
        if isinstance(module, SVDLinear) and not module.train_lambda:
            module.lora_E.requires_grad_(False)


def apply_method(model: nn.Module, cfg: Mapping[str, Any]) -> MethodHandle:
    """Insert the method's layers into ``model`` in place and freeze what it does not train.

    Call after seeding: the adapter initialisation draws random numbers.
    """
    name, kind, settings = parse_method_config(cfg)
    arch = architecture_of(model)
    handle = MethodHandle(name=name, kind=kind, settings=settings, model=model, arch=arch)
    if kind == "lora":
        r = _budget_matched_rank(model, arch, settings) if settings.budget_targets else settings.r
        handle.adapted, handle.weight_types = _wrap_targets(
            model, arch, settings.targets, lambda lin: LoRALinear(lin, r, settings.alpha)
        )
    elif kind == "adalora":
        handle.adapted, handle.weight_types = _wrap_targets(
            model, arch, settings.targets,
            lambda lin: SVDLinear(lin, settings.init_r, settings.alpha, train_lambda=settings.train_lambda,
                                  exact_rounding=settings.exact_rounding),
        )
        BatchedProducts(list(handle.svd_modules.values())).attach(model)
        if settings.allocate:
            handle.allocator = RankAllocator(
                handle.adapted,
                target_r=settings.target_r,
                init_warmup=settings.tinit,
                final_warmup=settings.tfinal,
                mask_interval=settings.deltaT,
                beta1=settings.beta1,
                beta2=settings.beta2,
                importance=settings.importance,
            )
    elif kind == "adapter":
        targets = ("W_o", "W_f2") if settings.placement == "houlsby" else ("W_f2",)
        handle.adapted, handle.weight_types = _wrap_adapters(model, arch, targets, settings)
    _mark_trainable(model, arch, kind)
    return handle
