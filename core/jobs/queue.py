"""The durable queue: runs (and searches) waiting for the machine's job slot, started one after another.

The queue is an ordered list in the runs root, `<runs>/.queue/queue.json`, edited under a lock
(`.queue/.lock`) by whoever adds, removes or reorders items. Its items are a run to train
(created `queued`, or a failed one to resume) or a search (core.sweeps.search: one trial at a time
until it has its trials). One runner process, `python -m core queue run`, takes the head item,
starts it through the one job lifecycle (core.jobs.lifecycle.start_training: the job still
waits for the machine's slot, whatever else holds it), waits for it to end and removes it; a
member that fails keeps its error in its run folder and the runner goes on. The runner exits
when the queue is empty.

The runner holds `.queue/runner.lock` while it lives: `ensure_runner`, called by the dashboard's
pages and the command line, starts one when the queue has items and no runner holds the lock,
so a queue left by a stopped dashboard or a restarted machine continues at the next look. A
runner killed while a member trains leaves the member running in its own session: the next
runner waits for it. Nothing here signals a process: cancelling the rest removes items that
have not started (their runs are recorded `stopped`, "removed from the queue"); a running member
is stopped on its Run page.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import describe
from core.jobs.lifecycle import (
    JobError,
    job_environment,
    job_view,
    start_job,
    start_training,
    wait_for_job,
)
from core.store.files import (
    FileMissing,
    FileProblem,
    open_regular,
    read_json_object,
    tail_lines,
    write_json_atomic,
)
from core.store.paths import PROJECT_DIR
from core.store.runs import now_iso, read_run_folder, update_status, validate_run_name

QUEUE_DIR = ".queue"
QUEUE_FILE = "queue.json"
RUNNER_LOG = "runner.log"
POLL_S = 1.0
RUNNER_TAKE_S = 3.0  # a runner starting while someone tests the lock tries this long
REMOVED = "removed from the queue before it started"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueItem:
    """One entry of the queue: a run to train, or a search to advance by a trial."""

    id: str
    run: str | None = None
    search: str | None = None
    sweep: str | None = None
    resume: bool = False
    evaluate: bool = False  # evaluate the adapter after training (for the checks_passed objective)
    added: str = ""

    @property
    def label(self) -> str:
        """How lists show it."""
        if self.search:
            return f"search {self.search}"
        return f"{self.run}" + (" (resume)" if self.resume else "")


def run_item(
    name: str, *, sweep: str | None = None, resume: bool = False, evaluate: bool = False
) -> dict[str, Any]:
    """A queue item that trains the run `name` (resumes it with `resume`)."""
    return {"run": validate_run_name(name), "sweep": sweep, "resume": resume, "evaluate": evaluate}


def search_item(sweep: str) -> dict[str, Any]:
    """A queue item that runs the search `sweep` trial by trial until it has its trials."""
    return {"search": validate_run_name(sweep), "sweep": sweep}


def queue_dir(root: Path) -> Path:
    """The queue's folder in a runs root."""
    return root / QUEUE_DIR


def _item(data: Any) -> QueueItem | None:
    """A queue item from the file, or None for anything else (the file may come from elsewhere)."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return None
    try:
        run = validate_run_name(data["run"]) if data.get("run") is not None else None
        search = validate_run_name(data["search"]) if data.get("search") is not None else None
        sweep = validate_run_name(data["sweep"]) if data.get("sweep") is not None else None
    except ValueError:
        return None
    if (run is None) == (search is None):
        return None
    return QueueItem(
        data["id"],
        run,
        search,
        sweep,
        data.get("resume") is True,
        data.get("evaluate") is True,
        str(data.get("added") or ""),
    )


def _read(root: Path) -> list[dict[str, Any]]:
    try:
        items = read_json_object(queue_dir(root) / QUEUE_FILE).get("items")
    except FileMissing:
        return []
    except FileProblem as exc:
        log.warning("the queue file cannot be read (%s): taken as empty", exc)
        return []
    return [item for item in items if _item(item)] if isinstance(items, list) else []


@contextmanager
def _locked(root: Path, name: str, flags: int = fcntl.LOCK_EX) -> Iterator[int]:
    """Hold an flock on `.queue/<name>` for the block (BlockingIOError with LOCK_NB when taken)."""
    folder = queue_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = open_regular(folder / name, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(descriptor, flags)
        yield descriptor
    finally:
        os.close(descriptor)


@contextmanager
def _editing(root: Path) -> Iterator[list[dict[str, Any]]]:
    """The queue's items to change in place, written back when the block ends without error."""
    with _locked(root, ".lock"):
        items = _read(root)
        yield items
        write_json_atomic(queue_dir(root) / QUEUE_FILE, {"items": items})


