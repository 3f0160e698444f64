"""Checkpoints and the files a run writes: no code runs from a planted checkpoint, a full disk is
named and leaves no partial file, stale temp files are cleaned when a run starts."""

from __future__ import annotations

import errno
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import experiments.training
import experiments.weights
from experiments.results import read_result
from experiments.runner import _build, register_resolvers, resolve, run, run_identity_block
from experiments.training import rng_state, set_rng_state
from tests.conftest import tiny  # the tiny 4-step RTE run those tests use

register_resolvers()


class _Planted:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the loader runs pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.slow
def test_planted_checkpoint_runs_no_code_and_is_refused_by_name(tmp_path, capsys):
    cfg = tiny(tmp_path / "out")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    # Same configuration hash as the run: the old loader resumed from it (after unpickling it).
    torch.save({"identity": run_identity_block(cfg), "state": _Planted(marker)}, run_dir / "checkpoint.pt")
    record = run(cfg)
    out = capsys.readouterr().out
    assert not marker.exists()
    assert (f"[refused] {run_dir / 'checkpoint.pt'} needs io.open, more than tensors and plain types; "
            "it was not loaded and nothing in it ran; moved to checkpoint.pt.refused-") in out
    assert "[resume]" not in out
    assert record["status"] == "success" and record["train"]["steps"] == 4  # trained from step 0
    assert len(list(run_dir.glob("checkpoint.pt.refused-*"))) == 1


@pytest.mark.slow
def test_checkpoint_holds_only_tensors_and_plain_types(tmp_path):
    """AdaLoRA's allocator state, the optimiser, RNGs and numpy-valued metrics all load with weights_only."""
    cfg = tiny(tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every=2", "trainer.eval_every=2",
               method="adalora")
    trainer, _, _ = _build(cfg, resolve(cfg), Path(cfg.run_dir), None)
    trainer.train(stop_after=4)
    payload = torch.load(Path(cfg.run_dir) / "checkpoint.pt", weights_only=True)
    assert payload["state"]["global_step"] == 4 and len(payload["state"]["evals"]) == 2
    assert payload["rng"]["numpy"]["key"].dtype == torch.int64 and payload["rng"]["numpy"]["key"].numel() == 624
    assert payload["method"]["allocator"]["ema_ipt"]


def test_rng_state_round_trip_restores_every_generator():
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.standard_normal()  # numpy caches the second Gaussian: has_gauss=1 must survive too
    saved = rng_state()
    expected = (random.random(), np.random.standard_normal(), np.random.randint(1 << 30), torch.rand(2))
    set_rng_state(saved)
    got = (random.random(), np.random.standard_normal(), np.random.randint(1 << 30), torch.rand(2))
    assert expected[:3] == got[:3] and torch.equal(expected[3], got[3])


def _full_disk_after(nbytes: int, real):
    """A writer that puts ``nbytes`` of the real output into the file and then fails as a full disk does."""

    def write(obj, path, *args, **kwargs):
        real(obj, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:nbytes])
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def _temp_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


class _FullDisk:
    """A file on a disk with ``room`` bytes left: the write past it fails with ENOSPC, as a full disk's does."""

    def __init__(self, path: str, room: int):
        self._fh, self._room = open(path, "wb"), room  # noqa: SIM115 - closed by __exit__

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self._room:
            self._fh.write(data[:self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_is_a_failed_record_naming_the_file_and_the_disk(tmp_path, monkeypatch):
    """Not torch's ``enforce fail at inline_container.cc``: the file, the disk and what to do."""
    cfg = tiny(tmp_path, "trainer.checkpoint_every=2")
    monkeypatch.setattr(experiments.training, "open", lambda path, mode="r": _FullDisk(path, 100), raising=False)
    record = run(cfg)
    run_dir = Path(cfg.run_dir)
    assert record["status"] == "failed"
    reason = record["reason"].splitlines()[0]
    assert reason.startswith(f"NoSpaceLeft: [Errno 28] no space left on device while writing {run_dir / 'checkpoint.pt'}"
                             " (the disk mounted at "), reason
    mount = re.search(r"the disk mounted at (\S+)\)", reason).group(1)
    assert os.path.ismount(mount) and str(run_dir.resolve()).startswith(mount)
    assert "inline_container" not in record["reason"]
    assert read_result(run_dir)["status"] == "failed"  # the record could be written: the partial file is gone
    assert _temp_files(run_dir) == [] and not (run_dir / "checkpoint.pt").exists()


@pytest.mark.slow
def test_full_disk_during_the_weights_write_is_a_failed_record_naming_the_file(tmp_path, monkeypatch):
    cfg = tiny(tmp_path)
    monkeypatch.setattr(safetensors.torch, "save_file", _full_disk_after(50, safetensors.torch.save_file))
    record = run(cfg)
    run_dir = Path(cfg.run_dir)
    assert record["status"] == "failed"
    assert f"no space left on device while writing {run_dir / 'weights' / 'final.safetensors'}" in record["reason"]
    assert _temp_files(run_dir) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", [".result.json.k2j3.tmp", "weights/.final.safetensors.a8f.tmp",
                                  ".checkpoint.pt.x1.tmp", "checkpoint.tmp"])
def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path, capsys, name):
    cfg = tiny(tmp_path, "trainer.max_steps=2")
    stale = Path(cfg.run_dir) / name
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file from a killed job")
    assert run(cfg)["status"] == "success"
    assert not stale.exists()
    assert f"[cleanup] removed the stale temp file {stale}" in capsys.readouterr().out
