"""Every compared method behind one contract: ``apply_method(model, cfg) -> MethodHandle``.

One module per kind (PEFT's ``tuners/`` layout: settings + layers + the handle):
``full_ft``, ``bitfit``, ``lora``, ``adapter``, ``adalora``, and ``peft`` (a PEFT config; peft is
imported only when such a method is applied). The contract is
:class:`~adalora.methods.base.MethodHandle` (docs/methods.md, field by field); kinds are
registered in :mod:`adalora.methods.registry`, from this package, a config's ``module:`` or the
``adalora.methods`` entry-point group. Ablation variants are configs of these kinds
(``register_variant``), never forked code paths.
"""

from adalora.methods import adalora, adapter, bitfit, full_ft, lora, peft_kind  # noqa: F401 - register the built-in kinds
from adalora.methods.adalora import AdaLoRA, AdaLoRASettings
from adalora.methods.adapter import Adapter, AdapterSettings
from adalora.methods.base import DESCRIPTIVE_KEYS, ExportError, MethodHandle, NoSettings
from adalora.methods.bitfit import BitFit
from adalora.methods.full_ft import FullFineTuning
from adalora.methods.lora import LoRA, LoRASettings
from adalora.methods.registry import (
    ENTRY_POINT_GROUP,
    METHODS,
    apply_method,
    get_kind,
    has_size_knob,
    register_kind,
    register_variant,
    registered_kinds,
    resolve_kind,
)
from adalora.methods.settings import MethodConfigError, require

__all__ = [
    "DESCRIPTIVE_KEYS", "ENTRY_POINT_GROUP", "METHODS", "AdaLoRA", "AdaLoRASettings", "Adapter", "AdapterSettings",
    "BitFit", "ExportError", "FullFineTuning", "LoRA", "LoRASettings", "MethodConfigError", "MethodHandle",
    "NoSettings", "apply_method", "get_kind", "has_size_knob", "register_kind", "register_variant",
    "registered_kinds", "require", "resolve_kind",
]
