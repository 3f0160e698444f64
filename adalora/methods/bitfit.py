"""BitFit (Ben Zaken et al.): every bias term of the backbone trains, plus the task head."""

from __future__ import annotations

from adalora.methods.base import MethodHandle
from adalora.methods.registry import register_kind, register_variant
from adalora.methods.settings import MethodConfigError


@register_kind
class BitFit(MethodHandle):
    """No knobs, no size (budget ``none``). Its biases are plain parameters of the model, so the
    merged export is the trained model itself."""

    kind = "bitfit"
    export_formats = ("merged",)

    def trains(self, param_name: str) -> bool:
        return param_name.endswith(".bias")

    def mark_trainable(self) -> None:
        """As the base class; a backbone without bias terms (T5, Llama, Gemma) is refused: BitFit would train
        nothing there but the task head."""
        super().mark_trainable()
        if not any(self.trains(name) for name, _ in self.model.named_parameters()):
            raise MethodConfigError(f"method {self.name!r}: this {self.arch.name} model has no bias terms, so BitFit "
                                    "would train nothing but the task head; use another method for this backbone")


register_variant("bitfit", "bitfit")  # the paper's method: the kind as itself
