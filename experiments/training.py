"""The training loop shared by every method and task (accelerate for devices and DDP).

Per optimiser step, in the official code's order (DESIGN §3):
backward(task loss + γ·R) → clip → optimizer.step → scheduler.step →
method.step(global_step) (AdaLoRA's allocator) → zero_grad (the optimiser's, and the gradients of
parameters a kind keeps out of it), then one host read (the loss, and the divergence check on the
loss and on the gradient norm before clipping, together), the step's only wait for the device apart
from the rank pattern after an AdaLoRA mask.

A run is judged after its last step too: every trained parameter finite, every evaluation's logits
finite (else :class:`Diverged` with the step), and a rank-adaptive kind's proof that it allocated
(``MethodHandle.allocation``; ``adalora.allocator.AllocationNotRun`` where its ranks had to change
and did not).

Checkpoints hold everything a resumed run needs to continue *exactly*: trainable weights,
optimiser and scheduler state, the allocator's EMAs and masks, RNG states and the position
inside the epoch, all as tensors and plain types, so that they load with ``weights_only=True``:
a planted ``checkpoint.pt`` cannot run code (one that needs more is refused and moved aside). The data order of an epoch is a pure function of (seed, epoch), so a
resumed run skips the batches it already saw and sees the same ones after them.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from adalora.allocator import allocation_proof
from adalora.atomic import NoSpaceLeft
from adalora.methods import MethodHandle
from adalora.optim import make_adamw
from experiments import interrupts
from experiments.interrupts import Interrupted
from experiments.models import enable_gradient_checkpointing
from experiments.precision import check_precision, make_accelerator
from experiments.results import move_aside, replacing
from experiments.seeding import set_seed as set_seed  # re-exported: its home was here (weights uses it too)
from experiments.weights import saves_weights, trained_state

CHECKPOINT_FILE = "checkpoint.pt"


def eval_score(record: Mapping[str, Any], metric: str) -> float:
    """An evaluation's ``metric`` for choosing the best one: a NaN or missing value ranks below any
    number, so it never wins (``max`` with NaN keys would keep a NaN first evaluation)."""
    value = record.get(metric)
    return -math.inf if value is None or math.isnan(value) else value


class Diverged(RuntimeError):
    """Training became numerically invalid: a NaN or infinite loss, gradient norm (before clipping),
    parameter after the last step or evaluation output. The run stops with status ``diverged``;
    ``step`` is the optimiser step it was seen at (also in the message)."""

    def __init__(self, what: str, step: int):
        super().__init__(f"{what} at step {step}")
        self.step = step


LR_SCHEDULES = ("linear", "cosine")  # after warm-up: decay to 0 along a line / half a cosine


@dataclass(frozen=True)
class Range:
    """The values a ``TrainSettings`` field accepts, declared on the field (``metadata={"range": ...}``) so the
    rule sits where the field is. Checked before any model is built: without it ``max_steps=0`` silently fell
    back to epochs, ``epochs=0`` trained one step and reported success, ``batch_size=0`` ended in a
    ZeroDivisionError after the model was loaded."""

    accepts: Callable[[Any], bool]
    expected: str  # completes "trainer.<key>=<value>: ..."
    optional: bool = False  # None is accepted too
    unused_when_set: str | None = None  # a field that, when set, makes this one irrelevant (max_steps for epochs)


def is_int(value: Any) -> bool:
    """An int that is not a bool (``True`` is an int to Python, never a step count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ranged(accepts: Callable[[Any], bool], expected: str, **kwargs: Any) -> dict[str, Range]:
    return {"range": Range(accepts, expected, **kwargs)}


def _positive_int(value: Any) -> bool:
    return is_int(value) and value >= 1


def _at_least_zero(value: Any) -> bool:
    return _is_number(value) and value >= 0


_POSITIVE_INT = "must be a positive integer"


@dataclass
class TrainSettings:
    """Optimisation settings; ``None`` for max_grad_norm turns clipping off (NLG scripts). Each checked field
    declares its range (:class:`Range`); :meth:`range_problems` lists the values outside it."""

    lr: float = field(metadata=_ranged(lambda v: _is_number(v) and v > 0, "must be a finite number > 0"))
    batch_size: int = field(metadata=_ranged(_positive_int, _POSITIVE_INT))
    epochs: float = field(default=1.0, metadata=_ranged(lambda v: _is_number(v) and v > 0, "must be a number > 0 "
                                                        "(or set trainer.max_steps)", unused_when_set="max_steps"))
    max_steps: int | None = field(default=None, metadata=_ranged(
        _positive_int, f"{_POSITIVE_INT} (null trains for trainer.epochs instead)", optional=True))
    eval_batch_size: int = field(default=64, metadata=_ranged(_positive_int, _POSITIVE_INT))
    warmup_steps: int = field(default=0, metadata=_ranged(lambda v: is_int(v) and v >= 0,
                                                          "must be an integer >= 0"))
    warmup_ratio: float = field(default=0.0, metadata=_ranged(lambda v: _is_number(v) and 0 <= v < 1,
                                                              "must be a number in [0, 1)"))
    weight_decay: float = field(default=0.0, metadata=_ranged(_at_least_zero, "must be a number >= 0"))
    max_grad_norm: float | None = field(default=1.0, metadata=_ranged(
        _at_least_zero, "must be a number >= 0 (0 or null: no clipping)", optional=True))
    grad_accum: int = field(default=1, metadata=_ranged(_positive_int, _POSITIVE_INT))
    adam_eps: float = field(default=1e-8, metadata=_ranged(lambda v: _is_number(v) and v > 0, "must be a number > 0"))
    eval_every: int | None = field(default=None, metadata=_ranged(_positive_int, f"{_POSITIVE_INT} or null",
                                                                  optional=True))
    # None: checkpoint whenever it evaluates (eval_every)
    checkpoint_every: int | None = field(default=None, metadata=_ranged(_positive_int, f"{_POSITIVE_INT} or null",
                                                                        optional=True))
    keep_checkpoint: bool = False  # keep checkpoint.pt after success (it holds optimiser state: GBs for full FT)
    log_every: int = field(default=50, metadata=_ranged(_positive_int, _POSITIVE_INT))
    progress: bool = True
    save_model: bool | None = None  # keep the trained weights: None = small methods only (not full FT)
    save_best: bool = True  # also keep the best evaluation's weights when best != final
    precision: str = "fp32"  # fp32 | bf16 | fp16: accelerate's autocast mixed precision (the official scripts: fp32)
    tf32: bool = False  # TF32 matmuls on Ampere+ GPUs (PyTorch's own default is off for matmuls)
    # Recompute each block's activations in the backward pass (experiments.models.enable_gradient_checkpointing):
    # memory for time. Equal in exact arithmetic (the recompute replays the forward with its RNG state), but a
    # recomputed kernel may round differently on some devices, so it stays in the identity: "result" True.
    gradient_checkpointing: bool = field(default=False, metadata={
        "result": True, **_ranged(lambda v: isinstance(v, bool), "must be true or false")})
    # The learning-rate decay after warm-up: linear to 0 (the official AdaLoRA and LoRA scripts, every paper sweep)
    # or cosine to 0 (PEFT's method comparison, conf/sweep/peft_compare.yaml); transformers.get_scheduler's names.
    lr_schedule: str = field(default="linear", metadata=_ranged(lambda v: v in LR_SCHEDULES,
                                                                "must be one of " + ", ".join(LR_SCHEDULES)))

    def __post_init__(self) -> None:
        check_precision(self.precision)

    def range_problems(self) -> list[str]:
        """Every value outside its field's declared range, as ``trainer.<key>=<value>: <what it must be>``
        (empty when all are in range), so one error lists them all."""
        problems = []
        for f in fields(self):
            rule: Range | None = f.metadata.get("range")
            value = getattr(self, f.name)
            if rule is None or (rule.optional and value is None):
                continue
            if rule.unused_when_set and getattr(self, rule.unused_when_set) is not None:
                continue
            if not rule.accepts(value):
                problems.append(f"trainer.{f.name}={value!r}: {rule.expected}")
        return problems


@dataclass
class TrainState:
    """Everything that changes during training and must survive a restart."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    evals: list[dict[str, Any]] = field(default_factory=list)
    rank_history: list[dict[str, Any]] = field(default_factory=list)
    train_loss: float | None = None
    elapsed_s: float = 0.0
    step_times_s: list[float] = field(default_factory=list)  # wall time per optimiser step, evaluation excluded
    allocation: dict[str, Any] | None = None  # a rank-adaptive run's proof that it allocated (adalora.allocator)

    def step_time_summary(self) -> dict[str, float | int | None]:
        """Median and mean seconds per optimiser step; the median is the one to compare (Table 15)."""
        times = self.step_times_s
        if not times:
            return {"median": None, "mean": None, "steps": 0}
        return {"median": statistics.median(times), "mean": statistics.fmean(times), "steps": len(times)}


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)|Unsupported operand (\S+)")


def _read_checkpoint(path: Path, move: bool, mmap: bool = False) -> dict[str, Any] | None:
    """The payload of ``path``, loaded with ``weights_only=True``: tensors and plain types only, so
    nothing in the file is executed. A file that needs more (a pickled object: written by hand, by
    another program, or planted) is refused; an unreadable one is corrupt. Either is reported and,
    if ``move``, moved aside, and the run trains from step 0."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - truncated zip, refused pickle, I/O error: all mean unusable
        unsafe = _UNSAFE_GLOBAL.search(str(err))
        why = "refused" if unsafe else "corrupt"
        problem = (f"needs {next(g for g in unsafe.groups() if g)}, more than tensors and plain types; it was not "
                   "loaded and nothing in it ran" if unsafe else f"cannot be read ({type(err).__name__}: {err})")
        if move:
            moved = move_aside(path, why)
            print(f"[{why}] {path} {problem}; moved to {moved.name}, training from step 0", flush=True)
        return None
    return payload if isinstance(payload, dict) else {}


def checkpoint_identity(path: Path, move: bool = True) -> tuple[bool, dict[str, Any] | None]:
    """(whether ``path`` holds a usable checkpoint, the identity stored in it).

    Read memory-mapped, so checking a multi-GB checkpoint before building the model is cheap; an
    unusable one is reported as absent (and moved aside if ``move``).
    """
    if not path.exists():
        return False, None
    payload = _read_checkpoint(path, move, mmap=True)
    return payload is not None, None if payload is None else payload.get("identity")


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays as tensors and numpy scalars as Python numbers (metrics may be
    numpy floats): what ``weights_only=True`` loads without allow-listing anything."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain types (numpy's MT19937 key as an int64 tensor)."""
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "python": list(random.getstate()),
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(rng: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    state = rng["numpy"]
    np.random.set_state(("MT19937", state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["gauss"]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def total_optimizer_steps(batches_per_epoch: int, settings: TrainSettings) -> int:
    """T in optimiser steps (after DDP sharding and gradient accumulation)."""
    if settings.max_steps:
        return settings.max_steps
    per_epoch = math.ceil(batches_per_epoch / settings.grad_accum)
    return max(1, math.ceil(per_epoch * settings.epochs))


def _on_any_rank(accelerator: Accelerator, nonfinite: torch.Tensor) -> torch.Tensor:
    """The step's non-finite flag summed over data-parallel ranks: 0 where every rank's loss was
    finite, NaN or ±inf where any rank's was (0 + x stays x; inf + -inf is NaN).

    Under DDP the ranks share averaged gradients, so a NaN on one rank reaches every rank's weights
    in the same step, but only that rank's loss shows it then. If that rank stopped alone, the
    others would wait in their next collective for a process that has left (a hang until the
    backend times out, and the run's ``diverged`` record lost). Every rank stops at the same step
    instead; the sum is one more small all-reduce per step, enqueued with the step's work, read in
    the step's one host read.
    """
    return accelerator.reduce(nonfinite, reduction="sum") if accelerator.num_processes > 1 else nonfinite


def _keep_nonfinite(kept: torch.Tensor | None, total: torch.Tensor) -> torch.Tensor:
    """``kept`` (0 at a step's first micro-batch), replaced by ``total`` if that is NaN or ±inf and
    ``kept`` is still finite: the step's first non-finite loss, on the device.

    Checking ``torch.isfinite(total)`` on the host would wait for the forward pass to finish before
    the backward could be enqueued, a second host-device synchronisation per step besides the
    loss read that ends it; the loop reads this value with the loss instead, after the optimiser
    step. A diverged run then takes that one (NaN) update before it stops, which changes nothing:
    it records ``diverged`` and keeps no weights.
    """
    if kept is None:
        kept = total.new_zeros((), dtype=torch.float32)
    return torch.where(torch.isfinite(kept) & ~torch.isfinite(total), total.detach().float(), kept)


def _mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path``: the disk a full-disk error names."""
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


class _PythonWrites:
    """A file for ``torch.save`` whose writes are Python calls that keep the first OS error (``ENOSPC``):
    torch reports a failed write only as ``enforce fail at inline_container.cc`` (given a path, or when
    its writer closes after the error), which names neither the file nor the cause."""

    def __init__(self, fh: Any):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self._fh.flush()


def _save_torch(payload: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically; a full disk is :class:`NoSpaceLeft` naming the file and the disk."""
    try:
        with replacing(path) as tmp, open(tmp, "wb") as fh:
            writer = _PythonWrites(fh)
            try:
                torch.save(payload, writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None  # the OS's reason, not torch's report of it
    except NoSpaceLeft as err:
        raise NoSpaceLeft(err.errno, f"{err.strerror} (the disk mounted at {_mount_point(path.parent)}): free space "
                          "there, or set output_root to another disk") from err


@contextlib.contextmanager
def _finite_outputs(model: torch.nn.Module, step: int) -> Iterator[None]:
    """Watch every forward call of ``model`` inside the block (evaluation, generation's steps included):
    a NaN or infinite ``*logits`` output raises :class:`Diverged` after the block. The flags stay on
    the device and are read once, so evaluation gains one host read, not one per batch. A model whose
    loss is finite can still output NaN logits (weights that overflow only in the last update)."""
    flags: list[torch.Tensor] = []

    def watch(module, args, output) -> None:
        items = output.items() if isinstance(output, Mapping) else ()
        flags.extend(~torch.isfinite(t).all() for k, t in items if "logits" in k and isinstance(t, torch.Tensor))

    handle = model.register_forward_hook(watch)
    try:
        yield
    finally:
        handle.remove()
    if flags and bool(torch.stack(flags).any()):
        raise Diverged("the evaluation's outputs (logits) are NaN or infinite", step)


class EpochBatches(torch.utils.data.Sampler[list[int]]):
    """Shuffled batches whose order depends only on (seed, epoch): resumable by skipping."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        for start in range(0, self.n, self.batch_size):
            yield order[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


class Trainer:
    """Trains one adapted model on one task; see the module docstring for the step order."""

    def __init__(
        self,
        model: torch.nn.Module,
        handle: MethodHandle,
        train_dataset,
        collator: Callable,
        settings: TrainSettings,
        seed: int,
        evaluate: Callable[[torch.nn.Module], dict[str, float]],
        main_metric: str,
        checkpoint_dir: str | os.PathLike | None = None,
        accelerator: Accelerator | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
        identity: dict[str, Any] | None = None,
        report: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    ):
        """``evaluate`` is what training evaluates and selects the best snapshot on. ``report``
        (``protocol=heldout``: the dev evaluator, ``evaluate`` then being the validation split's)
        is run only at the end, on the final weights and on the selected snapshot's
        (:attr:`reported`), so the reported split never takes part in the choice."""
        self.accelerator = accelerator or make_accelerator(settings.grad_accum, settings.precision, settings.tf32)
        self.settings = settings
        self.seed = seed
        self.handle = handle
        self.dataset = train_dataset
        self.collator = collator
        self.evaluate_fn = evaluate
        self.report_fn = report
        self.reported: dict[str, dict[str, Any]] | None = None  # {"selected", "final"} evaluations of report
        self.main_metric = main_metric
        self.on_log = on_log
        self.identity = identity  # stored in checkpoints: the runner resumes only the same configuration
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
        if settings.gradient_checkpointing:  # before DDP wraps the model (docs/llm.md, "Gradient checkpointing")
            enable_gradient_checkpointing(model)
        self.model = self.accelerator.prepare_model(model)
        batches = len(self._loader(0))
        self.total_steps = total_optimizer_steps(batches, settings)
        handle.set_total_steps(self.total_steps)
        groups = handle.optimizer_param_groups(settings.weight_decay, settings.lr)
        self.optimizer = make_adamw(groups, lr=settings.lr, eps=settings.adam_eps)
        # Trained parameters the kind updates itself (kept out of the groups): their gradients are
        # cleared here with the optimiser's, so they never accumulate across steps.
        self._outside = list(handle.outside_optimizer(groups).values())
        self._initial_ranks = handle.rank_pattern()  # before a resume: the run's starting pattern
        if self.accelerator.scaler is not None:  # fp16 on a GPU: the loss scaler steps and unscales it
            self.optimizer = self.accelerator.prepare_optimizer(self.optimizer)
        # Imported here: transformers' schedulers import transformers.trainer_utils, which imports peft
        # (seconds) whenever it is installed; a command that trains nothing need not pay for it.
        from transformers import get_scheduler

        warmup = settings.warmup_steps or int(settings.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(settings.lr_schedule, self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=self.total_steps)
        self.state = TrainState()
        # The best evaluation's trained state {"step", "value", "tensors"}; checkpointed with the rest.
        self.best: dict[str, Any] | None = None
        # A report needs the selected weights whatever is saved, on every rank (each one evaluates).
        self._track_best = report is not None or (settings.save_best and saves_weights(handle.kind, settings.save_model))
        self._checkpointed_step: int | None = None  # the step of the last checkpoint written or resumed

    def _loader(self, epoch: int) -> DataLoader:
        sampler = EpochBatches(len(self.dataset), self.settings.batch_size, self.seed, epoch)
        # A private generator: a DataLoader iterator otherwise draws its base seed from the
        # global RNG, which would shift the dropout masks of a resumed run.
        loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collator,
                            generator=torch.Generator().manual_seed(self.seed))
        return self.accelerator.prepare_data_loader(loader)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        payload = _plain({
            "model": trained_state(model, self.handle),  # Prune-LoRA's frozen gates included
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "method": self.handle.state_dict(),
            "state": self.state.__dict__,
            "identity": self.identity,
            "rng": rng_state(),
        })
        _save_torch(payload, self.checkpoint_path)  # complete or absent; a full disk is named
        self._checkpointed_step = self.state.global_step

    def load_checkpoint(self) -> bool:
        """Restore from ``checkpoint.pt`` if present; returns whether it resumed."""
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return False
        payload = _read_checkpoint(self.checkpoint_path, move=self.accelerator.is_main_process)
        if payload is None:
            return False
        model = self.accelerator.unwrap_model(self.model)
        missing = model.load_state_dict(payload["model"], strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"checkpoint has parameters this model lacks: {missing.unexpected_keys[:5]}")
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.handle.load_state_dict(payload["method"])
        self.state = TrainState(**payload["state"])
        self.best = payload.get("best")
        set_rng_state(payload["rng"])
        self._checkpointed_step = self.state.global_step
        return True

    def _stop_for(self, signum: int) -> None:
        """A signal arrived during the step that just ended: checkpoint it (if it is progress since
        the last checkpoint) and raise :class:`Interrupted` with the step."""
        if self.checkpoint_path is not None and self._checkpointed_step != self.state.global_step:
            self.save_checkpoint()
        kept = self._checkpointed_step if self.checkpoint_path is not None else None
        raise Interrupted(signum, self.state.global_step, kept)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self) -> dict[str, Any]:
        model = self.accelerator.unwrap_model(self.model)
        with _finite_outputs(model, self.state.global_step):
            metrics = self.evaluate_fn(model)
        record = {"step": self.state.global_step, "epoch": self.state.epoch, **metrics}
        self.state.evals.append(record)
        self._log({"eval": record})
        self._snapshot_if_best(record)
        return record

    def _snapshot_if_best(self, record: dict[str, Any]) -> None:
        """Keep the trained state of a new best evaluation (by :func:`eval_score`: strictly better,
        NaN never), so that the reported best metric has its model; the first of equal evaluations
        stays best, as in the runner's ``best_eval``."""
        value = eval_score(record, self.main_metric)
        main_only = self.report_fn is None and not self.accelerator.is_main_process
        if not self._track_best or main_only or value == -math.inf:
            return
        if self.best is None or value > self.best["value"]:
            model = self.accelerator.unwrap_model(self.model)
            self.best = {"step": record["step"], "value": value, "tensors": trained_state(model, self.handle)}

    def _report(self) -> dict[str, dict[str, Any]]:
        """``report`` on the final weights and on the selected snapshot's (the final ones when the
        last evaluation was selected, or none ever scored); the final weights are put back."""
        model = self.accelerator.unwrap_model(self.model)
        with _finite_outputs(model, self.state.global_step):
            final = {"step": self.state.global_step, "epoch": self.state.epoch, **self.report_fn(model)}
        selected = final
        if self.best is not None and self.best["step"] != self.state.global_step:
            step = self.best["step"]
            epoch = next(e["epoch"] for e in self.state.evals if e["step"] == step)
            current = trained_state(model, self.handle)
            model.load_state_dict(self.best["tensors"], strict=False)
            try:
                selected = {"step": step, "epoch": epoch, **self.report_fn(model)}
            finally:
                model.load_state_dict(current, strict=False)
        reported = {"selected": selected, "final": final}
        self._log({"report": reported})
        return reported

    def _record_ranks(self, budget: int | None) -> None:
        """Append the rank pattern (and the budget, where the kind's step returns one) if it changed:
        every kind that reports ranks gets a history, whether or not it has a budget schedule."""
        pattern = self.handle.rank_pattern()
        if pattern is None:
            return
        last = self.state.rank_history[-1] if self.state.rank_history else None
        if last is not None and (last["budget"], last["ranks"]) == (budget, pattern):
            return  # the final phase masks every step to the same b(T): keep one entry, not T - t_f
        self.state.rank_history.append({"step": self.state.global_step, "budget": budget, "ranks": pattern})
        self._log({"ranks": pattern, "budget": budget, "step": self.state.global_step})

    def _masks_at(self, step: int) -> bool:
        """Whether the allocator masked at ``step``: ranks are recorded right after a mask, when the kept
        rank is at most b(t); between masks b(t) keeps falling while masked λ can grow back."""
        return self.handle.masks_at(step)

    def _check_finite_parameters(self) -> None:
        """After the last step: every trained parameter finite (one host read). The loss of the last
        step was computed before its update, so it cannot show an update that overflowed."""
        named = [(n, p) for n, p in self.accelerator.unwrap_model(self.model).named_parameters() if p.requires_grad]
        finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist() if named else []
        bad = [n for (n, _), ok in zip(named, finite) if not ok]
        if bad:
            raise Diverged(f"{len(bad)} trained parameter(s) are NaN or infinite after the last update "
                           f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})", self.state.global_step)

    def _prove_allocation(self) -> None:
        """A rank-adaptive kind's proof that it allocated goes into the state (and the record); a run
        whose schedule says the ranks must have changed and whose ranks did not fails here, naming the
        likely cause (``adalora.allocator.AllocationNotRun``)."""
        allocation = self.handle.allocation()
        if allocation is not None:
            self.state.allocation = allocation_proof(self.handle.name, allocation, self._initial_ranks,
                                                     self.state.rank_history, self.handle.rank_pattern())

    def _log(self, payload: dict[str, Any]) -> None:
        if self.on_log is not None and self.accelerator.is_main_process:
            self.on_log(payload)

    # ------------------------------------------------------------------ loop
    def train(self, stop_after: int | None = None) -> TrainState:
        """Run to the end (or for ``stop_after`` more optimiser steps, used by tests).

        A SIGINT/SIGTERM (under :func:`experiments.interrupts.handled`) stops the loop at the end
        of the current step: see :meth:`_stop_for`.
        """
        with interrupts.deferred():
            return self._train(stop_after)

    def _train(self, stop_after: int | None) -> TrainState:
        s, state, acc = self.settings, self.state, self.accelerator
        params = [p for p in self.model.parameters() if p.requires_grad]
        started, steps_this_call = time.perf_counter() - state.elapsed_s, 0
        bar = tqdm(total=self.total_steps, initial=state.global_step, disable=not (s.progress and acc.is_main_process),
                   desc="train", dynamic_ncols=True)
        budget, masked = None, False
        nonfinite: torch.Tensor | None = None  # the step's first non-finite total loss, else 0
        zero = torch.zeros((), device=acc.device)  # the gradient norm's stand-in where it is not checked
        self.model.train()
        step_started = time.perf_counter()
        while state.global_step < self.total_steps:
            loader = self._loader(state.epoch)
            if state.batch_in_epoch:
                loader = acc.skip_first_batches(loader, state.batch_in_epoch)
            for batch in loader:
                with acc.accumulate(self.model):
                    loss = self.model(**batch).loss
                    total = loss + self.handle.regularization_loss()  # a zero tensor where there is no penalty
                    nonfinite = _keep_nonfinite(nonfinite, total)
                    acc.backward(total)
                    state.batch_in_epoch += 1
                    if not acc.sync_gradients:
                        continue
                    grad_norm = zero
                    if s.max_grad_norm:
                        grad_norm = acc.clip_grad_norm_(params, s.max_grad_norm)
                        grad_norm = grad_norm if isinstance(grad_norm, torch.Tensor) else zero  # DeepSpeed: None
                    self.optimizer.step()
                    self.scheduler.step()
                    budget = self.handle.step(state.global_step)
                    masked = self._masks_at(state.global_step)
                    self.optimizer.zero_grad(set_to_none=True)
                    for param in self._outside:  # updated by the kind itself, not by the optimiser
                        param.grad = None
                # The step's one host read: it waits for the device, so the step time below is complete.
                # The norm is the one before clipping: an infinite one would be clipped to zero updates.
                state.train_loss, nonfinite_value, norm = torch.stack([
                    loss.detach().float(), _on_any_rank(acc, nonfinite),
                    grad_norm.detach().float() if acc.scaler is None else zero]).tolist()
                if not math.isfinite(nonfinite_value):
                    raise Diverged(f"loss is {nonfinite_value}", state.global_step)
                if not math.isfinite(norm):
                    raise Diverged(f"the gradient norm before clipping is {norm} (clipping would zero every "
                                   "update)", state.global_step)
                nonfinite = None
                state.global_step += 1
                steps_this_call += 1
                state.step_times_s.append(time.perf_counter() - step_started)
                state.elapsed_s = time.perf_counter() - started
                bar.update(1)
                if state.global_step % s.log_every == 0:
                    bar.set_postfix(loss=f"{state.train_loss:.4f}", budget=budget)
                    self._log({"train": {"step": state.global_step, "loss": state.train_loss,
                                         "lr": self.scheduler.get_last_lr()[0]}})
                if masked or not state.rank_history:
                    self._record_ranks(budget)
                done = state.global_step >= self.total_steps
                if s.eval_every and state.global_step % s.eval_every == 0 and not done:
                    self._evaluate()
                    self.model.train()
                every = s.checkpoint_every or s.eval_every
                if every and state.global_step % every == 0 and not done:
                    self.save_checkpoint()
                step_started = time.perf_counter()  # evaluation and checkpoints stay out of the step times
                if (signum := interrupts.pending()) is not None:
                    bar.close()
                    self._stop_for(signum)
                if done or (stop_after is not None and steps_this_call >= stop_after):
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                continue
            if state.global_step >= self.total_steps or (stop_after is not None and steps_this_call >= stop_after):
                break
        bar.close()
        if state.global_step >= self.total_steps:
            if not state.rank_history or state.rank_history[-1]["step"] != state.global_step:
                self._record_ranks(budget)
            self._check_finite_parameters()
            self._prove_allocation()
            self._evaluate()
            if self.report_fn is not None:
                self.reported = self._report()
        return state
