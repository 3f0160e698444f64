"""Ctrl-C (SIGINT) and SIGTERM end a run cleanly: checkpoint, ``interrupted`` record, one line, exit 130/143.

Python's default turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread happens to
be, possibly between ``optimizer.step()`` and the allocator's step, and SIGTERM (a scheduler's
time limit, ``kill``) ends the process without a word. :func:`handled` installs handlers for the
length of a run instead: outside the training loop a signal raises :class:`Interrupted` at once
(nothing is half-done there that a checkpoint could save); inside :func:`deferred` (the loop) the
first signal is only noted, and the loop stops at the next step boundary, after the step and its
evaluation are complete, so the checkpoint it writes is one a rerun resumes from exactly. A
second signal there raises at once (the last periodic checkpoint stays), for a loop that is stuck.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was stopped by a signal. A ``BaseException``, like ``KeyboardInterrupt``, so that the
    ``except Exception`` which records a failure and lets a sweep go on does not swallow it."""

    def __init__(self, signum: int, step: int | None = None, checkpoint_step: int | None = None):
        self.signum, self.step, self.checkpoint_step = signum, step, checkpoint_step
        self.reported = False  # set once the run's one line has been printed
        super().__init__(self.describe())

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by a signal: 128 + its number (SIGINT 130, SIGTERM 143)."""
        return 128 + self.signum

    def describe(self) -> str:
        where = "" if self.step is None else f" at step {self.step}"
        if self.checkpoint_step is not None:
            kept = f"; checkpoint at step {self.checkpoint_step}, rerun the same command to resume"
        elif self.step is not None:
            kept = "; no checkpoint yet, a rerun starts from step 0"
        else:
            kept = ""
        return f"interrupted by {self.signal_name}{where}{kept}"


class _State:
    deferring = 0  # depth of active deferred() blocks
    pending: int | None = None  # the signal noted inside deferred()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _State.deferring and _State.pending is None:
        _State.pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` (or are deferred) while the block runs.

    Only the main thread can install handlers; elsewhere (a launcher's worker thread) this is a
    no-op and the signals keep their previous behaviour.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _State.pending = None
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        _State.pending = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside the block a first signal is only noted (:func:`pending`); a second one raises."""
    _State.deferring += 1
    try:
        yield
    finally:
        _State.deferring -= 1


def pending() -> int | None:
    """The signal noted inside :func:`deferred`, if any."""
    return _State.pending
