"""Skip, resume, start or refuse: what a run does with what its directory already holds.

:func:`decide` is a pure function of four facts (:class:`Facts`), so every rule is a row of a
table-driven test that trains nothing (tests/test_decide.py); :func:`settle` gathers the facts
(reading the record and the checkpoint, moving unreadable ones aside) and carries out what is not
training: a conflict is raised, a forced run's checkpoint moved aside.

- a ``success`` record of the same configuration is skipped (``force=true`` re-runs it);
- a ``success`` or ``diverged`` record of another configuration is a conflict (``force=true`` replaces it);
- a checkpoint of the same configuration is resumed; one of another configuration (or one without a
  hash, from an older version) is a conflict;
- ``force=true`` always trains from step 0: a kept checkpoint, of this configuration or another, is
  moved aside (a forced re-run after a code fix never mixes old and new steps);
- a failed, OOM, interrupted or running record is re-run.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

from adalora import trust
from experiments.identity import IdentityMismatch, describe_difference, same_identity, unverified_note
from experiments.results import RESULT_FILE, move_aside, read_result, read_result_or_move_aside
from experiments.spec import ConfigError, record_identity
from experiments.training import CHECKPOINT_FILE, checkpoint_identity


class Checkpoint(enum.Enum):
    """What the run directory's checkpoint is, against this run's identity."""

    NONE = "none"  # absent, or unreadable (moved aside)
    SAME = "same"
    OTHER = "other"
    UNHASHED = "unhashed"  # written before checkpoints carried an identity


class Action(enum.Enum):
    SKIP = "skip"  # return the finished record
    RESUME = "resume"  # continue from the checkpoint
    START = "start"  # train from step 0
    START_FRESH = "start_fresh"  # move the checkpoint aside, then train from step 0
    CONFLICT_RECORD = "conflict_record"  # the record is another configuration's result
    CONFLICT_CHECKPOINT = "conflict_checkpoint"  # the checkpoint is another configuration's


FINISHED = ("success", "diverged")  # statuses whose record is a result a rerun must not silently replace


@dataclasses.dataclass(frozen=True)
class Facts:
    record_status: str | None  # the status of result.json, None when there is none
    record_same: bool  # whether the record's identity is this run's
    checkpoint: Checkpoint
    force: bool


def decide(facts: Facts) -> Action:
    """The one rule table of the module docstring."""
    if facts.record_status in FINISHED and not facts.force:
        if not facts.record_same:
            return Action.CONFLICT_RECORD
        if facts.record_status == "success":
            return Action.SKIP
    if facts.checkpoint is Checkpoint.NONE:
        return Action.START
    if facts.force:
        return Action.START_FRESH
    if facts.checkpoint is Checkpoint.SAME:
        return Action.RESUME
    return Action.CONFLICT_CHECKPOINT


class RunConflict(ConfigError, IdentityMismatch):
    """The run directory holds another configuration's result or checkpoint (nothing is written)."""


def settle(run_dir: Path, block: dict[str, Any], force: bool, main: bool) -> tuple[Action, dict | None]:
    """Gather the facts (only rank 0 moves files aside), decide, and carry out what is not training."""
    with trust.reading(run_dir / RESULT_FILE):  # a stored config imports nothing (adalora.trust)
        record = read_result_or_move_aside(run_dir) if main else _read_quietly(run_dir)
        stored = record_identity(record) if record is not None else None
    checkpoint = run_dir / CHECKPOINT_FILE
    readable, ckpt = checkpoint_identity(checkpoint, move=main)
    ckpt_keys = (ckpt or {}).get("keys") or {}
    state = (Checkpoint.NONE if not readable else Checkpoint.UNHASHED if not ckpt
             else Checkpoint.SAME if same_identity(ckpt_keys, block["keys"]) else Checkpoint.OTHER)
    same = stored is not None and same_identity(stored, block["keys"])
    action = decide(Facts((record or {}).get("status"), same, state, force))
    if action is Action.CONFLICT_RECORD:
        raise RunConflict(describe_difference(f"{record['status']} result", run_dir / RESULT_FILE, stored or {},
                                              block["keys"]))
    if action is Action.CONFLICT_CHECKPOINT and state is Checkpoint.UNHASHED:
        raise RunConflict(f"{checkpoint} carries no configuration hash (written by an older version), so it cannot be "
                          "checked against this configuration. Ways out: force=true (train from step 0), or another "
                          "sweep_name=... or output_root=...")
    if action is Action.CONFLICT_CHECKPOINT:
        raise RunConflict(describe_difference("checkpoint", checkpoint, ckpt_keys, block["keys"]))
    if action is Action.START_FRESH and main:
        moved = move_aside(checkpoint, "stale")
        print(f"[force] {checkpoint} moved to {moved.name}; training from step 0", flush=True)
    note = {Action.SKIP: (run_dir / RESULT_FILE, stored), Action.RESUME: (checkpoint, ckpt_keys)}.get(action)
    if note is not None and main and unverified_note(note[0], note[1], block["keys"]):
        print(unverified_note(note[0], note[1], block["keys"]), flush=True)
    return action, record


def _read_quietly(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_result(run_dir)
    except ValueError:
        return None
