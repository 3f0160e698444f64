"""AdaLoRA inside ``transformers.Trainer``: the schedule, the allocator, the penalty and resume.

A hand-written AdaLoRA loop does, per optimiser step (DESIGN §3): backward(task loss + γ·R) → clip
→ optimizer.step → scheduler.step → allocator.step(global_step) → zero_grad, with T (the total
optimiser steps) set before training and the allocator's state saved with every checkpoint. The
Trainer runs the loop, so :class:`AdaLoRACallback` hooks each of these in:

* ``on_train_begin``: T = ``state.max_steps`` (gradient accumulation and devices included); the
  check that the Trainer's optimiser holds the method's parameter groups as declared (the lr and
  weight decay of each, nothing the method keeps out of it: :class:`AdaLoRATrainer` builds it from
  them); when the Trainer resumed (``state.global_step > 0``), the allocator's state from the
  checkpoint folder (tensors and plain types only: ``torch.load(weights_only=True)``).
* ``on_optimizer_step``: the allocator, with ``state.global_step`` (optimiser steps from 0). It is
  the Trainer's only hook between ``optimizer.step()`` and ``model.zero_grad()`` (``on_step_end``
  comes after ``zero_grad``, too late: the importance scores read ``p.grad``). The scheduler steps
  after it; the allocator does not read the learning rate, so the order of those two is immaterial.
* ``on_log``: the budget b(t) and the kept ranks (sum, min, max) as ``adalora/*`` scalars.
* ``on_save``: ``adalora_state.pt`` (EMAs, masks, rank history) and ``adalora_rank_pattern.json``
  into the checkpoint folder, so ``trainer.train(resume_from_checkpoint=...)`` continues exactly
  (for PEFT, ``on_step_end`` of a saving step also keeps PEFT from saving cut-down matrices).
* ``on_train_end``: the proof that allocation ran (``allocation``), and an error naming the likely
  cause when the schedule says the ranks must have changed and they did not.

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
import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as err:  # the method library itself needs only torch
    raise ImportError("adalora.integrations.hf needs transformers>=4.46: pip install 'adalora[experiments]'") from err

from adalora.allocator import Allocation, allocation_proof

STATE_FILE = "adalora_state.pt"
PATTERN_FILE = "adalora_rank_pattern.json"


class _HandleDriver:
    """This library's ``MethodHandle`` (``adalora.apply_method``): every call is the handle's own."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.name = handle.name

    def set_total_steps(self, total_steps: int) -> None:
        """T from the Trainer; a schedule that does not fit is the Trainer user's setting to change, so
        the error names the Trainer's side (max_steps / num_train_epochs) as well as the method's."""
        try:
            self.handle.set_total_steps(total_steps)
        except ValueError as err:
            raise ValueError(
                f"the Trainer runs {total_steps} optimiser steps (TrainingArguments.max_steps, or num_train_epochs "
                f"x update steps per epoch), too few for method {self.handle.name!r}: {err}. Raise max_steps / "
                "num_train_epochs, or lower tinit / tfinal in the config given to adalora.apply_method") from None

    def optimizer_groups(self, weight_decay: float, lr: float) -> list[dict[str, Any]] | None:
        return self.handle.optimizer_param_groups(weight_decay, lr)

    def outside_optimizer(self, groups: list[dict[str, Any]]) -> dict[str, torch.nn.Parameter]:
        return self.handle.outside_optimizer(groups)

    def allocation(self) -> Allocation | None:
        return self.handle.allocation()

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
        self.name = "peft AdaLoRA"
        self.runs = 0  # update_and_allocate calls by this callback
        self._hidden: tuple[Any] | None = None  # the rank pattern while a checkpoint is written

    def optimizer_groups(self, weight_decay: float, lr: float) -> None:
        """None: PEFT's AdaLoRA declares no groups; the Trainer's default optimiser is right for it."""
        return None

    def outside_optimizer(self, groups: list[dict[str, Any]]) -> dict[str, torch.nn.Parameter]:
        return {}

    def allocation(self) -> Allocation:
        cause = (f"update_and_allocate ran {self.runs} times without pruning: does AdaLoraConfig.total_step equal "
                 "the Trainer's max_steps, and tinit + tfinal leave a budget-decrease phase?")
        return Allocation(self.runs, self.config.init_r > self.config.target_r, cause)

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
        self.runs += 1
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
                "total_step": self.config.total_step, "runs": self.runs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        allocator = self.model.rankallocator
        device = next(self.model.parameters()).device
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(allocator, key, {n: t.to(device) for n, t in state[key].items()})
        self.config.rank_pattern = state["rank_pattern"]
        self.config.total_step = state["total_step"]
        self.runs = int(state.get("runs", 0))

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
    first step included), as the suite's ``train.rank_history``; ``allocation`` is the proof that
    allocation ran (``allocator_runs``, ``rank_changes``, ``final_pattern``), set when training ends.
    """

    def __init__(self, target: Any) -> None:
        self.driver = _driver_for(target)
        self.budget: int | None = None
        self.rank_history: list[dict[str, Any]] = []
        self.allocation: dict[str, Any] | None = None
        self._initial_ranks: dict[str, int] | None = None

    def penalty(self) -> torch.Tensor:
        """γ·R(P, Q) for the current parameters (a 0-dim zero where the method has none)."""
        return self.driver.penalty()

    def on_train_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
        self.driver.set_total_steps(state.max_steps)
        if optimizer is not None:
            self._check_optimizer(args, optimizer)
        self._initial_ranks = self.driver.rank_pattern()
        if state.global_step > 0:
            self._resume(args, state)

    def _check_optimizer(self, args, optimizer) -> None:
        """Refuse an optimiser that does not hold the method's groups as declared (a plain ``Trainer``
        builds one group pair of its own: LoRA+'s B would train at A's lr, a kept-out gate in AdamW)."""
        groups = self.driver.optimizer_groups(args.weight_decay, args.learning_rate)
        if groups is None:
            return
        problems = optimizer_mismatch(groups, optimizer, self.driver.outside_optimizer(groups), args)
        if problems:
            raise ValueError(
                f"the Trainer's optimiser does not hold the parameter groups of method {self.driver.name!r} as "
                f"declared by handle.optimizer_param_groups(): {'; '.join(problems)}. Train with AdaLoRATrainer "
                "(or AdaLoRALossMixin), which builds the optimiser from them, or pass "
                "Trainer(optimizers=(torch.optim.AdamW(handle.optimizer_param_groups(wd, lr), lr=lr), None))")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.budget = self.driver.step(state.global_step)
        ranks = self.driver.rank_pattern()
        if ranks is not None and (not self.rank_history or self.rank_history[-1]["ranks"] != ranks):
            self.rank_history.append({"step": state.global_step, "budget": self.budget, "ranks": ranks})

    def on_train_end(self, args, state, control, **kwargs):
        """The proof that allocation ran; a run whose ranks had to change and did not is an error
        (:class:`adalora.allocator.AllocationNotRun`), as in the suite's loop."""
        allocation = self.driver.allocation()
        if allocation is not None and state.global_step >= state.max_steps:
            self.allocation = allocation_proof(self.driver.name, allocation, self._initial_ranks, self.rank_history,
                                               self.driver.rank_pattern())

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
        payload = _load_state(found)
        if payload["global_step"] != state.global_step:
            raise RuntimeError(f"{found} was saved at step {payload['global_step']}, the Trainer resumed at "
                               f"step {state.global_step}")
        self.driver.load_state_dict(payload["method"])
        self.budget, self.rank_history = payload["budget"], payload["rank_history"]


