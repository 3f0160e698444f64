"""BitFit (Ben Zaken et al.): every bias term of the backbone trains, plus the task head."""

from __future__ import annotations

from adalora.methods.base import MethodHandle
from adalora.methods.registry import register_kind, register_variant


@register_kind
class BitFit(MethodHandle):
    """No knobs, no size (budget ``none``). Its biases are plain parameters of the model, so the
    merged export is the trained model itself."""

    kind = "bitfit"
    export_formats = ("merged",)

    def trains(self, param_name: str) -> bool:
        return param_name.endswith(".bias")


register_variant("bitfit", "bitfit")  # the paper's method: the kind as itself
