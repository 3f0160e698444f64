"""AdaLoRA (Zhang et al., ICLR 2023) and its baselines behind one interface.

Public API::

    from adalora import SVDLinear, LoRALinear, RankAllocator, orthogonal_regularization, apply_method

The names below are imported when first used (PEP 562), not when the package is: ``adalora.trust``
and ``adalora.atomic`` are plain Python that the analysis imports to read records, and importing
them must not pull in torch and transformers (seconds) with the layers and methods.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name -> the module that defines it.
_PUBLIC = {
    "RankAllocator": "adalora.allocator",
    "BUDGET_LEVELS": "adalora.budget",
    "count_parameters": "adalora.budget",
    "get_budget": "adalora.budget",
    "AdaptedOutput": "adalora.layers",
    "BottleneckAdapter": "adalora.layers",
    "LoRALinear": "adalora.layers",
    "SVDLinear": "adalora.layers",
    "METHODS": "adalora.methods",
    "MethodHandle": "adalora.methods",
    "apply_method": "adalora.methods",
    "orthogonal_regularization": "adalora.regularizers",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then cached as a plain attribute)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'adalora' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
