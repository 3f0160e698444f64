"""The ``peft`` kind: a Hugging Face PEFT LoRA-family config run through the suite's loop.

DoRA, PiSSA, rsLoRA, LoRA+ and PEFT's own AdaLoRA (and any other ``LoraConfig`` option, through
``options``) are trained by the same loop as the paper's methods, with the same targets (the six
weight types of the backbone, never PEFT's bare ``dense`` default that also catches DeBERTa's
pooler), the same trained-but-uncounted task head, the same records, checkpoints and resume,
and saved in PEFT's own ``save_pretrained`` format::

    {"name": "peft_dora", "kind": "peft", "use_dora": True}                # r from the budget level
    {"name": "peft_adalora", "kind": "peft", "peft_type": "adalora", "init_r": 4, "target_r": 2,
     "tinit": 600, "tfinal": 1800, "deltaT": 1, "orth_reg_weight": 0.3}

What differs from a kind with its own layers, and why:

* ``handle.model`` is the ``PeftModel``; the backbone is ``handle.model.base_model.model`` and
  every name the suite records (``adapted``, ``weight_types``, ``rank_pattern``) is a backbone
  module name, as for the other kinds. PEFT copies each task-head module into
  ``modules_to_save``: the copy trains, the original stays frozen.
* The orthogonal penalty of PEFT's AdaLoRA is added by ``AdaLoraModel.forward`` itself whenever
  the model returns a loss, so :meth:`regularization_loss` is the zero tensor (adding it there
  too would count it twice).
* A budget level sets LoRA's ``r`` by the count rule (closest trainable count to LoRA at the
  level's rank, ties to the smaller; DoRA's magnitude vector counted), and PEFT's AdaLoRA the
  level's ``init_r`` / ``target_r``, the values this suite's AdaLoRA runs at, so the two sit side
  by side.
* PEFT's AdaLoRA allocator (``RankAllocator``: the ``ipt`` / ``exp_avg_ipt`` / ``exp_avg_unc``
  EMAs and the final boolean ``rank_pattern``) is the method's checkpoint state.

peft is an optional dependency (the ``experiments`` extra): it is imported when a ``peft``
method is applied, never when this module is.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adalora.allocator import Allocation
from adalora.architectures import ENCODER_WEIGHT_TYPES, fan_in_fan_out, find_targets
from adalora.atomic import apply_umask
from adalora.budget import BudgetLevel
from adalora.methods.base import (
    PEFT_PREFIX,
    MethodHandle,
    peft_task_type,
)
from adalora.methods.registry import register_kind
from adalora.methods.settings import MethodConfigError, require
from adalora.methods.storage import base_fingerprint, write_safetensors

PEFT_TYPES = ("lora", "adalora")
ADAPTER = "default"  # PEFT's adapter name
# LoraConfig keys this kind sets from its own settings; ``options`` may not set them a second time.
MANAGED_KEYS = frozenset({
    "r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "task_type", "bias", "use_dora",
    "use_rslora", "init_lora_weights", "init_r", "target_r", "tinit", "tfinal", "deltaT", "beta1", "beta2",
    "orth_reg_weight", "total_step", "inference_mode",
})


@dataclass
class PeftSettings:
    """A PEFT LoRA-family config under the suite's knob names.

    ``peft_type``: ``lora`` (``LoraConfig``: ``r``, ``use_dora``, ``use_rslora``,
    ``init_lora_weights`` e.g. ``pissa``; ``loraplus_lr_ratio`` builds the optimiser groups with
    ``peft.optimizers.create_loraplus_optimizer``) or ``adalora`` (``AdaLoraConfig``: ``init_r``,
    ``target_r``, ``tinit``, ``tfinal``, ``deltaT``, ``beta1``, ``beta2``, ``orth_reg_weight``;
    ``total_step`` is the run's T). ``alpha`` is ``lora_alpha``. ``options``: any further
    ``LoraConfig`` / ``AdaLoraConfig`` keyword (a mapping), passed through unchanged.
    """

    peft_type: str = "lora"
    r: int | None = None
    alpha: float = 16.0
    targets: tuple[str, ...] = ENCODER_WEIGHT_TYPES
    lora_dropout: float = 0.0
    use_dora: bool = False
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    loraplus_lr_ratio: float | None = None
    init_r: int | None = None
    target_r: int | None = None
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.0
    options: Any = None

    def __post_init__(self) -> None:
        require(self.peft_type in PEFT_TYPES, "peft_type", f"one of {PEFT_TYPES}", self.peft_type)
        require(0 <= self.lora_dropout < 1, "lora_dropout", "in [0, 1)", self.lora_dropout)
        require(self.loraplus_lr_ratio is None or self.loraplus_lr_ratio >= 1, "loraplus_lr_ratio",
                ">= 1 (LoRA+: lr of B / lr of A) or null", self.loraplus_lr_ratio)
        if self.options is not None:
            require(isinstance(self.options, Mapping), "options", "a mapping of LoraConfig keywords", self.options)
            clash = sorted(set(self.options) & MANAGED_KEYS)
            if clash:
                raise MethodConfigError(f"method.options sets {clash}, which this kind sets from its own keys "
                                        "(method.r, method.alpha, method.use_dora, ...): set those instead")
        if self.peft_type == "lora":
            require(self.r is not None and self.r >= 1, "r", "a positive rank (or a budget level that sets it)", self.r)
            return
        for key in ("init_r", "target_r"):
            value = getattr(self, key)
            require(value is not None and value >= 1, key, "a positive rank (or a budget level that sets it)", value)
        if self.target_r > self.init_r:
            raise MethodConfigError(f"method.target_r ({self.target_r}) must be <= method.init_r ({self.init_r})")
        require(self.tinit >= 0, "tinit", ">= 0 optimiser steps", self.tinit)
        require(self.tfinal >= 0, "tfinal", ">= 0 optimiser steps", self.tfinal)
        require(self.deltaT >= 1, "deltaT", ">= 1 optimiser step", self.deltaT)
        require(0 < self.beta1 < 1, "beta1", "in (0, 1) (PEFT asserts it)", self.beta1)
        require(0 < self.beta2 < 1, "beta2", "in (0, 1) (PEFT asserts it)", self.beta2)
        require(self.orth_reg_weight >= 0, "orth_reg_weight", ">= 0", self.orth_reg_weight)
        for key, off in (("use_dora", False), ("use_rslora", False), ("init_lora_weights", True),
                         ("loraplus_lr_ratio", None)):
            if getattr(self, key) != off:
                raise MethodConfigError(f"method.{key} is a LoRA option; PEFT's AdaLoRA (method.peft_type=adalora) "
                                        f"does not take it: leave it at {off}")


class _CapturedGroups:
    """Stands in for the optimiser class given to ``create_loraplus_optimizer``: it keeps the parameter
    groups PEFT forms (lr and weight decay per group), which the suite's loop then hands to its AdamW."""

    def __init__(self, groups: list[dict[str, Any]], **_: Any):
        self.param_groups = groups


@register_kind
class PeftMethod(MethodHandle):
    """A PEFT LoRA-family adapter on the backbone's six weight types (see the module docstring)."""

    kind = "peft"
    settings_cls = PeftSettings
    size_knob = "r"
    export_formats = ("peft", "merged")

    # ------------------------------------------------------------------ the kind, before a model
    @classmethod
    def budget_knobs(cls, level: BudgetLevel, values: Mapping[str, Any], model: nn.Module | None) -> dict[str, Any]:
        """PEFT's AdaLoRA: the level's ``init_r`` / ``target_r`` (those of this suite's AdaLoRA). LoRA:
        the count rule on ``r`` (DoRA's magnitude vectors make its r smaller than LoRA's)."""
        if values.get("peft_type", "lora") == "adalora":
            return {"init_r": level.adalora_init_r, "target_r": level.adalora_target_r}
        return super().budget_knobs(level, values, model)

    @classmethod
    def hparams_blocks(cls, values: Mapping[str, Any]) -> tuple[str, ...]:
        """A row reads the task's hyperparameters of the method it stands beside: LoRA's (``lora``: alpha,
        the lr through ``${selected_lr:...}`` with LoRA's fallback, LoRA's epochs) or AdaLoRA's
        (``adalora``: schedule, γ, alpha), then a ``peft`` block if a task has one."""
        return ("adalora" if values.get("peft_type") == "adalora" else "lora", cls.kind)

    @classmethod
    def count_for(cls, model: nn.Module, values: Mapping[str, Any], name: str) -> int:
        """As the base class, with PEFT's default initialisation: the count does not depend on it, and
        PiSSA's SVD cannot run on the meta tensors the count is measured on."""
        return super().count_for(model, {**values, "init_lora_weights": True}, name)

    # ------------------------------------------------------------------ applying it
    @property
    def backbone(self) -> nn.Module:
        """The transformers model inside the ``PeftModel`` (names as the other kinds record them)."""
        return self.model.base_model.model

    @property
    def is_adalora(self) -> bool:
        return self.settings.peft_type == "adalora"

    def peft_config(self, targets: list[str], heads: list[str], task_type: str, fan_in_fan_out: bool = False):
        """The ``LoraConfig`` / ``AdaLoraConfig`` of these settings (AdaLoRA: a provisional
        ``total_step``, replaced by the run's T in :meth:`set_total_steps`). ``fan_in_fan_out``: the
        targets store their weights as (in, out) (transformers ``Conv1D``, GPT-2)."""
        import peft

        s = self.settings
        common = {"target_modules": targets, "modules_to_save": heads or None, "task_type": task_type,
                  "lora_alpha": s.alpha, "lora_dropout": s.lora_dropout, "bias": "none",
                  "fan_in_fan_out": fan_in_fan_out, **(s.options or {})}
        if not self.is_adalora:
            return peft.LoraConfig(r=s.r, use_dora=s.use_dora, use_rslora=s.use_rslora,
                                   init_lora_weights=s.init_lora_weights, **common)
        return peft.AdaLoraConfig(init_r=s.init_r, target_r=s.target_r, tinit=s.tinit, tfinal=s.tfinal,
                                  deltaT=s.deltaT, beta1=s.beta1, beta2=s.beta2, orth_reg_weight=s.orth_reg_weight,
                                  total_step=s.tinit + s.tfinal + 1, **common)

    def insert_layers(self) -> None:
        """Wrap the backbone in a ``PeftModel`` on the explicit target names, the head in ``modules_to_save``."""
        import peft

        found = find_targets(self.model, self.arch, self.settings.targets)
        fan_in = any(fan_in_fan_out(self.model.get_submodule(name)) for name in found)
        config = self.peft_config(sorted(found), self.head_modules(), peft_task_type(self.model), fan_in)
        self.model = peft.get_peft_model(self.model, config)
        self.adapted = {name: self.backbone.get_submodule(name) for name in found}
        self.weight_types.update(found)

    def mark_trainable(self) -> None:
        """Train PEFT's adapter tensors (``lora_*``: A, B, AdaLoRA's E, DoRA's magnitude) and the head's
        ``modules_to_save`` copies; nothing else (AdaLoRA's constant ``ranknum`` included)."""
        self._owned = set(self.owned_parameter_names())
        heads = self.arch.head_prefixes
        for name, param in self.model.named_parameters():
            inner = name.removeprefix(PEFT_PREFIX)
            head_copy = inner.startswith(heads) and ".modules_to_save." in inner
            param.requires_grad_(".lora_" in inner or head_copy)

    def owned_parameter_names(self) -> list[str]:
        """The adapter layers' own parameters (``base_layer`` excluded), as ``handle.model`` names them."""
        return [f"{PEFT_PREFIX}{module_name}.{name}" for module_name, module in self.adapted.items()
                for name, _ in module.named_parameters() if not name.startswith("base_layer.")]

    # ------------------------------------------------------------------ the training loop
    def _tuner(self):
        return self.model.base_model  # LoraModel / AdaLoraModel

    def _config(self):
        return self.model.peft_config[ADAPTER]

    def set_total_steps(self, total_steps: int) -> None:
        """PEFT's AdaLoRA: ``total_step`` = T, with its own check that a budget-decrease phase exists."""
        super().set_total_steps(total_steps)
        if not self.is_adalora:
            return
        s = self.settings
        if s.tinit >= total_steps - s.tfinal:
            raise MethodConfigError(f"method.tinit + method.tfinal = {s.tinit} + {s.tfinal} must be < T = {total_steps} "
                                    "optimiser steps (PEFT's AdaLoRA needs a budget-decrease phase)")
        self._tuner().rankallocator.set_total_step(int(total_steps))

    def step(self, global_step: int) -> int | None:
        """PEFT's ``update_and_allocate(global_step)`` after the optimiser step; returns b(t)."""
        if not self.is_adalora:
            return None
        tuner = self._tuner()
        tuner.update_and_allocate(global_step)
        self._allocator_runs = getattr(self, "_allocator_runs", 0) + 1
        return tuner.rankallocator.budget_schedule(global_step)[0]

    def allocation(self) -> Allocation | None:
        """PEFT's AdaLoRA: how often ``update_and_allocate`` ran; its usual failure is that nobody calls it."""
        if not self.is_adalora:
            return None
        runs = getattr(self, "_allocator_runs", 0)
        cause = ("PEFT's update_and_allocate(global_step) was never called after optimizer.step(), so PEFT trained a "
                 "fixed-rank SVD adapter (a plain Trainer or a loop without it: huggingface/peft#1327; use "
                 "adalora.integrations.hf.AdaLoRACallback or call it)" if runs == 0 else
                 f"update_and_allocate ran {runs} times without pruning: does AdaLoraConfig.total_step equal T?")
        return Allocation(runs, self.settings.init_r > self.settings.target_r, cause)

    def masks_at(self, global_step: int) -> bool:
        """PEFT masks on its schedule and, whatever ΔT, once at exactly T − t_f."""
        if not self.is_adalora:
            return False
        forced = global_step == self._config().total_step - self.settings.tfinal
        return forced or self._tuner().rankallocator.budget_schedule(global_step)[1]

    def optimizer_param_groups(self, weight_decay: float, lr: float) -> list[dict[str, Any]]:
        """LoRA+: PEFT's own grouping (``create_loraplus_optimizer``: B and 1-d tensors at
        ``lr · loraplus_lr_ratio``, the rest at ``lr``; ``weight_decay`` as its ``loraplus_weight_decay``).
        Otherwise the suite's convention (base class)."""
        ratio = self.settings.loraplus_lr_ratio
        if ratio is None:
            return super().optimizer_param_groups(weight_decay, lr)
        from peft.optimizers import create_loraplus_optimizer

        captured = create_loraplus_optimizer(self.model, _CapturedGroups, lr=lr, loraplus_lr_ratio=ratio,
                                             loraplus_weight_decay=weight_decay)
        return [g for g in captured.param_groups if g["params"]]

    def update_scale(self) -> dict[str, Any]:
        """PEFT's factors: ``alpha/r`` (rsLoRA ``alpha/sqrt(r)``); AdaLoRA ``alpha/init_r`` (its ``ranknum``)."""
        s = self.settings
        if self.is_adalora:
            return {"value": s.alpha / s.init_r, "rule": "alpha/init_r", "alpha": s.alpha, "r": s.init_r}
        rule, value = ("alpha/sqrt(r)", s.alpha / s.r ** 0.5) if s.use_rslora else ("alpha/r", s.alpha / s.r)
        return {"value": value, "rule": rule, "alpha": s.alpha, "r": s.r}

    def rank_pattern(self) -> dict[str, int] | None:
        """PEFT's AdaLoRA: kept triplets per matrix from its boolean ``rank_pattern`` (init_r before the
        first mask); None for LoRA."""
        if not self.is_adalora:
            return None
        pattern = self._config().rank_pattern or {}
        ranks = {}
        for name, module in self.adapted.items():
            keep = pattern.get(f"{name}.lora_E.{ADAPTER}", pattern.get(f"{name}.lora_E"))
            ranks[name] = module.lora_E[ADAPTER].shape[0] if keep is None else int(sum(bool(k) for k in keep))
        return ranks

    def parameter_counts(self) -> dict[str, Any]:
        """The paper's accounting on the backbone: adapter tensors only (head trained, not counted); PEFT's
        AdaLoRA counts its kept triplets, ``r · (d_in + d_out + 1)`` each. ``total`` counts the base model
        and the adapter once (the head's ``modules_to_save`` copies are not counted again)."""
        heads = self.arch.head_prefixes
        total = trainable = head = 0
        for name, param in self.backbone.named_parameters():
            if ".modules_to_save." not in name:
                total += param.numel()
            if param.requires_grad:
                trainable += param.numel()
                head += param.numel() if name.startswith(heads) else 0
        paper = trainable - head
        for name, kept in (self.rank_pattern() or {}).items():
            module = self.adapted[name]
            paper -= (module.lora_E[ADAPTER].shape[0] - kept) * (module.in_features + module.out_features + 1)
        return self._with_budget({"trainable_paper": paper, "trainable_total": trainable, "head": head, "total": total})

    def state_dict(self) -> dict[str, Any]:
        """PEFT's AdaLoRA allocator: its three EMA dicts (tensors) and the boolean rank pattern."""
        if not self.is_adalora:
            return {}
        allocator = self._tuner().rankallocator
        pattern = self._config().rank_pattern
        return {
            **{key: {n: t.detach().clone() for n, t in getattr(allocator, key).items()}
               for key in ("ipt", "exp_avg_ipt", "exp_avg_unc")},
            "rank_pattern": None if pattern is None else {n: [bool(k) for k in v] for n, v in pattern.items()},
            "total_step": self._config().total_step,
            "allocator_runs": getattr(self, "_allocator_runs", 0),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not self.is_adalora:
            return
        if state["total_step"] != self._config().total_step:
            raise ValueError(f"the checkpoint's AdaLoRA total_step {state['total_step']} differs from this run's "
                             f"T = {self._config().total_step}")
        allocator = self._tuner().rankallocator
        devices = {n: p.device for n, p in self.backbone.named_parameters()}
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(allocator, key, {n: t.to(devices[n]) for n, t in state[key].items()})
        pattern = state["rank_pattern"]
        self._config().rank_pattern = None if pattern is None else {n: list(v) for n, v in pattern.items()}
        self._allocator_runs = int(state.get("allocator_runs", 0))

    # ------------------------------------------------------------------ what it saves
    def write_trained_state(self, path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
        """PEFT's own ``save_pretrained`` of ``tensors`` into ``<path without suffix>/`` (``weights/final/``,
        ``<dir>/method/``), and ``path`` itself with no tensors: the suite's metadata (method config, base
        fingerprint) that rebuilds the handle. A snapshot other than the current weights (the best
        evaluation's) is loaded for the save and the current weights put back; AdaLoRA's kept triplets
        are then the snapshot's non-zero λ. The adapter is written in a temporary directory first and
        moved into place whole."""
        adapter_dir = path.with_suffix("")
        current = self.trained_state()
        swapped = any(not torch.equal(current[n], t) for n, t in tensors.items())
        config = self._config()
        pattern = getattr(config, "rank_pattern", None)
        if swapped:
            self.model.load_state_dict(dict(tensors), strict=False)
            if self.is_adalora:
                config.rank_pattern = {f"{n}.lora_E": (m.lora_E[ADAPTER].detach().view(-1) != 0).tolist()
                                       for n, m in self.adapted.items()}
        adapter_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{adapter_dir.name}.", dir=adapter_dir.parent))
        try:
            self._save_adapter(tmp)
            ranks = self.rank_pattern()  # the saved weights' (a snapshot's own while it is loaded)
            apply_umask(tmp)  # mkdtemp and safetensors make 0700/0600; teammates must read a run
            shutil.rmtree(adapter_dir, ignore_errors=True)
            os.replace(tmp, adapter_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if swapped:
                self.model.load_state_dict(current, strict=False)
                if self.is_adalora:
                    config.rank_pattern = pattern
        write_safetensors(path, {}, {**metadata, "rank_pattern": ranks, "peft_adapter": adapter_dir.name})

    def _save_adapter(self, directory: Path, base_model_name_or_path: str | None = None) -> None:
        """``save_pretrained`` with the run's ``total_step`` in the config; PEFT cuts AdaLoRA's A, E, B to
        the kept triplets (its ``rank_pattern``)."""
        config = self._config()
        kept_name = config.base_model_name_or_path
        if base_model_name_or_path is not None:
            config.base_model_name_or_path = base_model_name_or_path
        try:
            with warnings.catch_warnings():
                if self.is_adalora and 0 in self.rank_pattern().values():
                    # A matrix pruned to rank 0 is saved as (0, d) lora_A / lora_B tensors, which PEFT's check
                    # for ungathered ZeRO-3 / FSDP shards takes for one; here they are complete, so only that
                    # warning is silenced, and only on a save that holds such a matrix.
                    warnings.filterwarnings("ignore", message=r"(?s).*ZeRO-3 / FSDP shards were not gathered")
                self.model.save_pretrained(str(directory))
        finally:
            config.base_model_name_or_path = kept_name

    def load_trained_state(self, tensors: Mapping[str, torch.Tensor], fingerprint: str | None, source: str) -> None:
        """Load the PEFT adapter written beside ``source`` (:meth:`write_trained_state`) with PEFT's own
        loader; tensors in the suite's format (a checkpoint's) load as for any kind. PEFT saves AdaLoRA's
        kept triplets only; they go back to their places in init_r-sized tensors (zeros elsewhere, as the
        pruned λ were in training), so the reloaded layers compute bit for bit what the trained ones did."""
        import json

        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        directory = Path(source).with_suffix("")
        if tensors or not (directory / "adapter_config.json").is_file():
            super().load_trained_state(tensors, fingerprint, source)
            return
        if not (directory / "adapter_model.safetensors").is_file():  # PEFT would fall back to a pickle
            raise ValueError(f"{directory} holds no adapter_model.safetensors; an adapter_model.bin (a pickle) is "
                             "never loaded: re-save the adapter with safetensors (PEFT's default)")
        state = load_peft_weights(str(directory), device="cpu")
        pattern = json.loads((directory / "adapter_config.json").read_text()).get("rank_pattern")
        if self.is_adalora and pattern:
            state = self._at_init_r(state, pattern)
        result = set_peft_model_state_dict(self.model, state)
        if result.unexpected_keys:
            raise ValueError(f"{directory} holds adapter tensors this model lacks: {result.unexpected_keys[:5]}")
        if self.is_adalora:
            self._config().rank_pattern = pattern
        if fingerprint is not None and base_fingerprint(self.model, set(self.trained_state())) != fingerprint:
            raise ValueError(f"the base model differs from the one {directory} was trained on (SHA-256 of the frozen "
                             "weights, PiSSA's residual included): another model, seed, transformers version or "
                             "hub revision")

    def _at_init_r(self, state: Mapping[str, torch.Tensor], pattern: Mapping[str, list]) -> dict[str, torch.Tensor]:
        """AdaLoRA's saved (kept-triplet) A, E, B scattered into zero tensors of the layers' init_r shapes."""
        out = dict(state)
        for name, module in self.adapted.items():
            keep = torch.tensor(pattern[f"{name}.lora_E"], dtype=torch.bool)
            for part in ("lora_A", "lora_E", "lora_B"):
                key = f"{PEFT_PREFIX}{name}.{part}"
                full = torch.zeros_like(getattr(module, part)[ADAPTER], device="cpu")
                if part == "lora_B":
                    full[:, keep] = state[key]
                else:
                    full[keep] = state[key]
                out[key] = full
        return out

    # ------------------------------------------------------------------ export
    def peft_adapter(self, task_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """PEFT's own ``save_pretrained`` output (config and tensors), so an export is PEFT's format."""
        import json

        from safetensors.torch import load_file

        with tempfile.TemporaryDirectory() as tmp:
            self._save_adapter(Path(tmp))
            config = json.loads((Path(tmp) / "adapter_config.json").read_text())
            tensors = load_file(str(Path(tmp) / "adapter_model.safetensors"))
        return config, tensors

    def merged_model(self) -> nn.Module:
        """PEFT's ``merge_and_unload`` in place (PiSSA's residual base plus its update, DoRA's normalised
        weight, AdaLoRA's P Λ Q): plain transformers modules, every parameter trainable again."""
        merged = self.model.merge_and_unload()
        for param in merged.parameters():
            param.requires_grad_(True)
        self.model = merged
        return merged

    def export(self, directory: str | Path, format: str = "peft", base_model_name_or_path: str | None = None) -> Path:
        """As the base class; ``merged`` merges a copy (the base class re-finds layers by backbone names)."""
        if format != "merged":
            return super().export(directory, format, base_model_name_or_path)
        clone = copy.copy(self)
        clone.model = copy.deepcopy(self.model)
        clone.merged_model().save_pretrained(Path(directory))
        return Path(directory)
