"""AdaLoRA inside ``transformers.Trainer``: the schedule, the allocator, the penalty and resume.

A hand-written AdaLoRA loop does, per optimiser step (DESIGN §3): backward(task loss + γ·R) → clip
→ optimizer.step → scheduler.step → allocator.step(global_step) → zero_grad, with T (the total
optimiser steps) set before training and the allocator's state saved with every checkpoint. The
Trainer runs the loop, so :class:`AdaLoRACallback` hooks each of these in:

* ``on_train_begin``: T = ``state.max_steps`` (gradient accumulation and devices included); when the
  Trainer resumed (``state.global_step > 0``), the allocator's state from the checkpoint folder.
* ``on_optimizer_step``: the allocator, with ``state.global_step`` (optimiser steps from 0). It is
  the Trainer's only hook between ``optimizer.step()`` and ``model.zero_grad()`` (``on_step_end``
  comes after ``zero_grad``, too late: the importance scores read ``p.grad``). The scheduler steps
  after it; the allocator does not read the learning rate, so the order of those two is immaterial.
* ``on_log``: the budget b(t) and the kept ranks (sum, min, max) as ``adalora/*`` scalars.
* ``on_save``: ``adalora_state.pt`` (EMAs, masks, rank history) and ``adalora_rank_pattern.json``
  into the checkpoint folder, so ``trainer.train(resume_from_checkpoint=...)`` continues exactly
  (for PEFT, ``on_step_end`` of a saving step also keeps PEFT from saving cut-down matrices).

A callback cannot change the loss. For this library's methods γ·R enters through
:class:`AdaLoRALossMixin` (``class MyTrainer(AdaLoRALossMixin, Trainer)``, or :class:`AdaLoRATrainer`):
its ``compute_loss`` adds the handle's penalty to the Trainer's own loss, keeping the Trainer's
loss (``compute_loss_func`` would hand the loss to the user: it receives the outputs *without* the
model's loss). PEFT's ``AdaLoraModel`` adds γ·R in its own forward, so PEFT needs only the callback,
which calls ``update_and_allocate(global_step)`` at the right point: the call PEFT users forget.

This is the only module of ``adalora`` that imports ``transformers`` (and it does not import PEFT:
a PEFT model is recognised by its ``update_and_allocate``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as err:  # the method library itself needs only torch
    raise ImportError("adalora.integrations.hf needs transformers>=4.46: pip install 'adalora[experiments]'") from err

STATE_FILE = "adalora_state.pt"
PATTERN_FILE = "adalora_rank_pattern.json"


class _HandleDriver:
    """This library's ``MethodHandle`` (``adalora.apply_method``): every call is the handle's own."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def set_total_steps(self, total_steps: int) -> None:
        self.handle.set_total_steps(total_steps)

    def step(self, global_step: int) -> int | None:
        return self.handle.step(global_step)

    def penalty(self) -> torch.Tensor:
        return self.handle.regularization_loss()

    def rank_pattern(self) -> dict[str, int] | None:
        return self.handle.rank_pattern()

    def state_dict(self) -> dict[str, Any]:
        return self.handle.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.handle.load_state_dict(state)

    def before_checkpoint(self) -> None:
        """Nothing to do: the Trainer saves the model's full state dict."""

    def after_checkpoint(self) -> None:
        """Nothing to undo."""


