"""What a job's own code sees of its lifecycle: stage reports and stop requests.

Training, evaluation and export code imports from here only, never from the launcher
(core.jobs.lifecycle): the lifecycle hands the job a JobControl, the job reports its stages
through it and checks it for a stop request. Work that is also run outside a job takes a
plain Progress function instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from core.store.files import finite_number

STOP_GRACE_ENV = "PEFT_STOP_GRACE_S"
STOP_GRACE_S = 30.0


def stop_grace_s() -> float:
    """How long a job may take to stop before its group watch kills it: $PEFT_STOP_GRACE_S
    seconds (saving a big model's checkpoint to a slow disk may need more), else STOP_GRACE_S."""
    try:
        chosen = finite_number(float(os.environ.get(STOP_GRACE_ENV) or STOP_GRACE_S))
    except ValueError:
        chosen = None
    return chosen if chosen is not None and chosen > 0 else STOP_GRACE_S


log = logging.getLogger(__name__)  # a child of "core": the job's log while a job runs

Progress = Callable[[str, "float | None"], None]
"""What a job's work reports its stage with: JobControl.stage, or any function of (text, fraction)."""


class JobStopped(Exception):
    """Raised inside a job when a stop (SIGTERM or SIGINT) was requested: the job ends `stopped`."""


class JobControl:
    """The job's side of its lifecycle.

    The lifecycle sets the stop request when the first SIGTERM or SIGINT arrives; the job
    either checks `stop_requested` itself (training does at every step, to save a checkpoint
    first) or lets `stage()` and `check_stop()` raise JobStopped.
    """

    def __init__(self, report: Progress | None = None):
        self._report = report
        self.stop_signal: str | None = None
        """The name of the signal that asked the job to stop (e.g. "SIGTERM"), or None."""

    @property
    def stop_requested(self) -> bool:
        """Whether a stop has been asked for."""
        return self.stop_signal is not None

    def request_stop(self, signal_name: str) -> None:
        """Record a stop request (the lifecycle calls this from its signal handler: it only sets a flag)."""
        if self.stop_signal is None:
            self.stop_signal = signal_name

    def check_stop(self) -> None:
        """Raise JobStopped if a stop was requested."""
        if self.stop_signal is not None:
            raise JobStopped(f"stopped by {self.stop_signal}")

    def stage(self, text: str, fraction: float | None = None) -> None:
        """Record the current stage (and progress from 0 to 1) and log it as one line; raise
        JobStopped instead if a stop was requested."""
        self.check_stop()
        if self._report is not None:
            self._report(text, fraction)
        log.info("%s", text)
