"""The machine's job slot: one job at a time on this machine, whatever its kind.

The slot is an flock on a file in the cache folder, held by a job for its heavy work; the
file names the holder, so a job that waits can say what it waits for. It is opened as run-folder
files are (core.store.files.open_regular): a link planted in its place is not followed.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from core.store.files import open_regular
from core.store.paths import cache_dir

SLOT_FILE = "job-slot.lock"


def slot_path() -> Path:
    """The lock file that admits one job at a time on this machine."""
    return cache_dir() / SLOT_FILE


@contextmanager
def job_slot(holder: str, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the machine's job slot for the block; wait for it, calling `on_wait(holder)`, if taken."""
    path = slot_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_regular(path, os.O_RDWR | os.O_CREAT), "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            on_wait(handle.read().strip() or "another job")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{holder} (pid {os.getpid()})")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