class _PeftDriver:
    """PEFT's ``AdaLoraModel`` (``get_peft_model(model, AdaLoraConfig(...)).base_model``)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._hidden: tuple[Any] | None = None  # the rank pattern while a checkpoint is written

    @property
    def config(self) -> Any:
        return self.model.peft_config[self.model.trainable_adapter_name]

    def set_total_steps(self, total_steps: int) -> None:
        """T from the Trainer; a missing or different ``AdaLoraConfig.total_step`` is the usual
        mistake (the cubic schedule then ends early or never), so it is replaced, with a warning."""
        configured = self.config.total_step
        if configured != total_steps:
            warnings.warn(
                f"AdaLoraConfig.total_step is {configured!r} but the Trainer runs {total_steps} optimiser steps "
                f"(max_steps); AdaLoRACallback sets total_step={total_steps} so the budget schedule ends with "
                "training. Set total_step to the Trainer's max_steps to silence this.", stacklevel=3)
        if total_steps <= self.config.tinit + self.config.tfinal:
            raise ValueError(f"the Trainer's max_steps={total_steps} must exceed AdaLoraConfig tinit + tfinal = "
                             f"{self.config.tinit} + {self.config.tfinal}; lower tinit / tfinal or train longer")
        self.model.rankallocator.set_total_step(total_steps)

    def step(self, global_step: int) -> int:
        self.model.update_and_allocate(global_step)
        return self.model.rankallocator.budget_schedule(global_step)[0]

    def penalty(self) -> torch.Tensor:
        """Zero: ``AdaLoraModel.forward`` adds γ·R to the model's loss itself."""
        return torch.zeros(())

    def rank_pattern(self) -> dict[str, int]:
        """Kept triplets per adapted module, by the module's name in the wrapped model (as
        ``MethodHandle.rank_pattern``): PEFT's ``rank_pattern`` once it masked, init_r before."""
        pattern = self.config.rank_pattern
        if pattern:
            return {name.split(".lora_E")[0]: int(sum(kept)) for name, kept in pattern.items()}
        suffix = f".lora_E.{self.model.trainable_adapter_name}"
        return {n.removesuffix(suffix): p.shape[0] for n, p in self.model.model.named_parameters()
                if n.endswith(suffix)}

    def state_dict(self) -> dict[str, Any]:
        allocator = self.model.rankallocator
        return {"ipt": dict(allocator.ipt), "exp_avg_ipt": dict(allocator.exp_avg_ipt),
                "exp_avg_unc": dict(allocator.exp_avg_unc), "rank_pattern": self.config.rank_pattern,
                "total_step": self.config.total_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        allocator = self.model.rankallocator
        device = next(self.model.parameters()).device
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(allocator, key, {n: t.to(device) for n, t in state[key].items()})
        self.config.rank_pattern = state["rank_pattern"]
        self.config.total_step = state["total_step"]

    def before_checkpoint(self) -> None:
        """Hide the rank pattern while the Trainer saves: with one, PEFT saves each matrix cut to its
        kept triplets, which the same model cannot load back (size mismatch on resume), and which
        drops the pruned A and B that AdaLoRA keeps training (a pruned triplet may come back). The
        checkpoint's adapter is then full-size, its pruned λ zero (the same outputs); the pattern
        travels in ``adalora_state.pt``. ``trainer.save_model()`` after training saves the cut form."""
        if self._hidden is None:
            self._hidden, self.config.rank_pattern = (self.config.rank_pattern,), None

    def after_checkpoint(self) -> None:
        if self._hidden is not None:
            (self.config.rank_pattern,), self._hidden = self._hidden, None


def _driver_for(target: Any) -> _HandleDriver | _PeftDriver:
    """The one place that tells the two kinds of target apart."""
    if hasattr(target, "regularization_loss") and hasattr(target, "rank_pattern"):
        return _HandleDriver(target)
    inner = getattr(target, "base_model", target)  # a PeftModel wraps the AdaLoraModel
    if hasattr(inner, "update_and_allocate") and hasattr(inner, "rankallocator"):
        return _PeftDriver(inner)
    raise TypeError(
        f"AdaLoRACallback takes the handle of adalora.apply_method(model, cfg) or a PEFT AdaLoRA model "
        f"(get_peft_model(model, AdaLoraConfig(...))); got {type(target).__name__}")


class AdaLoRACallback(TrainerCallback):
    """Runs AdaLoRA's allocator, schedule and checkpointed state inside ``transformers.Trainer``.

    :param target: ``adalora.apply_method(model, cfg)``'s handle (then train with
        :class:`AdaLoRATrainer` or :class:`AdaLoRALossMixin`, which add γ·R to the loss), or a PEFT
        model made with ``AdaLoraConfig`` (a plain ``Trainer`` suffices).

    ``rank_history`` lists ``{"step", "budget", "ranks"}`` whenever the kept ranks changed (the
    first step included), as the suite's ``train.rank_history``.
    """

    def __init__(self, target: Any) -> None:
        self.driver = _driver_for(target)
        self.budget: int | None = None
        self.rank_history: list[dict[str, Any]] = []

    def penalty(self) -> torch.Tensor:
        """γ·R(P, Q) for the current parameters (a 0-dim zero where the method has none)."""
        return self.driver.penalty()

    def on_train_begin(self, args, state, control, **kwargs):
        self.driver.set_total_steps(state.max_steps)
        if state.global_step > 0:
            self._resume(args, state)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.budget = self.driver.step(state.global_step)
        ranks = self.driver.rank_pattern()
        if ranks is not None and (not self.rank_history or self.rank_history[-1]["ranks"] != ranks):
            self.rank_history.append({"step": state.global_step, "budget": self.budget, "ranks": ranks})

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Adds ``adalora/budget`` and ``adalora/rank_{sum,min,max}`` to the record: in place, for the
        callbacks after this one, and to the copy the Trainer already put in ``state.log_history``
        (saved in ``trainer_state.json``)."""
        if logs is None or not self.rank_history:
            return
        ranks = list(self.rank_history[-1]["ranks"].values())
        extra = {"adalora/rank_sum": sum(ranks), "adalora/rank_min": min(ranks), "adalora/rank_max": max(ranks)}
        if self.budget is not None:
            extra["adalora/budget"] = self.budget
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_step_end(self, args, state, control, **kwargs):
        """The Trainer's flow callback, which runs first, has decided whether this step saves."""
        if control.should_save:
            self.driver.before_checkpoint()

    on_epoch_end = on_step_end  # save_strategy="epoch" decides there

    def on_save(self, args, state, control, **kwargs):
        self.driver.after_checkpoint()
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not folder.is_dir():
            raise RuntimeError(f"AdaLoRACallback: the Trainer saved no checkpoint folder {folder} to put "
                               f"{STATE_FILE} in (hyperparameter search runs are not supported)")
        payload = {"global_step": state.global_step, "method": self.driver.state_dict(), "budget": self.budget,
                   "rank_history": self.rank_history}
        _write_atomic(folder / STATE_FILE, lambda tmp: torch.save(payload, tmp))
        pattern = json.dumps({"step": state.global_step, "budget": self.budget, "ranks": self.driver.rank_pattern()},
                             indent=1)
        _write_atomic(folder / PATTERN_FILE, lambda tmp: tmp.write_text(pattern))

    def _resume(self, args, state) -> None:
        candidates = [Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"]
        if isinstance(args.resume_from_checkpoint, str):
            candidates.insert(0, Path(args.resume_from_checkpoint))
        found = next((c / STATE_FILE for c in candidates if (c / STATE_FILE).is_file()), None)
        if found is None:
            raise RuntimeError(
                f"the Trainer resumed at step {state.global_step}, but none of {[str(c) for c in candidates]} holds "
                f"{STATE_FILE}: the checkpoint was saved without AdaLoRACallback, or lies outside output_dir "
                "(pass its path as TrainingArguments(resume_from_checkpoint=...)); the allocator cannot continue "
                "exactly without it")
        payload = torch.load(found, map_location="cpu", weights_only=False)
        if payload["global_step"] != state.global_step:
            raise RuntimeError(f"{found} was saved at step {payload['global_step']}, the Trainer resumed at "
                               f"step {state.global_step}")
        self.driver.load_state_dict(payload["method"])
        self.budget, self.rank_history = payload["budget"], payload["rank_history"]


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file, so a crash never leaves half a state file in a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class AdaLoRALossMixin:
    """Adds the :class:`AdaLoRACallback`'s γ·R to the Trainer's training loss: ``class MyTrainer(
    AdaLoRALossMixin, Trainer): pass`` (the mixin first). Evaluation losses stay the task loss.

    Where the Trainer takes the loss as already normalised over the accumulated batch (its
    ``loss_is_scaled_for_ga`` rule: it then does not divide by the accumulation steps), the penalty
    is divided by them, so each optimiser step gets γ·R once, as in the suite's loop.
    """

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        if not model.training:
            return result
        loss, outputs = result if return_outputs else (result, None)
        loss = loss + self._adalora_callback().penalty() * self._penalty_scale(kwargs.get("num_items_in_batch"))
        return (loss, outputs) if return_outputs else loss

    def _adalora_callback(self) -> AdaLoRACallback:
        found = [cb for cb in self.callback_handler.callbacks if isinstance(cb, AdaLoRACallback)]
        if len(found) != 1:
            raise RuntimeError(f"{type(self).__name__} needs exactly one AdaLoRACallback in callbacks=[...] "
                               f"(found {len(found)}): it holds the method whose penalty the loss gets")
        return found[0]

    def _penalty_scale(self, num_items_in_batch: Any) -> float:
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:  # transformers' rule (Trainer.training_step)
            scaled = ((getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
                      or getattr(self, "compute_loss_func", None) is not None)
        steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return 1.0 / steps if scaled else 1.0


class AdaLoRATrainer(AdaLoRALossMixin, Trainer):
    """``transformers.Trainer`` whose training loss includes the AdaLoRACallback's γ·R."""
