"""A training job watched and stopped from elsewhere: while it runs, its light files go to a
remote every few seconds and at every change of state, and the remote is polled (every
STOP_POLL_S seconds at most) for a stop request a dashboard on another side wrote there
(core.remote.sync.request_remote_stop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.remote.stores import RemoteError, RemoteStore
from core.remote.sync import push, remote_stop_requested
from core.store.files import FileProblem, read_json_object
from core.store.runs import STATUS_FILE

log = logging.getLogger(__name__)
DEFAULT_SYNC_EVERY_S = 30.0
_LOOK_EVERY_S = 1.0  # how often the state is looked at, for a push at every change
STOP_POLL_S = 5.0  # how often the remote is asked for a stop request (a small read)


class LiveSync:
    """Push one run's files while its job runs, and ask the job to stop when the remote holds a
    stop request made after the job started; use as a context manager around the job.

    A push or a poll that fails is logged and tried again at the next interval: a network
    hiccup never ends the training. The last push happens when the block ends, so the remote
    holds the run's final state (the adapter of a completed run included)."""

    def __init__(
        self,
        run_path: Path,
        store: RemoteStore,
        every_s: float,
        stop_job: Callable[[], None],
    ):
        self.run_path, self.store, self.every_s, self.stop_job = run_path, store, every_s, stop_job
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-sync", daemon=True)
        self.pushes = 0
        self.stop_asked = False

    def __enter__(self) -> LiveSync:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._push()

    def _status(self) -> dict:
        try:
            return read_json_object(self.run_path / STATUS_FILE)
        except (FileProblem, ValueError):
            return {}

    def _push(self) -> None:
        try:
            push(self.run_path.parent, self.store, [self.run_path.name])
            self.pushes += 1
        except (RemoteError, OSError) as exc:
            log.warning("sync to %s failed (tried again in %g s): %s", self.store.name, self.every_s, exc)

    def _poll_stop(self, status: dict) -> None:
        started = status.get("started_at")
        if self.stop_asked or status.get("state") != "running" or not isinstance(started, str):
            return
        try:
            if remote_stop_requested(self.store, self.run_path.name, started):
                self.stop_asked = True
                log.info("a stop was requested through %s", self.store.name)
                self.stop_job()
        except (RemoteError, OSError) as exc:
            log.warning("cannot read stop requests from %s: %s", self.store.name, exc)

    def _loop(self) -> None:
        last_state, last_push, last_poll = None, 0.0, 0.0
        while not self._done.wait(_LOOK_EVERY_S):
            status = self._status()
            state = status.get("state")
            if state != last_state or time.monotonic() - last_push >= self.every_s:
                self._push()
                last_state, last_push = state, time.monotonic()
            if time.monotonic() - last_poll >= min(self.every_s, STOP_POLL_S):
                self._poll_stop(status)
                last_poll = time.monotonic()
