"""A training run's progress as the live view shows it: step, elapsed time, ETA, loss, memory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core import MISSING
from core.store.files import finite_number

RATE_WINDOW = 20  # events the step rate is measured over


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run stands."""

    step: int
    max_steps: int | None
    elapsed_s: float | None
    eta_s: float | None
    loss: float | None
    memory_gb: float | None
    seconds_per_step: float | None

    @property
    def fraction(self) -> float:
        """Share of the steps done, from 0 to 1."""
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0


def _since(timestamp: Any) -> float | None:
    try:
        started = datetime.strptime(str(timestamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(0.0, (datetime.now(UTC) - started).total_seconds())


def training_progress(
    status: dict[str, Any], events: list[dict[str, Any]], *, running: bool
) -> TrainingProgress:
    """The progress of a run from its status.json and events.jsonl records.

    Elapsed time is training time (earlier attempts included); before the first step of a
    running job it is the time since the job started. The ETA uses the step rate of the
    last RATE_WINDOW logged steps and is given only while the job runs. Values that are not
    numbers are treated as unknown.
    """
    logged = [s for event in events if (s := finite_number(event.get("step"))) is not None]
    # status.json is rewritten at most once a second; events.jsonl gets every logged step at once
    step = int(max([finite_number(status.get("step")) or 0, *logged]))
    max_steps = finite_number(status.get("max_steps"))
    max_steps = int(max_steps) if max_steps and max_steps >= 1 else None
    timed = [
        (s, e)
        for event in events
        if (s := finite_number(event.get("step"))) is not None
        and (e := finite_number(event.get("elapsed_s"))) is not None
    ]
    last = next((event for event in reversed(events) if "loss" in event), {})  # not an evaluation's line
    elapsed = finite_number(status.get("training_s")) or (timed[-1][1] if timed else None)
    if elapsed is None and running:
        elapsed = _since(status.get("started_at"))
    rate = None
    window = timed[-RATE_WINDOW:]
    if len(window) >= 2 and window[-1][0] > window[0][0]:
        rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
    eta = rate * max(0, max_steps - step) if running and rate is not None and max_steps else None
    return TrainingProgress(
        step=step,
        max_steps=max_steps,
        elapsed_s=elapsed,
        eta_s=eta,
        loss=finite_number(last.get("loss")),
        memory_gb=finite_number(last.get("memory_gb")),
        seconds_per_step=rate,
    )


def format_duration(seconds: float | None) -> str:
    """`1h 02m`, `3m 05s` or `42s`; a dash when unknown."""
    if seconds is None:
        return MISSING
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
