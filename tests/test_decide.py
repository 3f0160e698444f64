"""The skip / resume / start / refuse rule table (``experiments.decision.decide``): a pure function, tested
row by row without training anything (issue 31 item 6; issue 32: ``force=true`` starts from step 0)."""

from __future__ import annotations

import pytest

from experiments.decision import Action, Checkpoint, Facts, decide

NONE, S, OTH, U = Checkpoint.NONE, Checkpoint.SAME, Checkpoint.OTHER, Checkpoint.UNHASHED

TABLE = [
    # record status, record same?, checkpoint, force -> action
    (None, False, NONE, False, Action.START),
    (None, False, S, False, Action.RESUME),
    (None, False, OTH, False, Action.CONFLICT_CHECKPOINT),
    (None, False, U, False, Action.CONFLICT_CHECKPOINT),
    ("success", True, NONE, False, Action.SKIP),
    ("success", True, S, False, Action.SKIP),  # a kept checkpoint of a finished run: still finished
    ("success", False, NONE, False, Action.CONFLICT_RECORD),
    ("diverged", False, NONE, False, Action.CONFLICT_RECORD),
    ("diverged", True, NONE, False, Action.START),  # a diverged run of this config is run again
    ("failed", False, NONE, False, Action.START),  # failed / oom / interrupted / running: re-run
    ("oom", True, S, False, Action.RESUME),
    ("interrupted", True, S, False, Action.RESUME),
    ("running", False, OTH, False, Action.CONFLICT_CHECKPOINT),
    ("success", True, NONE, True, Action.START),  # force re-runs a finished run
    ("success", False, NONE, True, Action.START),  # force replaces another config's result
    ("interrupted", True, S, True, Action.START_FRESH),  # force never resumes, even its own checkpoint
    (None, False, S, True, Action.START_FRESH),
    (None, False, OTH, True, Action.START_FRESH),
    (None, False, U, True, Action.START_FRESH),
]


@pytest.mark.parametrize(("status", "same", "checkpoint", "force", "action"), TABLE)
def test_decide_rule_table(status, same, checkpoint, force, action):
    assert decide(Facts(status, same, checkpoint, force)) is action


def test_force_true_never_resumes_a_kept_checkpoint():
    """Issue 32: a forced re-run after a code fix must not mix old and new steps."""
    for status in (None, "success", "failed", "interrupted"):
        for checkpoint in (S, OTH, U):
            assert decide(Facts(status, True, checkpoint, force=True)) is Action.START_FRESH
