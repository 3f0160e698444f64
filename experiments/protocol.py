"""``protocol=paper|heldout``: which split chooses the reported checkpoint, and what a run reports.

- ``paper`` (the default, the paper's own protocol): the model is evaluated on the dev split
  during training; ``metrics.best`` is the best of those evaluations and ``metrics.final`` the
  last. Dev both selects and reports.
- ``heldout`` (Chen et al., EMNLP 2022): a validation split carved from the training split
  (``task.heldout``, ``experiments.tasks.heldout``) is evaluated during training and chooses the
  checkpoint (the trainer's best-weights snapshot); the dev split is evaluated once at that
  checkpoint (``metrics.best``) and once at the end (``metrics.final``). The validation
  evaluations are kept as ``metrics.validation_evals``.

The protocol is part of a run's identity only when it is not the default, so a paper run's
identity (and every finished paper run) is what it was before protocols existed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from experiments.tasks.heldout import HeldoutSpec
from experiments.training import eval_score

DEFAULT_PROTOCOL = "paper"
Evaluate = Callable[[Any], dict[str, float]]


def best_eval(evals: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The evaluation with the highest ``metric``; NaN or missing values never win.

    (:func:`eval_score`, shared with the trainer's best-weights snapshot.) All NaN: the first
    evaluation.
    """
    return max(evals, key=lambda e: eval_score(e, metric))


class Protocol:
    """The paper's protocol; :class:`Heldout` overrides what differs."""

    name = "paper"
    selection_split = "dev"

    def check(self, task_cfg: Mapping[str, Any]) -> None:
        """Raise ValueError, naming the key, if the task config cannot run under this protocol."""

    def prepare(self, task) -> None:
        """Set up the task's splits before its data is loaded."""

    def evaluators(self, task, tokenizer, batch_size: int, device) -> tuple[Evaluate, Evaluate | None]:
        """(what the trainer evaluates during training and selects on, the dev evaluator for the
        trainer's report at the selected and final steps or None)."""
        return _dev(task, tokenizer, batch_size, device), None

    def metrics(self, trainer, main_metric: str) -> dict[str, Any]:
        """The record's ``metrics`` block from a finished trainer."""
        evals = trainer.state.evals
        return {"evals": evals, "best": best_eval(evals, main_metric), "final": evals[-1],
                "main_metric": main_metric, "selection_split": self.selection_split}


class Heldout(Protocol):
    """Select on the validation split carved from train; report dev at the selected and final steps."""

    name = "heldout"
    selection_split = "validation"

    def check(self, task_cfg: Mapping[str, Any]) -> None:
        HeldoutSpec.from_config(task_cfg.get("heldout"), str(task_cfg.get("name")))

    def prepare(self, task) -> None:
        task.hold_out()

    def evaluators(self, task, tokenizer, batch_size: int, device) -> tuple[Evaluate, Evaluate | None]:
        def validation(model) -> dict[str, float]:
            return task.evaluate_heldout(model, tokenizer, batch_size, device)

        return validation, _dev(task, tokenizer, batch_size, device)

    def metrics(self, trainer, main_metric: str) -> dict[str, Any]:
        reported = trainer.reported
        dev = {e["step"]: e for e in (reported["selected"], reported["final"])}
        return {"evals": [dev[step] for step in sorted(dev)], "best": reported["selected"],
                "final": reported["final"], "main_metric": main_metric, "selection_split": self.selection_split,
                "validation_evals": trainer.state.evals}


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (Protocol(), Heldout())}


def get_protocol(name: str | None) -> Protocol:
    """The protocol called ``name`` (None: the default); an unknown one is a ValueError naming the key."""
    key = DEFAULT_PROTOCOL if name is None else name
    if key not in PROTOCOLS:
        raise ValueError(f"protocol={name!r} is unknown; use one of {sorted(PROTOCOLS)} (protocol=heldout)")
    return PROTOCOLS[key]


HELDOUT_ONLY_TASK_KEYS = frozenset({"heldout", "heldout_eval"})  # read by protocol=heldout only


def identity_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without the keys the default protocol ignores (``protocol`` itself, and the task keys
    that only say how a held-out slice is carved and scored: ``task.heldout``, ``task.heldout_eval``), so a
    paper run hashes as it did before protocols existed; under another protocol, unchanged."""
    if config.get("protocol") not in (None, DEFAULT_PROTOCOL):
        return dict(config)
    out = {k: v for k, v in config.items() if k != "protocol"}
    task = out.get("task")
    if isinstance(task, Mapping) and HELDOUT_ONLY_TASK_KEYS & set(task):
        out["task"] = {k: v for k, v in task.items() if k not in HELDOUT_ONLY_TASK_KEYS}
    return out


def selection_eval(metrics: Mapping[str, Any], which: str) -> Mapping[str, Any]:
    """The evaluation a later choice (the lr search) may score a run by, ``which`` = best | final.

    Under the paper's protocol, dev's (``metrics[which]``). Under a held-out protocol, the
    validation evaluation at the selected step (best) or the last one (final): dev stays out of
    every choice.
    """
    validation = metrics.get("validation_evals")
    if metrics.get("selection_split", "dev") == "dev" or not validation:
        return metrics.get(which) or {}
    if which == "final":
        return validation[-1]
    step = (metrics.get("best") or {}).get("step")
    return next((e for e in validation if e.get("step") == step), {})


def _dev(task, tokenizer, batch_size: int, device) -> Evaluate:
    def dev(model) -> dict[str, float]:
        return task.evaluate(model, tokenizer, batch_size, device)

    return dev
