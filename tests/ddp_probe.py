"""Train tiny runs under torchrun and dump what each rank ended with (DDP test helper).

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_probe.py OUT_DIR [flag ...] override ... \\
        [--then[=NAME] [flag ...] override ...] ...

Each rank writes ``OUT_DIR/rank<r>.pt``: the kept-triplet masks and λ of every SVD matrix,
the rank pattern, the evaluations and the last training loss. Dropout is configured off by
the caller (through the model config) so that ranks and a single-process run are comparable.

``--then[=NAME]`` starts another run, trained next in the same processes with the overrides after it
added to the first run's, into ``OUT_DIR/NAME/rank<r>.pt`` (``NAME`` defaults to ``then``); repeat it
to chain more runs (each folder name once). Runs compared under DDP then pay one launch
(interpreters, imports and the process group), not one each. A run that diverged stopped every
rank at the same step, so the collectives of the run after it still line up. A repeated key takes
the later value (Hydra's rule), so a run may also change one of the first run's settings.

A run's flags, before or among its overrides, apply to that run alone (a later run inherits the
first run's overrides, never a flag):

``--nan-at=<rank>:<step>`` is a fault: that rank's training loss is NaN at that optimiser step
(the others' stay finite); each rank then records the step at which its loop stopped as diverged.

``--record`` trains the run through the harness's own path, :func:`experiments.runner.run` (what
``python -m experiments.run`` calls for one run), which writes the run's record into the run
directory of its config (under its ``output_root``); nothing goes under ``OUT_DIR`` for it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from experiments.runner import PROJECT_ROOT, _build, register_resolvers, resolve, run
from experiments.training import Diverged

NAN_AT = "--nan-at="
RECORD = "--record"


@dataclasses.dataclass(frozen=True)
class ProbeRun:
    """One run of the chain: its folder under ``OUT_DIR`` ("" for the first), its overrides, its flags."""

    folder: str
    overrides: list[str]
    nan_at: tuple[int, int] | None = None  # (rank, optimiser step) whose training loss is NaN
    record: bool = False


def parse_runs(args: list[str]) -> list[ProbeRun]:
    """The runs ``args`` chain with ``--then``; an unknown flag or two runs sharing a folder stop the probe
    before anything trains (a typo would otherwise train a run without the fault it was meant to have)."""
    segments: list[tuple[str, list[str]]] = [("", [])]
    for arg in args:
        if arg == "--then" or arg.startswith("--then="):
            segments.append((arg.partition("=")[2] or "then", []))
        else:
            segments[-1][1].append(arg)
    folders = [folder for folder, _ in segments]
    if len(set(folders)) != len(folders):
        raise SystemExit(f"ddp_probe: two runs would write into one folder: {folders}")
    runs: list[ProbeRun] = []
    for folder, segment in segments:
        flags = [arg for arg in segment if arg.startswith("--")]
        if unknown := [flag for flag in flags if flag != RECORD and not flag.startswith(NAN_AT)]:
            raise SystemExit(f"ddp_probe: unknown flag(s) {unknown}")
        nan_at = next((_rank_and_step(flag[len(NAN_AT):]) for flag in flags if flag.startswith(NAN_AT)), None)
        if nan_at is not None and RECORD in flags:
            raise SystemExit(f"ddp_probe: {NAN_AT} needs a probed run, not a {RECORD} one")
        overrides = [arg for arg in segment if not arg.startswith("--")]
        runs.append(ProbeRun(folder, [*runs[0].overrides, *overrides] if runs else overrides, nan_at, RECORD in flags))
    return runs


def _rank_and_step(value: str) -> tuple[int, int]:
    """``<rank>:<step>`` of ``--nan-at`` as two integers (anything else stops the probe)."""
    rank, step = value.split(":")
    return int(rank), int(step)


def inject_nan(trainer, rank: int, nan_at: tuple[int, int] | None) -> None:
    """A NaN loss on this rank at the step ``nan_at`` names, if it names this rank."""
    if nan_at is None or nan_at[0] != rank:
        return
    step = nan_at[1]

    def poison(_module, _inputs, output):
        if trainer.state.global_step == step and output.loss is not None:
            output.loss = output.loss * float("nan")
        return output

    trainer.model.register_forward_hook(poison)


def main(out_dir: str, args: list[str]) -> None:
    register_resolvers()
    for probe_run in parse_runs(args):
        if probe_run.record:
            run(_compose(probe_run.overrides))
        else:
            probe(Path(out_dir) / probe_run.folder, probe_run.overrides, probe_run.nan_at)


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def probe(out_dir: Path, overrides: list[str], nan_at: tuple[int, int] | None = None) -> None:
    """Train one run on this rank and write what it ended with to ``out_dir/rank<r>.pt``."""
    cfg = _compose(overrides)
    rank = int(os.environ.get("RANK", "0"))
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer, handle, _ = _build(cfg, resolve(cfg), out_dir / f"ckpt{rank}", None)
    inject_nan(trainer, rank, nan_at)
    diverged_at = None
    try:
        trainer.train()
    except Diverged:
        diverged_at = trainer.state.global_step
    state = trainer.state
    svd = handle.svd_modules
    torch.save({
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "total_steps": trainer.total_steps,
        "masks": {n: (m.lora_E.detach() != 0).flatten() for n, m in svd.items()},
        "lambdas": {n: m.lora_E.detach().clone().flatten() for n, m in svd.items()},
        "pattern": handle.rank_pattern(),
        "evals": state.evals,
        "train_loss": state.train_loss,
        "diverged_at": diverged_at,
    }, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