def read_queue(root: Path) -> list[QueueItem]:
    """The queue's items in order (an unreadable file reads as empty)."""
    return [item for data in _read(root) if (item := _item(data))]


def enqueue(root: Path, items: list[dict[str, Any]]) -> None:
    """Add items (run_item, search_item) at the end of the queue."""
    with _editing(root) as queue:
        queue += [{"id": uuid.uuid4().hex[:12], "added": now_iso(), **item} for item in items]


def remove_item(root: Path, item_id: str) -> None:
    """Remove one item (gone already: nothing happens)."""
    with _editing(root) as queue:
        queue[:] = [item for item in queue if item["id"] != item_id]


def move_item(root: Path, item_id: str, offset: int) -> None:
    """Move an item `offset` places (negative: nearer the head), within the queue's bounds."""
    with _editing(root) as queue:
        index = next((i for i, item in enumerate(queue) if item["id"] == item_id), None)
        if index is None:
            return
        item = queue.pop(index)
        queue.insert(min(max(index + offset, 0), len(queue)), item)


def current_item(root: Path) -> QueueItem | None:
    """The item the runner works on: the head, while a runner holds its lock."""
    items = read_queue(root)
    return items[0] if items and runner_running(root) else None


def cancel_items(root: Path, chosen: Callable[[QueueItem], bool]) -> list[str]:
    """Remove the `chosen` items that have not started: never the run the runner works on (stop
    it on its Run page), but a search it works on, which then ends after its current trial.
    Their runs, still `queued` without a job, are recorded `stopped` with REMOVED as their error.
    Returns the labels of the removed items."""
    working = current_item(root)
    with _editing(root) as queue:
        removed = [
            item
            for data in queue
            if (item := _item(data)) and chosen(item) and (item != working or item.search)
        ]
        ids = {item.id for item in removed}
        queue[:] = [data for data in queue if data["id"] not in ids]
    for item in removed:
        path = root / item.run if item.run else None
        if path and read_run_folder(path).state == "queued" and not job_view(path, "train").active:
            update_status(path, state="stopped", error=REMOVED)
    return [item.label for item in removed]


def cancel_rest(root: Path, sweep: str | None = None) -> list[str]:
    """Cancel the rest: remove every item that has not started (of `sweep` only, when given)."""
    return cancel_items(root, lambda item: sweep is None or item.sweep == sweep)


def retry_failed(
    root: Path, runs: list[str], *, sweep: str | None = None, search: bool = False, evaluate: bool = False
) -> list[str]:
    """Queue again the runs of `runs` that failed or were stopped (to resume from their last
    checkpoint) and, with `search`, the search `sweep` (to go on to its trials), unless queued
    already; returns the labels queued."""
    queued = read_queue(root)
    waiting = {item.run for item in queued} | {item.search for item in queued}
    items = [
        run_item(name, sweep=sweep, resume=True, evaluate=evaluate)
        for name in runs
        if name not in waiting and read_run_folder(root / name).state in ("failed", "stopped")
    ]
    if search and sweep and sweep not in waiting:
        items.append(search_item(sweep))
    enqueue(root, items)
    return [item.get("search") or item["run"] for item in items]


# --- the runner ----------------------------------------------------------------------------