def _load_state(path: Path) -> dict[str, Any]:
    """The callback's state file, tensors and plain types only (``weights_only=True``): a checkpoint
    folder is data, and a pickle planted in it must not run. Refused with the file named."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(f"{path} holds more than tensors and plain types ({str(err).splitlines()[0]}); it was "
                           "not loaded and nothing in it ran. A file this callback wrote never does: replace the "
                           "checkpoint folder with one you trust") from None


def optimizer_mismatch(groups: list[dict[str, Any]], optimizer: Any, outside: dict[str, Any], args: Any) -> list[str]:
    """How ``optimizer`` differs from the declared ``groups``: each group whose parameters it lacks or holds
    at another lr / weight decay (by the group's own values, else the Trainer's), and each parameter the
    method keeps out of the optimiser that it holds anyway. Empty when it holds them as declared."""
    held = {}
    for group in optimizer.param_groups:
        setting = (group.get("initial_lr", group["lr"]), group.get("weight_decay", 0.0))
        held.update({id(p): setting for p in group["params"]})
    problems = []
    for i, group in enumerate(groups):
        want = (group.get("lr", args.learning_rate), group.get("weight_decay", args.weight_decay))
        wrong = [p for p in group["params"]
                 if id(p) not in held or not all(math.isclose(a, b) for a, b in zip(held[id(p)], want))]
        if wrong:
            problems.append(f"group {i} (lr {want[0]:g}, weight_decay {want[1]:g}, {len(group['params'])} tensors): "
                            f"{len(wrong)} of them missing or at another lr / weight decay")
    kept_in = sorted(name for name, p in outside.items() if id(p) in held)
    if kept_in:
        problems.append(f"parameters the method keeps out of the optimiser are in it: {kept_in[:3]}")
    return problems


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
    """``transformers.Trainer`` whose training loss includes the AdaLoRACallback's γ·R and whose optimiser
    is built from the method's groups (``handle.optimizer_param_groups(args.weight_decay,
    args.learning_rate)``: LoRA+'s second lr, a kind's own weight decay rule, nothing it keeps out)."""

    def create_optimizer(self, model=None):
        """The Trainer's optimiser class and arguments (``args.optim``, ``optimizer_cls_and_kwargs``) over
        the method's groups; PEFT's AdaLoRA (which declares none) gets the Trainer's own."""
        if self.optimizer is not None:
            return self.optimizer
        groups = self._adalora_callback().driver.optimizer_groups(self.args.weight_decay, self.args.learning_rate)
        if groups is None:
            return super().create_optimizer(model)
        optimizer_cls, kwargs = (self.optimizer_cls_and_kwargs
                                 or self.get_optimizer_cls_and_kwargs(self.args, self.model if model is None else model))
        self.optimizer = optimizer_cls([g for g in groups if g["params"]], **kwargs)
        return self.optimizer
