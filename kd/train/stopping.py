"""Ending a run early: Stop pressed, or the run's time limit passed, noticed in every phase.

A distillation has long phases besides the training loop: the teacher encoding the English
side, the held-out evaluations before and after, the frozen-layer cache. :class:`StopCheck` is
polled from each of them (from their progress callbacks, once a batch) and decides what an
early end means there:

- before training has begun there is no student to keep: :class:`RunStopped` ends the run at
  once (a ``ValueError`` with one line saying so);
- in the training loop the loop ends after the current step (``halted()``);
- after training, the student so far is evaluated and saved, but the evaluations get only
  :data:`STOP_GRACE_S` seconds from the moment the run was told to stop; past that
  :class:`EvaluationCut` abandons the rest of them and the student is saved without.

This module imports no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

STOP_GRACE_S = 30.0
"""Seconds the evaluations of a stopped run may still take before they are abandoned."""

_clock = time.monotonic  # tests replace it to move time forward without waiting


class RunStopped(ValueError):
    """Stop, or the time limit, came before training began: nothing was trained or saved."""


class EvaluationCut(Exception):
    """The grace period of a stopped run is over: the remaining evaluations are skipped."""


class StopCheck:
    """Whether a run should end now, and why; polled from every phase of
    :func:`kd.train.run.distill`.

    Example:
        >>> check = StopCheck(should_stop=lambda: False, max_minutes=0)
        >>> check.halted(), check.reason
        (False, None)
    """

    def __init__(
        self, should_stop: Callable[[], bool] | None = None, max_minutes: float = 0.0
    ) -> None:
        self.should_stop = should_stop
        self.max_minutes = max_minutes
        self.deadline = _clock() + 60.0 * max_minutes if max_minutes else None
        self.reason: str | None = None
        self.grace_until: float | None = None
        self.training = False  # set once the training loop has begun: a student exists

    def halted(self) -> bool:
        """True once Stop was pressed or the time limit passed (and from then on)."""
        if self.reason is None:
            if self.should_stop is not None and self.should_stop():
                self.reason = "Stop was pressed"
            elif self.deadline is not None and _clock() >= self.deadline:
                self.reason = f"the run's time limit ({self.max_minutes:g} min) was reached"
            if self.reason is not None:
                self.grace_until = _clock() + STOP_GRACE_S
        return self.reason is not None

    def check(self) -> None:
        """Raise if the current phase must end: :class:`RunStopped` before training has
        begun, :class:`EvaluationCut` after it once the grace period is over."""
        if not self.halted():
            return
        if not self.training:
            raise RunStopped(f"{self.reason} before training began; nothing was trained or saved")
        if self.grace_until is not None and _clock() >= self.grace_until:
            raise EvaluationCut(
                f"{self.reason}; the remaining evaluations were skipped after "
                f"{STOP_GRACE_S:g} s and the student was saved without them"
            )

    def progress(self, forward: Callable[[int, int], None] | None = None):
        """A ``(done, total)`` progress callback that checks first, then calls ``forward``."""

        def report(done: int, total: int) -> None:
            self.check()
            if forward is not None:
                forward(done, total)

        return report

    def guard(self, encode: Callable):
        """``encode`` (``list[str] -> np.ndarray``, an :meth:`kd.models.encoder.Encoder.encode`)
        that checks once a batch while it runs."""

        def guarded(texts, *args, **kwargs):
            self.check()
            kwargs["progress"] = self.progress(kwargs.get("progress"))
            return encode(texts, *args, **kwargs)

        return guarded
