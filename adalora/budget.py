"""Parameter budgets: the paper's budget levels as data, its way of counting, and the count rule.

A budget level is a parameter count: :func:`budget_target` is LoRA at the level's ``lora_r`` on
the level's target set of the actual backbone: every projection (the paper's six weight types and
their counterparts, ``targets: all``), or a named subset such as PEFT's default ``qv`` (W_q and W_v
only), which every method of the run then adapts (:func:`level_settings`), so the methods stay
matched on the matrices they train. A method reaches it through its own size knob
(:func:`closest_knob`: the knob value whose count is closest, ties to the smaller). The paper's
methods keep the paper's knob values where the paper states them (the columns of
:class:`BudgetLevel`); docs/methods.md lists where those differ from the count rule.

The paper reports *adapter* parameters only: the task head (pooler + classifier, or the QA
head) is trained by every method but never counted, full fine-tuning counts the whole
model, and AdaLoRA counts the triplets it keeps at the end. ``count_parameters`` does this
once for every method, so the comparisons at "equal budget" share one accounting.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from adalora.architectures import architecture_of, target_width

# The largest knob value the count rule tries before it gives up (a knob that never reaches the target).
MAX_KNOB = 4096


@dataclass(frozen=True)
class BudgetLevel:
    """One budget level: "LoRA at rank ``lora_r`` on the backbone's full target set", as data.

    A level is a ``conf/budget/<name>.yaml`` (the Hydra group ``budget``); :meth:`from_config` builds it
    from that mapping, so a new level, or a level for a new backbone, is one yaml file and no Python.
    Its parameter target is measured on the real model (:func:`budget_target`); each method reaches it
    through its own size knob. The per-method columns are the paper's knob values where the paper
    states them (cited in each yaml); ``None`` marks a method the paper never runs at that level
    (e.g. adapters on NLG). A level that states no AdaLoRA knobs gets ``target_r = lora_r`` and the
    paper's ``b(0) = 1.5 b(T)`` rule, rounded up, for ``init_r``.
    """

    name: str
    family: str
    label: str
    lora_r: int
    adalora_target_r: int
    adalora_init_r: int
    houlsby_bottleneck: int | None = None
    pfeiffer_bottleneck: int | None = None
    targets: str = "all"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> BudgetLevel:
        """The level of a budget config (``cfg.budget``, or a parsed ``conf/budget/*.yaml``).

        Unknown keys are refused naming the nearest valid one; every value is type-checked, so a
        typo in a yaml never silently falls back to a default.
        """
        where = f"budget {cfg.get('name', '<unnamed>')!r}"
        known = [f.name for f in fields(cls)]
        for key in cfg:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ValueError(f"{where}: unknown key {key!r}; {hint}valid keys: {known}")
        values = dict(cfg)
        missing = [k for k in ("name", "family", "lora_r") if values.get(k) is None]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing} (a level is at least name, family and lora_r)")
        values.setdefault("label", f"r={values['lora_r']}")
        values.setdefault("targets", "all")
        if values["targets"] not in TARGET_SETS:
            raise ValueError(f"{where}: targets must be one of {sorted(TARGET_SETS)}, got {values['targets']!r}")
        values.setdefault("adalora_target_r", values["lora_r"])
        if values.get("adalora_init_r") is None:
            values["adalora_init_r"] = math.ceil(1.5 * values["adalora_target_r"])
        for key in known:
            value = values.get(key)
            if key in _INT_KEYS and not (value is None and key in _OPTIONAL_KEYS):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
            elif key not in _INT_KEYS and not isinstance(value, str):
                raise ValueError(f"{where}: {key} must be a string, got {value!r}")
        return cls(**{k: values.get(k) for k in known})


#: A level's ``targets``: the weight types its target is measured on and its methods adapt. ``all``: every
#: projection of the backbone (its architecture's weight types); ``qv``: W_q and W_v only, PEFT's default
#: ``target_modules`` for Llama, Qwen, Gemma and Mistral (q_proj, v_proj; GPT-2's fused c_attn).
TARGET_SETS: dict[str, tuple[str, ...] | None] = {"all": None, "qv": ("W_q", "W_v")}
_INT_KEYS = frozenset({"lora_r", "adalora_target_r", "adalora_init_r", "houlsby_bottleneck", "pfeiffer_bottleneck"})
_OPTIONAL_KEYS = frozenset({"houlsby_bottleneck", "pfeiffer_bottleneck"})
# The suite's own levels: conf/budget/*.yaml of the checkout (the only copy of their values).
SHIPPED_BUDGET_DIR = Path(__file__).resolve().parents[1] / "conf" / "budget"
_NO_LEVEL = "none"  # conf/budget/none.yaml: the "budget" of methods without a size knob


def parse_flat_yaml(text: str, source: str) -> dict[str, Any]:
    """A flat YAML mapping of scalars (``key: value`` lines, ``#`` comments), the subset a budget
    yaml uses; anything else is refused naming the line. ``adalora/`` imports torch only, so it
    cannot use PyYAML; ``tests/test_budget_levels.py`` checks that this reads every shipped file
    exactly as PyYAML (Hydra) does."""
    out: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        body = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not body:
            continue
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*):\s+(\S(?:.*\S)?)", body)
        if match is None:
            raise ValueError(f"{source}, line {number}: expected `key: value` (a flat mapping of scalars), got {body!r}")
        value = _scalar(match.group(2))
        if value is _UNSUPPORTED:
            raise ValueError(f"{source}, line {number}: {match.group(2)!r} is not an integer, null or a plain or "
                             "quoted string (the only values a budget yaml holds)")
        out[match.group(1)] = value
    return out


_UNSUPPORTED = object()
_YAML_WORDS = re.compile(r"(?i)true|false|yes|no|on|off|[-+]?(\.[0-9]+|[0-9]+\.[0-9]*)([eE][-+]?[0-9]+)?|\.inf|\.nan")


def _scalar(text: str) -> Any:
    """An integer, null, a quoted string or a plain string; :data:`_UNSUPPORTED` for what YAML would
    read otherwise (floats, booleans, flow collections, anchors, tags, block scalars)."""
    if text in ("null", "~"):
        return None
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and text[0] not in text[1:-1]:
        return text[1:-1]
    if _YAML_WORDS.fullmatch(text) or text[0] in "{[&*!|>%@`'\"" or ": " in text:
        return _UNSUPPORTED
    return text


class _ShippedLevels(Mapping[str, BudgetLevel]):
    """The suite's levels by name, read from :data:`SHIPPED_BUDGET_DIR` on first use.

    Kept for the callers that name a shipped level (``get_budget("glue_0.3m")``: tests, benchmarks,
    notebooks); a run builds its level from its own budget config (:meth:`BudgetLevel.from_config`).
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._levels: dict[str, BudgetLevel] | None = None

    def _load(self) -> dict[str, BudgetLevel]:
        if self._levels is None:
            levels = {}
            for path in sorted(self._directory.glob("*.yaml")):
                values = parse_flat_yaml(path.read_text(encoding="utf-8"), str(path))
                if values.get("name") != _NO_LEVEL:
                    levels[path.stem] = BudgetLevel.from_config(values)
            self._levels = levels
        return self._levels

    def __getitem__(self, name: str) -> BudgetLevel:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


BUDGET_LEVELS: Mapping[str, BudgetLevel] = _ShippedLevels(SHIPPED_BUDGET_DIR)


def get_budget(name: str) -> BudgetLevel:
    """A shipped level by name (``conf/budget/<name>.yaml``)."""
    try:
        return BUDGET_LEVELS[name]
    except KeyError:
        raise ValueError(f"unknown budget level {name!r}; known: {sorted(BUDGET_LEVELS)} "
                         f"(a level of your own: a budget/<name>.yaml on hydra.searchpath)") from None


def budget_target(model: nn.Module, level: BudgetLevel) -> int:
    """The level's trainable-parameter target on ``model``: LoRA at rank ``level.lora_r`` on the
    level's target set (``all``: the backbone's full set, the paper's six weight types on its
    backbones), ``lora_r · Σ (d_in + d_out)``. Call it on the model before a method is applied."""
    arch = architecture_of(model)
    return level.lora_r * target_width(model, arch, TARGET_SETS[level.targets] or arch.weight_types)


def level_settings(level: BudgetLevel, values: Mapping[str, Any], setting_names: Iterable[str],
                   method: str) -> dict[str, Any]:
    """The method settings a level's target set imposes: ``{"targets": (...)}`` for a level on a subset
    (``qv``), nothing for ``all`` (each kind's own default, every projection).

    The budget is measured on those targets, so a method sized by the level must adapt exactly them: a
    kind without a ``targets`` setting, or a method that names other targets itself (``lora_qk``), is
    refused rather than compared at a budget measured on matrices it does not train.
    """
    chosen = TARGET_SETS[level.targets]
    if chosen is None:
        return {}
    if "targets" not in set(setting_names):
        raise ValueError(f"budget {level.name!r} (targets: {level.targets}) sizes methods on {list(chosen)} only, "
                         f"but method {method!r} has no targets setting; use a level with targets: all")
    given = values.get("targets")
    if given is not None and tuple(given) != chosen:
        raise ValueError(f"method {method!r} sets targets {list(given)} but budget {level.name!r} is measured on "
                         f"{list(chosen)} (targets: {level.targets}); drop method.targets or use a level with targets: all")
    return {"targets": chosen}


def closest_knob(count: Callable[[int], int], target: int, limit: int = MAX_KNOB) -> int:
    """The knob value 1, 2, ... whose ``count`` is closest to ``target``, ties to the smaller count
    (and, among equal counts, to the smaller knob).

    ``count`` must grow with the knob (a rank, a bottleneck width), so the answer is the first knob
    whose count reaches the target or the first knob of the count just below it, and both are found
    by bisection: a count may build a whole (meta-device) model, and a 7B decoder at rank 32 took 33
    builds one knob at a time where bisection takes about a dozen.
    """
    counts: dict[int, int] = {}

    def at(knob: int) -> int:
        if knob not in counts:
            counts[knob] = count(knob)
        return counts[knob]

    def first_reaching(value: int, lo: int, hi: int) -> int:
        """The smallest knob in ``[lo, hi]`` whose count is >= ``value`` (given ``at(hi) >= value``)."""
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if at(mid) >= value else (mid + 1, hi)
        return lo

    hi = 1
    while at(hi) < target and hi < limit:  # doubling: an upper end without counting every knob below it
        hi = min(2 * hi, limit)
    if at(hi) < target:
        raise ValueError(f"no knob value up to {limit} reaches the budget target of {target} parameters")
    reach = first_reaching(target, hi // 2 + 1 if hi > 1 else 1, hi)
    if reach == 1:
        return 1
    under = at(reach - 1)  # the count just below the target: its first knob, above any knob counted lower
    below = first_reaching(under, 1 + max((k for k, c in counts.items() if c < under), default=0), reach - 1)
    return below if (target - at(below), at(below)) < (at(reach) - target, at(reach)) else reach


def count_parameters(model: nn.Module, head_prefixes: Iterable[str]) -> dict[str, int]:
    """Trainable parameters the paper's way, plus the raw counts for reference.

    ``trainable_paper`` = trainable parameters outside the task head. A kind that keeps fewer
    ranks than it trains (AdaLoRA's pruned triplets) subtracts them through its own
    ``MethodHandle.pruned_parameters()`` hook: this function knows no kind.
    """
    heads = tuple(head_prefixes)
    total = trainable = head = 0
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # tied weights (BART's lm_head) count once
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            if name.startswith(heads):
                head += param.numel()
    return {"trainable_paper": trainable - head, "trainable_total": trainable, "head": head, "total": total}