def runner_running(root: Path) -> bool:
    """Whether a runner holds the queue's runner lock (tested with a lock, never a signal)."""
    if not (queue_dir(root) / "runner.lock").exists():
        return False
    try:
        with _locked(root, "runner.lock", fcntl.LOCK_EX | fcntl.LOCK_NB):
            return False
    except BlockingIOError:
        return True


def ensure_runner(root: Path) -> bool:
    """Start the queue's runner (`python -m core --runs-dir ROOT queue run`, its own session,
    output to `.queue/runner.log`) when the queue has items and none runs; True when started.
    Its environment is a job's (job_environment) with the Hub token: it starts jobs that may
    pull from the Hub."""
    if not read_queue(root):
        return False
    with _locked(root, ".start.lock"):  # one starter at a time
        if runner_running(root):
            return False
        command = [sys.executable, "-m", "core", "--runs-dir", str(root.resolve()), "queue", "run"]
        output = open_regular(queue_dir(root) / RUNNER_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            subprocess.Popen(
                command,
                cwd=PROJECT_DIR,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=job_environment(hub=True),
            )
        finally:
            os.close(output)
        deadline = time.monotonic() + RUNNER_TAKE_S  # until it holds the lock: no second start meanwhile
        while not runner_running(root) and time.monotonic() < deadline:
            time.sleep(0.05)
    return True


def run_member(path: Path, *, resume: bool = False, evaluate: bool = False, poll_s: float = POLL_S) -> str:
    """Train the run at `path` through the job lifecycle and wait for it to end; return its state.
    A run already training (started by hand, or before a runner restart) is waited for; one
    that cannot be started is recorded `failed` with the reason. With `evaluate`, a completed
    run's adapter is evaluated (an `eval` job) before this returns."""
    view = job_view(path, "train")
    if not view.active:
        state = read_run_folder(path).state
        if state == "queued" or (resume and state in ("failed", "stopped")):
            try:
                start_training(path, resume=resume and state != "queued")
            except (JobError, OSError) as exc:
                update_status(path, state="failed", error=f"the queue could not start it: {exc}")
                return "failed"
    state = wait_for_job(path, "train", math.inf, poll_s).state or "failed"
    if evaluate and state == "completed":
        try:
            start_job(path, "eval", [])
        except (JobError, OSError) as exc:
            log.warning("could not evaluate %s: %s", path.name, exc)
        else:
            wait_for_job(path, "eval", math.inf, poll_s)
    return state


def _work(root: Path, item: QueueItem, poll_s: float) -> bool:
    """Do the head item's next piece of work; True when the item is done."""
    if item.search:
        from core.sweeps.search import advance_search

        return advance_search(root, item.search, poll_s=poll_s)
    path = root / item.run
    if not path.is_dir():
        log.warning("%s: no such run, left out", item.run)
        return True
    state = run_member(path, resume=item.resume, evaluate=item.evaluate, poll_s=poll_s)
    log.info("%s: %s", item.run, state)
    return True


def run_queue(root: Path, poll_s: float = POLL_S) -> int:
    """The runner: work on the queue's head until the queue is empty; return the items done, or
    -1 when another runner holds the lock. An error in one item is logged and the item dropped
    (its run keeps its own error); the runner goes on."""
    deadline = time.monotonic() + RUNNER_TAKE_S
    while True:
        try:
            with _locked(root, "runner.lock", fcntl.LOCK_EX | fcntl.LOCK_NB):
                return _run_held(root, poll_s)
        except BlockingIOError:
            if time.monotonic() > deadline:
                return -1
            time.sleep(0.1)


def _run_held(root: Path, poll_s: float) -> int:
    done = 0
    while items := read_queue(root):
        item = items[0]
        try:
            finished = _work(root, item, poll_s)
        except Exception as exc:  # noqa: BLE001 - one item's error never stops the queue
            log.error("%s: %s", item.label, describe(exc))
            finished = True
        if finished:
            remove_item(root, item.id)
            done += 1
    return done


def runner_log(root: Path, lines: int = 20) -> list[str]:
    """The last lines of the runner's output."""
    return tail_lines(queue_dir(root) / RUNNER_LOG, lines)
