"""AdaLoRA (Zhang et al., ICLR 2023) and its baselines behind one interface.

Public API::

    from adalora import SVDLinear, LoRALinear, RankAllocator, orthogonal_regularization, apply_method
"""

from adalora.allocator import RankAllocator
from adalora.budget import BUDGET_LEVELS, count_parameters, get_budget
from adalora.layers import AdaptedOutput, BottleneckAdapter, LoRALinear, SVDLinear
from adalora.methods import METHODS, MethodHandle, apply_method
from adalora.regularizers import orthogonal_regularization

__all__ = [
    "BUDGET_LEVELS",
    "METHODS",
    "AdaptedOutput",
    "BottleneckAdapter",
    "LoRALinear",
    "MethodHandle",
    "RankAllocator",
    "SVDLinear",
    "apply_method",
    "count_parameters",
    "get_budget",
    "orthogonal_regularization",
]
