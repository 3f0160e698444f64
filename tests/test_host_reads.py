"""The training loop waits for the device once per optimiser step (plus once after an AdaLoRA mask).

On a GPU every host read of a device tensor (``item``, ``tolist``, ``bool``, ...) drains the
queue: a read between the forward and the backward makes the host wait for the forward before it
can enqueue the backward. On a CPU nothing waits, but the reads are the same calls, so they are
counted here with a ``TorchFunctionMode`` through the real ``Trainer`` built by the runner.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from experiments.runner import _build, register_resolvers, resolve
from experiments.training import EpochBatches
from tests.conftest import tiny

register_resolvers()

_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu"}
# CPU-side bookkeeping that stays on the host on every device: AdamW's step counters (CPU tensors
# unless capturable), a DataLoader's seed and the sampler's batch indices (CPU generators).
_HOST_ONLY = (str(Path(torch.__file__).parent / "optim"), str(Path(torch.__file__).parent / "utils" / "data"))
_HOST_ONLY_FUNCTIONS = {(EpochBatches.__iter__.__code__.co_filename, "__iter__")}


class HostReads(TorchFunctionMode):
    """Records (caller file, the trainer's global step) for every read of a tensor's value."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer
        self.reads: list[tuple[str, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in _READS:
            code = sys._getframe(1).f_code
            if not code.co_filename.startswith(_HOST_ONLY) and (code.co_filename, code.co_name) not in _HOST_ONLY_FUNCTIONS:
                self.reads.append((code.co_filename, self.trainer.state.global_step))
        return func(*args, **(kwargs or {}))


def _trainer(tmp_path, method: str):
    cfg = tiny(tmp_path, method=method, steps=40)
    trainer, handle, _ = _build(cfg, resolve(cfg), tmp_path / "run", None)
    return trainer, handle


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_one_host_read_per_step_and_one_per_new_mask(tmp_path, method):
    trainer, handle = _trainer(tmp_path, method)
    steps = trainer.total_steps - 1  # the last step would evaluate
    with HostReads(trainer) as mode:
        trainer.train(stop_after=steps)
    assert trainer.state.global_step == steps
    loop = [step for caller, step in mode.reads if caller.endswith("experiments/training.py")]
    other = [(caller, step) for caller, step in mode.reads if not caller.endswith("experiments/training.py")]
    assert loop == list(range(steps)), "the loop must read the device exactly once per optimiser step"
    if method == "lora":
        assert other == []
        return
    # AdaLoRA: the rank pattern is counted (one read) right after a mask that made a new pattern;
    # the read happens after the step counter moved on, so step - 1 is the step that masked.
    allocator = handle.allocator
    assert other and all(caller.endswith("adalora/allocator.py") for caller, _ in other)
    masked = [step - 1 for _, step in other]
    assert all(allocator.budget_schedule(t)[1] for t in masked)
    assert len(set(masked)) == len(masked)
    final_phase = [t for t in masked if t > trainer.total_steps - allocator.final_warmup]
    assert len(final_phase) == 1, "the final phase reuses one frozen mask: its pattern is counted once"


@pytest.mark.slow
def test_a_nan_loss_stops_the_step_it_happened_in(tmp_path):
    trainer, _ = _trainer(tmp_path, "lora")
    trainer.train(stop_after=3)
    with torch.no_grad():
        trainer.model.classifier.weight.fill_(float("nan"))
    with pytest.raises(Exception, match="loss is nan at step 3") as err:
        trainer.train(stop_after=3)
    assert type(err.value).__name__ == "Diverged"
    assert trainer.state.global_step == 3 and len(trainer.state.step_times_s) == 3
