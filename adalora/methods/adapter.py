"""Bottleneck adapters: Houlsby (after W_o and W_f2) and Pfeiffer (after W_f2 only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from adalora.architectures import find_targets
from adalora.budget import BudgetLevel
from adalora.layers import ADAPTER_UP_INITS, AdaptedOutput
from adalora.methods.base import MethodHandle
from adalora.methods.registry import register_kind, register_variant
from adalora.methods.settings import MethodConfigError, require

ADAPTER_DROPOUT_POSITIONS = ("after", "before")
PLACEMENTS = {"houlsby": ("W_o", "W_f2"), "pfeiffer": ("W_f2",)}


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
        require(self.bottleneck >= 1, "bottleneck", "a positive width", self.bottleneck)
        require(self.placement in PLACEMENTS, "placement", "'houlsby' or 'pfeiffer'", self.placement)
        require(self.dropout_position in (None, *ADAPTER_DROPOUT_POSITIONS), "dropout_position",
                f"one of {ADAPTER_DROPOUT_POSITIONS} or null", self.dropout_position)
        require(self.up_init in ADAPTER_UP_INITS, "up_init", f"one of {ADAPTER_UP_INITS}", self.up_init)


@register_kind
class Adapter(MethodHandle):
    """The size knob is ``bottleneck``; a budget level sets the paper's Table 7 widths (Houlsby and
    Pfeiffer columns), which docs/methods.md compares with the count rule. The adapters add layers
    that cannot be merged into the base weights and have no PEFT form: no export."""

    kind = "adapter"
    settings_cls = AdapterSettings
    size_knob = "bottleneck"

    @classmethod
    def budget_knobs(cls, level: BudgetLevel, values: Mapping[str, Any], model: nn.Module | None) -> dict[str, Any]:
        placement = values.get("placement", "houlsby")
        size = level.houlsby_bottleneck if placement == "houlsby" else level.pfeiffer_bottleneck
        if size is None:
            raise MethodConfigError(f"budget={level.name} defines no adapter size (the paper runs no adapters "
                                    f"on {level.family}); set method.bottleneck=...")
        return {"bottleneck": size}

    def insert_layers(self) -> None:
        """Wrap each output projection; with ``after``, move the block's dropout inside the wrapper."""
        s = self.settings
        found = find_targets(self.model, self.arch, PLACEMENTS[s.placement])
        self.weight_types.update(found)
        for name in found:
            parent_name, _, _ = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            block_dropout = getattr(parent, self.arch.output_dropout, None) if self.arch.output_dropout else None
            has_module = isinstance(block_dropout, nn.Dropout)
            position = s.dropout_position or ("after" if has_module else "before")
            if position == "after" and not has_module:
                raise MethodConfigError(
                    f"method.dropout_position=after needs an nn.Dropout module beside {name} (its block applies "
                    f"dropout functionally); use method.dropout_position=before for {self.arch.name}"
                )
            self.replace_layer(name, AdaptedOutput(self.model.get_submodule(name), s.bottleneck, s.activation, s.up_init,
                                                   dropout=block_dropout if position == "after" else None))
            if position == "after":
                parent.dropout = nn.Identity()  # applied once, inside the wrapper, before the adapter


register_variant("adapter_houlsby", "adapter", placement="houlsby", activation="swish")
register_variant("adapter_pfeiffer", "adapter", placement="pfeiffer", activation="relu")
