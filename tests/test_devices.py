"""launcher=joblib_gpu: worker slot -> GPU assignment and its effect on CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import subprocess
import sys

import pytest

from experiments import devices
from experiments.runner import PROJECT_ROOT
from tests.conftest import compose


def test_slots_spread_over_gpus_before_doubling_up():
    gpus = ["0", "1", "2"]
    assert [devices.gpu_for_slot(k, gpus, 2) for k in range(6)] == ["0", "1", "2", "0", "1", "2"]
    with pytest.raises(ValueError, match="slot 6"):
        devices.gpu_for_slot(6, gpus, 2)
    with pytest.raises(ValueError, match="no GPU"):
        devices.gpu_for_slot(0, [], 2)


def test_visible_gpus_follow_cuda_visible_devices():
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "3, 5"}) == ["3", "5"]
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_a_held_slot_is_skipped_by_another_process_and_freed_when_it_exits(tmp_path):
    slot, fh = devices.claim_slot(tmp_path, 3)
    assert slot == 0
    probe = ("import sys; from pathlib import Path; from experiments.devices import claim_slot; "
             "print(claim_slot(Path(sys.argv[1]), 3)[0])")
    other = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                           cwd=PROJECT_ROOT, check=True)
    assert other.stdout.strip() == "1"  # slot 0 is held here; the other process's lock died with it
    again = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                           cwd=PROJECT_ROOT, check=True)
    assert again.stdout.strip() == "1"
    fh.close()


def test_assign_gpu_sets_cuda_visible_devices_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "_claimed", {})
    env = {"CUDA_VISIBLE_DEVICES": "4,7", devices.JOBS_PER_GPU_ENV: "2"}
    holder = devices.claim_slot(tmp_path, 4)  # another worker already holds slot 0 (GPU 4)
    assert devices.assign_gpu(tmp_path, env) == "7" and env["CUDA_VISIBLE_DEVICES"] == "7"  # slot 1
    env2 = {"CUDA_VISIBLE_DEVICES": "4,7", devices.JOBS_PER_GPU_ENV: "2"}
    assert devices.assign_gpu(tmp_path, env2) == "7"  # the next job of this worker keeps its GPU
    holder[1].close()
    monkeypatch.setattr(devices, "_claimed", {})
    assert devices.assign_gpu(tmp_path, {"CUDA_VISIBLE_DEVICES": "0"}) is None  # launcher not asked for it


def test_joblib_gpu_launcher_config_sets_jobs_per_gpu():
    cfg = compose(["launcher=joblib_gpu"], return_hydra_config=True)
    assert cfg.hydra.job.env_set[devices.JOBS_PER_GPU_ENV] == "2"
    assert cfg.hydra.launcher.n_jobs == 2 and "joblib" in cfg.hydra.launcher._target_.lower()
    assert cfg.hydra.job.env_set.TOKENIZERS_PARALLELISM == "false"
