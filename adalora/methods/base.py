"""The method contract: one class per method *kind*, everything kind-specific behind its hooks.

A kind is a subclass of :class:`MethodHandle`, registered under a name
(``adalora.methods.registry.register_kind``). The class is the registered object (its class
attributes and classmethods describe the kind before a model exists: settings, size knob, budget
rule); an instance is the method applied to one model (its hooks are what a training loop,
the harness and the exporters call). Nothing outside a kind's module asks which kind it is.

Lifecycle::

    handle = adalora.apply_method(model, {"name": "lora", "r": 8})   # parse → budget → apply
    handle.set_total_steps(T)
    loss = task_loss + handle.regularization_loss()                  # always a tensor
    loss.backward(); optimizer.step(); handle.step(global_step)      # allocation, or a no-op
    handle.save("out/") ; MethodHandle.load(fresh_model, "out/") ; handle.export("peft/", "peft")

A new kind subclasses this, sets ``kind``, ``settings_cls`` (a dataclass: its annotations are
checked eagerly, its ``__post_init__`` checks ranges) and usually ``size_knob``, and overrides
:meth:`insert_layers`. Every other hook has a default that is right for an adapter whose layers
wrap ``nn.Linear`` modules (``base_layer``) and train nothing else but the task head.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from adalora.allocator import Allocation
from adalora.architectures import Architecture, find_targets, replace_module
from adalora.budget import BudgetLevel, budget_target, closest_knob, count_parameters
from adalora.methods.settings import MethodConfigError, build_settings
from adalora.methods.storage import base_fingerprint, rank_pattern_of, read_safetensors, write_safetensors
from adalora.trust import reading

SAVE_FILE = "method.safetensors"
SAVE_FORMAT = "adalora-method/1"
PEFT_PREFIX = "base_model.model."
# transformers' model class suffix -> PEFT task type (what ``export(format="peft")`` writes).
PEFT_TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForQuestionAnswering": "QUESTION_ANS",
                   "ForConditionalGeneration": "SEQ_2_SEQ_LM", "ForCausalLM": "CAUSAL_LM",
                   "LMHeadModel": "CAUSAL_LM"}  # GPT2LMHeadModel


class ExportError(ValueError):
    """The method cannot be exported in the requested format; the message says what can be done."""


@dataclasses.dataclass
class NoSettings:
    """Kinds without knobs (full fine-tuning, BitFit)."""


class MethodHandle:
    """Base class of every method kind; an instance is the method applied to one model.

    Class attributes (the kind's description, read before a model exists):

    * ``kind``: the registered name (``handle.kind``; records and ``method.kind`` use it).
    * ``settings_cls``: the settings dataclass; ``handle.settings`` is an instance.
    * ``size_knob``: the settings field a budget level sets (``r``, ``bottleneck``); ``None`` means
      the method has a fixed size (full FT, BitFit): it records under budget ``none``.
    * ``saves_weights_by_default``: whether a run keeps its trained tensors when
      ``trainer.save_model`` is null (false only where that is the whole model).
    * ``export_formats``: the formats :meth:`export` writes (``"peft"``, ``"merged"``).
    """

    kind: ClassVar[str] = ""
    settings_cls: ClassVar[type] = NoSettings
    size_knob: ClassVar[str | None] = None
    saves_weights_by_default: ClassVar[bool] = True
    export_formats: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, settings: Any, model: nn.Module, arch: Architecture, module: str | None = None):
        self.name = name  # the method's name (a variant such as lora_qk, or the kind itself)
        self.settings = settings
        self.model = model  # what to train; a kind may replace it in insert_layers (a wrapper)
        self.arch = arch
        self.module = module  # the user module that registered this kind (method config ``module:``)
        self.adapted: dict[str, nn.Module] = {}  # module name -> the kind's layer that replaced it
        self.weight_types: dict[str, tuple[int, str]] = {}  # module name -> (layer, weight type)
        self.total_steps: int | None = None
        self.budget_target: int | None = None  # set by apply_method when a budget level is given
        self.trainable_paper_start: int | None = None
        self._zero: torch.Tensor | None = None

    # ------------------------------------------------------------------ the kind, before a model
    @classmethod
    def has_size_knob(cls) -> bool:
        """Whether a budget level sizes this method (else it records under budget ``none``)."""
        return cls.size_knob is not None

    @classmethod
    def parse_settings(cls, values: Mapping[str, Any], name: str) -> Any:
        """The settings dataclass from config values (types checked, ranges by ``__post_init__``)."""
        return build_settings(cls.settings_cls, values, f"method {name!r} ({cls.kind})")

    @classmethod
    def budget_knobs(cls, level: BudgetLevel, values: Mapping[str, Any], model: nn.Module | None) -> dict[str, Any]:
        """Settings a budget level implies, for the keys the config leaves unset.

        Default, the count rule: the ``size_knob`` value whose paper-way trainable count on
        ``model`` is closest to the level's target (LoRA at ``level.lora_r`` on the six weight
        types), ties to the smaller. It needs the model; with ``model=None`` (the harness
        resolving a config before building it) it returns ``{}`` and ``apply_method`` calls it
        again with the model. The paper's kinds override it with the paper's table values.
        """
        if cls.size_knob is None or model is None:
            return {}
        target = budget_target(model, level)
        name = str(values.get("name", cls.kind))
        return {cls.size_knob: closest_knob(lambda v: cls.count_for(model, {**values, cls.size_knob: v}, name), target)}

    @classmethod
    def hparams_blocks(cls, values: Mapping[str, Any]) -> tuple[str, ...]:
        """The blocks of a task's ``hparams`` this method reads between ``default`` and its own name,
        lowest precedence first. Default: the kind's block (``lora``, ``adalora``, ...)."""
        return (cls.kind,)

    @classmethod
    def count_for(cls, model: nn.Module, values: Mapping[str, Any], name: str) -> int:
        """The paper-way trainable count of this kind with ``values`` on ``model``, measured on a copy
        whose tensors live on the meta device (no memory, no change to ``model`` or the RNG)."""
        settings = cls.parse_settings({k: v for k, v in values.items() if k not in DESCRIPTIVE_KEYS}, name)
        with torch.random.fork_rng(devices=[]):
            clone = meta_copy(model)
            handle = cls(name, settings, clone, architecture(clone))
            handle.insert_layers()
            handle.mark_trainable()
            return handle.parameter_counts()["trainable_paper"]

    # ------------------------------------------------------------------ applying it
    def insert_layers(self) -> None:
        """Insert the kind's layers into ``self.model`` in place; fill ``adapted`` and ``weight_types``.

        Default: nothing (a kind that only chooses what trains, as BitFit). :meth:`wrap_linears`
        does the usual "replace each target ``nn.Linear`` by a wrapper" step.
        """

    def wrap_linears(self, targets: tuple[str, ...], build: Callable[[nn.Linear], nn.Module]) -> None:
        """Replace every target linear layer (weight types, e.g. ``("W_q", "W_v")``) by ``build(layer)``."""
        found = find_targets(self.model, self.arch, targets)
        self.weight_types.update(found)
        for name in found:
            self.replace_layer(name, build(self.model.get_submodule(name)))

    def replace_layer(self, name: str, layer: nn.Module) -> None:
        """Put the kind's ``layer`` in place of module ``name`` and record it in ``adapted``."""
        replace_module(self.model, name, layer)
        self.adapted[name] = layer

    def trains(self, param_name: str) -> bool:
        """Whether a parameter of the backbone (outside the task head) trains. Default: the kind's own
        parameters (those of its layers, the wrapped ``base_layer`` excluded)."""
        return param_name in self._owned

    def mark_trainable(self) -> None:
        """Freeze the backbone; train what :meth:`trains` says and, always, the task head."""
        self._owned = set(self.owned_parameter_names())
        for name, param in self.model.named_parameters():
            param.requires_grad_(name.startswith(self.arch.head_prefixes) or self.trains(name))

    # ------------------------------------------------------------------ the training loop
    def set_total_steps(self, total_steps: int) -> None:
        """T in optimiser steps, once the data loader is built (a schedule validates it here)."""
        self.total_steps = int(total_steps)

    def regularization_loss(self) -> torch.Tensor:
        """The penalty to add to the task loss; a 0-dim zero tensor where the method has none."""
        if self._zero is None:
            device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
            self._zero = torch.zeros((), device=device)
        return self._zero

    def step(self, global_step: int) -> int | None:
        """Called after ``optimizer.step()`` with the 0-based optimiser step; returns the budget it
        allocated (AdaLoRA's b(t)) or None where nothing is allocated (the default)."""
        return None

    def masks_at(self, global_step: int) -> bool:
        """Whether :meth:`step` may have changed the rank pattern at ``global_step``: the loop then reads
        :meth:`rank_pattern` and records it if it differs from the last record. Default True, so that
        any kind that reports ranks has its history recorded without more code (reading ``None`` costs
        nothing); a kind with a schedule says exactly when (AdaLoRA: its masking steps), which saves a
        host read on the other steps."""
        return True

    def optimizer_param_groups(self, weight_decay: float, lr: float) -> list[dict[str, Any]]:
        """Parameter groups for AdamW at base learning rate ``lr``. Default, the HF convention: no
        decay on biases and LayerNorm weights (Λ, ``lora_E``, *is* decayed). A kind may return groups
        with their own ``lr`` (LoRA+: B at a multiple of ``lr``) or ``weight_decay``; the scheduler
        scales every group's lr by the same factor."""
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name:
                no_decay.append(param)
            else:
                decay.append(param)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def outside_optimizer(self, groups: list[dict[str, Any]]) -> dict[str, nn.Parameter]:
        """Trainable parameters (by name) that ``groups`` (:meth:`optimizer_param_groups`) leave out: a kind
        that updates a parameter itself in :meth:`step` (a proximal step on a gate vector, as SoRA does)
        keeps it out of the optimiser but needs its gradient. Every loop builds its optimiser from the
        groups only and clears these gradients with the others' after :meth:`step`, so they never
        accumulate across steps."""
        grouped = {id(p) for group in groups for p in group["params"]}
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in grouped}

    def allocation(self) -> Allocation | None:
        """A rank-adaptive kind's evidence that its allocator ran (:class:`adalora.allocator.Allocation`:
        how often, whether its schedule says the ranks must have changed by T, and the likely cause if
        they did not). Every loop (the suite's, :class:`~adalora.integrations.hf.AdaLoRACallback`) checks it
        at the end with :func:`adalora.allocator.allocation_proof` and fails a run whose ranks stayed put.
        None (the default) for kinds whose ranks do not change."""
        return None

    def rank_pattern(self) -> dict[str, int] | None:
        """Rank per adapted matrix for kinds whose ranks change or are recorded (result ``ranks``);
        None by default."""
        return None

    def parameter_counts(self) -> dict[str, Any]:
        """The paper's accounting: ``trainable_paper`` = trainable parameters outside the task head
        (the head trains but is not counted) less :meth:`pruned_parameters`, plus the raw counts,
        ``adapted_matrices``, ``update_scale`` and the budget fields (``budget_target``,
        ``budget_gap`` relative, ``trainable_paper_start``)."""
        counts: dict[str, Any] = count_parameters(self.model, self.arch.head_prefixes)
        counts["trainable_paper"] -= self.pruned_parameters()
        return self._with_budget(counts)

    def pruned_parameters(self) -> int:
        """Trainable parameters of ranks the kind has pruned, which the paper's count leaves out. A
        rank-shrinking kind keeps training tensors of its initial size (a pruned rank may come back),
        so only the kind knows how many of them it keeps (AdaLoRA: ``(init_r - kept) · (d_in + d_out +
        1)`` per matrix). The budget rule and the record both count through this hook. Default 0."""
        return 0

    def update_scale(self) -> dict[str, Any] | None:
        """The factor the kind's update ΔW is multiplied by, and the rule that gives it (LoRA
        ``alpha/r``; AdaLoRA ``alpha/init_r``, fixed for the whole run however many triplets it keeps).
        Recorded per run (``params.update_scale``): two methods at one learning rate take steps of
        different size when their scales differ (docs/methods.md). None where there is no such factor."""
        return None

    def _with_budget(self, counts: dict[str, Any]) -> dict[str, Any]:
        counts["adapted_matrices"] = len(self.adapted)
        counts["update_scale"] = self.update_scale()
        target = self.budget_target
        counts["budget_target"] = target
        counts["budget_gap"] = None if not target else (counts["trainable_paper"] - target) / target
        counts["trainable_paper_start"] = self.trainable_paper_start
        return counts

    def state_dict(self) -> dict[str, Any]:
        """Method state beyond the weights that a resumed run needs (an allocator's EMAs); tensors and
        plain types only. Default: none."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ------------------------------------------------------------------ what it saves
    def owned_parameter_names(self) -> list[str]:
        """Parameters of the kind's own layers (everything in them but a wrapped ``base_layer``),
        trained or not (Prune-LoRA's fixed gates are saved too)."""
        names = []
        for module_name, module in self.adapted.items():
            for name, _ in module.named_parameters():
                if not name.startswith("base_layer."):
                    names.append(f"{module_name}.{name}")
        return names

    def trained_state(self, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """CPU copies of what training changed: the kind's own parameters and every trained one.

        ``model``: the module being trained if it is not ``self.model`` itself but the same one
        unwrapped by a launcher (its parameter names are ``self.model``'s).
        """
        owned = set(self.owned_parameter_names())
        return {n: p.detach().to("cpu", copy=True) for n, p in (self.model if model is None else model).named_parameters()
                if p.requires_grad or n in owned}

    def config(self) -> dict[str, Any]:
        """The resolved method config that rebuilds this method with :func:`apply_method`."""
        out = {"name": self.name, "kind": self.kind, **dataclasses.asdict(self.settings)}
        if self.module:
            out["module"] = self.module
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/method.safetensors``: the trained state, the method config and the base
        model's fingerprint; what inference needs (an allocator's EMAs are a checkpoint's business,
        :meth:`state_dict`). Returns the file."""
        tensors = self.trained_state()
        path = Path(directory) / SAVE_FILE
        meta = {"format": SAVE_FORMAT, "method": self.config(), "rank_pattern": rank_pattern_of(tensors), "total_steps": self.total_steps,
                "base_sha256": base_fingerprint(self.model, set(tensors))}
        self.write_trained_state(path, tensors, meta)
        return path

    def write_trained_state(self, path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
        """Write ``tensors`` (a :meth:`trained_state`, this model's or an earlier snapshot of it) with their
        metadata to ``path`` (:meth:`save`, and a run's ``weights/*.safetensors``). Default: one
        safetensors file; a kind with a format of its own writes that beside it (:meth:`load_trained_state`
        gets ``path`` back as ``source``)."""
        write_safetensors(path, tensors, metadata)

    @classmethod
    def load(cls, model: nn.Module, directory: str | Path) -> MethodHandle:
        """Apply the saved method to ``model`` (the same base, checked by fingerprint) and load its
        trained state; the handle's kind is the saved one, whichever class this is called on. The
        saved kind must be registered already (a ``module:`` in the file is refused, not imported:
        ``adalora.trust``; import your module first)."""
        from adalora.methods.registry import apply_method

        path = Path(directory) / SAVE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (write it with handle.save({str(directory)!r}))")
        tensors, meta = read_safetensors(path)
        if meta.get("format") != SAVE_FORMAT:
            raise ValueError(f"{path} is not a saved method (metadata format={meta.get('format')!r}, want {SAVE_FORMAT})")
        with reading(str(path)):  # a file's metadata is data: a module it names is never imported
            handle = apply_method(model, meta["method"])
        handle.load_trained_state(tensors, meta["base_sha256"], str(path))
        if meta.get("total_steps"):
            handle.set_total_steps(meta["total_steps"])
        handle.model.eval()
        return handle

    def load_trained_state(self, tensors: Mapping[str, torch.Tensor], fingerprint: str | None, source: str) -> None:
        """Load saved tensors into the applied model; refuse a base whose fingerprint differs."""
        result = self.model.load_state_dict(dict(tensors), strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{source} holds tensors the model lacks: {result.unexpected_keys[:5]}")
        if fingerprint is not None and base_fingerprint(self.model, set(tensors)) != fingerprint:
            raise ValueError(f"the base model differs from the one {source} was trained on (SHA-256 of the frozen "
                             "weights): another model, seed, transformers version or hub revision")

    # ------------------------------------------------------------------ export
    def export(self, directory: str | Path, format: str = "peft", base_model_name_or_path: str | None = None) -> Path:
        """Write the trained method for other stacks: ``peft`` (an adapter directory for
        ``PeftModel.from_pretrained``) or ``merged`` (a plain transformers checkpoint with ΔW folded
        in, written from a copy: this handle's model stays as it is)."""
        if format not in ("peft", "merged"):
            raise ExportError(f"format must be 'peft' or 'merged', got {format!r}")
        if format not in self.export_formats:
            raise ExportError(f"method {self.name!r} ({self.kind}) does not export as {format!r}; "
                              f"it exports as {list(self.export_formats) or 'nothing'}: save it with handle.save(dir)")
        out = Path(directory)
        if format == "merged":
            clone = copy.copy(self)
            clone.model = copy.deepcopy(self.model)
            clone.adapted = {n: clone.model.get_submodule(n) for n in self.adapted}
            clone.merged_model().save_pretrained(out)
            return out
        config, tensors = self.peft_adapter(peft_task_type(self.model))
        config["base_model_name_or_path"] = base_model_name_or_path
        write_peft_adapter(out, config, tensors)
        return out

    def head_modules(self) -> list[str]:
        """The task head's top-level modules present in the model (PEFT's ``modules_to_save``)."""
        modules = dict(self.model.named_modules())
        return [p.rstrip(".") for p in self.arch.head_prefixes if p.rstrip(".") in modules]

    def head_tensors(self, heads: list[str]) -> dict[str, torch.Tensor]:
        """The trained task head under PEFT's names; any other trained tensor cannot go into PEFT."""
        owned = set(self.owned_parameter_names())
        out = {}
        for name, param in self.model.named_parameters():
            if name in owned or not param.requires_grad:
                continue
            if not any(name.startswith(h + ".") for h in heads):
                raise ExportError(f"trained parameter {name} is neither the method's nor the task head's; "
                                  "a PEFT adapter cannot hold it")
            out[PEFT_PREFIX + name] = param.detach().clone()
        return out

    def peft_adapter(self, task_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(adapter_config, adapter state dict) in PEFT's format, for kinds with ``"peft"`` in
        ``export_formats``; ``base_model_name_or_path`` is filled in by the caller."""
        raise ExportError(f"method {self.name!r} ({self.kind}) has no PEFT form")

    def peft_base_config(self, task_type: str, heads: list[str]) -> dict[str, Any]:
        """The keys every PEFT LoRA-family adapter config shares."""
        return {"task_type": task_type, "target_modules": sorted(self.adapted), "modules_to_save": heads or None,
                "lora_alpha": self.settings.alpha, "lora_dropout": 0.0, "bias": "none",
                "fan_in_fan_out": any(getattr(m, "fan_in_fan_out", False) for m in self.adapted.values()),
                "init_lora_weights": True, "inference_mode": True}

    def merged_model(self) -> nn.Module:
        """``self.model`` with each adapted layer's ΔW (``delta_weight()``) folded into its base layer,
        in place: plain transformers modules, every parameter trainable again."""
        with torch.no_grad():
            for name, module in self.adapted.items():
                base = module.base_layer
                base.weight.add_(module.delta_weight().to(base.weight.dtype))
                replace_module(self.model, name, base)
        for param in self.model.parameters():
            param.requires_grad_(True)
        return self.model


# Method config keys that describe a method rather than configure it (never settings fields).
DESCRIPTIVE_KEYS = frozenset({"name", "kind", "label", "description", "module"})


def architecture(model: nn.Module) -> Architecture:
    from adalora.architectures import architecture_of

    return architecture_of(model)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are meta tensors (no storage)."""
    memo: dict[int, Any] = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device="meta")
    return copy.deepcopy(model, memo)


def peft_task_type(model: nn.Module) -> str:
    """PEFT's task type of a transformers model (or of the one inside a ``PeftModel``), from its class name."""
    cls = type(model.get_base_model() if hasattr(model, "get_base_model") else model).__name__
    for suffix, task_type in PEFT_TASK_TYPES.items():
        if cls.endswith(suffix):
            return task_type
    raise ExportError(f"no PEFT task type for {cls}; known model heads: {sorted(PEFT_TASK_TYPES)}")


def write_peft_adapter(out: Path, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """``adapter_config.json`` + ``adapter_model.safetensors``, PEFT's adapter directory."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")


__all__ = ["DESCRIPTIVE_KEYS", "PEFT_PREFIX", "ExportError", "MethodConfigError", "MethodHandle", "NoSettings",
           "meta_copy", "peft_task_type", "write_peft_adapter"]
