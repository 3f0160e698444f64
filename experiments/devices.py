"""Several runs per GPU: which GPU a job of the ``joblib_gpu`` launcher trains on.

Small GLUE runs leave a large GPU mostly idle, so ``launcher=joblib_gpu`` runs ``n_jobs`` worker
processes and places ``ADALORA_JOBS_PER_GPU`` of them on each visible GPU, spread round-robin
(slot k -> GPU k mod #GPUs, so the first #GPUs workers land on distinct GPUs).

The device belongs to the *worker process*, not to the job number: joblib's loky workers are
reused from job to job, and once a process has initialised CUDA, changing
``CUDA_VISIBLE_DEVICES`` has no effect. So at its first job a worker claims a free slot with an
exclusive ``flock`` on ``<sweep dir>/.gpu-slots/slot-<k>.lock`` (held for the worker's lifetime,
released by the kernel when it exits, so a crashed worker never leaks its slot), sets
``CUDA_VISIBLE_DEVICES`` to that slot's GPU, and keeps it for every later job.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import IO

JOBS_PER_GPU_ENV = "ADALORA_JOBS_PER_GPU"

_claimed: dict[str, object] = {}  # this process's slot: {"slot": int, "gpu": str, "lock": file}


def gpu_for_slot(slot: int, gpus: Sequence[str], jobs_per_gpu: int) -> str:
    """The GPU of worker slot ``slot``: round-robin over ``gpus``, ``jobs_per_gpu`` slots each."""
    if not gpus:
        raise ValueError("no GPU is visible")
    if jobs_per_gpu < 1:
        raise ValueError(f"{JOBS_PER_GPU_ENV} must be >= 1, got {jobs_per_gpu}")
    if not 0 <= slot < len(gpus) * jobs_per_gpu:
        raise ValueError(f"slot {slot} outside 0..{len(gpus) * jobs_per_gpu - 1} ({len(gpus)} GPUs x {jobs_per_gpu})")
    return gpus[slot % len(gpus)]


def visible_gpus(env: MutableMapping[str, str]) -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every GPU torch sees."""
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    import torch

    # device_count() reads NVML without initialising CUDA, so CUDA_VISIBLE_DEVICES can still change.
    return [str(i) for i in range(torch.cuda.device_count())]


def claim_slot(lock_dir: Path, n_slots: int) -> tuple[int, IO[str]] | None:
    """The first free slot in ``lock_dir`` and its open, locked file; None when all are taken."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(n_slots):
        fh = open(lock_dir / f"slot-{slot}.lock", "w")  # noqa: SIM115 - held open for the process lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        return slot, fh
    return None


def assign_gpu(lock_dir: Path, env: MutableMapping[str, str] | None = None) -> str | None:
    """Pin this worker to its GPU (sets ``CUDA_VISIBLE_DEVICES``); None when not asked or no GPU.

    Called at the start of every job; only the first call of a process claims a slot.
    """
    env = os.environ if env is None else env
    if "gpu" in _claimed:
        env["CUDA_VISIBLE_DEVICES"] = str(_claimed["gpu"])
        return str(_claimed["gpu"])
    raw = env.get(JOBS_PER_GPU_ENV)
    if not raw:
        return None
    jobs_per_gpu = int(raw)
    gpus = visible_gpus(env)
    if not gpus:
        return None
    n_slots = len(gpus) * jobs_per_gpu
    claimed = claim_slot(lock_dir, n_slots)
    if claimed is None:
        slot = os.getpid() % n_slots
        warnings.warn(f"all {n_slots} GPU slots in {lock_dir} are taken (hydra.launcher.n_jobs > {len(gpus)} GPUs x "
                      f"{JOBS_PER_GPU_ENV}={jobs_per_gpu}?); this worker shares slot {slot}", stacklevel=2)
        lock = None
    else:
        slot, lock = claimed
    gpu = gpu_for_slot(slot, gpus, jobs_per_gpu)
    _claimed.update(slot=slot, gpu=gpu, lock=lock)
    env["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


# ---------------------------------------------------------------------------- what a run records of its machine
_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def environment() -> dict[str, object]:
    """Package versions, the device and Python: the ``env`` block of a record."""
    import importlib.metadata as md
    import platform

    import torch

    versions = {}
    for pkg in ("torch", "transformers", "datasets", "accelerate", "hydra-core", "adalora"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"cpu ({platform.processor() or platform.machine()})")
    return {"versions": versions, "device": device, "python": platform.python_version()}


def reset_peak_memory() -> None:
    """Start this run's peak from now: a serial sweep runs many runs in one process.

    CUDA: ``reset_peak_memory_stats``. CPU on Linux: writing 5 to ``/proc/self/clear_refs``
    resets the peak resident set size (VmHWM) that :func:`peak_memory_mb` reads.
    """
    import contextlib

    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        _PROC_CLEAR_REFS.write_text("5")


def peak_memory_mb() -> float:
    """The run's peak memory: CUDA's allocator peak, else the process's peak resident set (VmHWM)."""
    import contextlib

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    with contextlib.suppress(OSError):
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    import resource  # no /proc (macOS): the process-lifetime peak, not reset between runs

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def is_main_process() -> bool:
    """Rank 0 under torchrun / ``accelerate launch`` (the only rank that writes records)."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes of this run (torchrun / ``accelerate launch`` set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
