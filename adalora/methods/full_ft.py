"""Full fine-tuning: every parameter trains; counted as the whole model (the paper's "184M")."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adalora.budget import count_parameters
from adalora.methods.base import MethodHandle
from adalora.methods.registry import register_kind, register_variant


@register_kind
class FullFineTuning(MethodHandle):
    """No knobs, no size: records under budget ``none``; its weights are the whole model, so a run
    keeps them only with ``trainer.save_model=true``."""

    kind = "full_ft"
    saves_weights_by_default = False
    export_formats = ("merged",)

    def trains(self, param_name: str) -> bool:
        return True

    def parameter_counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = count_parameters(self.model, self.arch.head_prefixes)
        counts["trainable_paper"] = counts["total"]  # the paper's "184M" is the whole model
        return self._with_budget(counts)

    def trained_state(self, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The whole model: every parameter (tied weights once) and every persistent buffer."""
        model = self.model if model is None else model
        state = super().trained_state(model)
        non_persistent = {f"{m}.{b}".lstrip(".") for m, mod in model.named_modules()
                          for b in mod._non_persistent_buffers_set}
        state.update({n: b.detach().to("cpu", copy=True) for n, b in model.named_buffers() if n not in non_persistent})
        return state


register_variant("full_ft", "full_ft")  # the paper's method: the kind as itself
