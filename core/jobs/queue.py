"""The durable queue: runs (and searches) waiting for the machine's job slot, started one after another.

The queue is an ordered list in the runs root, `<runs>/.queue/queue.json` (at most
MAX_QUEUE_BYTES: an enqueue that would pass it is refused), edited under a lock (`.queue/.lock`)
by whoever adds, removes or reorders items; a file that exists but cannot be read is never
written over (QueueError), so nothing wipes a queue it could not read. Readers take it as empty. Its items are a run to train
(created `queued`, or a failed one to resume) or a search (core.sweeps.search: one trial at a time
until it has its trials). One runner process, `python -m core queue run`, takes the head item (recording its id as
`working` in the file: nothing can be moved above it, and a restarted runner goes on with it),
starts it through the one job lifecycle (core.jobs.lifecycle.start_training: the job still
waits for the machine's slot, whatever else holds it), waits for it to end and removes it; a
member that fails keeps its error in its run folder and the runner goes on. The runner exits
when the queue is empty, and looks again once it has let its lock go (an item added just then
is not left waiting).

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
    core_invocation,
    job_environment,
    job_view,
    start_detached,
    start_job,
    start_training,
    wait_for_job,
)
from core.store.files import (
    FileMissing,
    FileProblem,
    json_document,
    open_regular,
    read_json_object,
    tail_lines,
    write_text_atomic,
)
from core.store.runs import now_iso, read_run_folder, update_status, validate_run_name

QUEUE_DIR = ".queue"
QUEUE_FILE = "queue.json"
RUNNER_LOG = "runner.log"
RUNNER_LOCK = "runner.lock"
MAX_QUEUE_BYTES = 16 << 20  # ~6 grids of 1,000 members take ~1.2 MB
POLL_S = 1.0
RUNNER_TAKE_S = 3.0  # a runner starting while someone tests the lock tries this long
REMOVED = "removed from the queue before it started"
log = logging.getLogger(__name__)


class QueueError(OSError):
    """The queue's file or locks cannot be used (unreadable, too large, a link); nothing was changed."""


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


def _document(root: Path) -> dict[str, Any]:
    """The queue file's valid items and the id the runner works on (a missing file: none);
    QueueError when it exists but cannot be read."""
    try:
        data = read_json_object(queue_dir(root) / QUEUE_FILE, MAX_QUEUE_BYTES)
    except FileMissing:
        return {"items": [], "working": None}
    except FileProblem as exc:
        raise QueueError(f"the queue file cannot be read, so it is left as it is: {exc}") from None
    items = data.get("items")
    working = data.get("working")
    return {
        "items": [item for item in items if _item(item)] if isinstance(items, list) else [],
        "working": working if isinstance(working, str) else None,
    }


def _read(root: Path) -> dict[str, Any]:
    """The queue's document for a reader: an unreadable file reads as empty (logged)."""
    try:
        return _document(root)
    except QueueError as exc:
        log.warning("%s", exc)
        return {"items": [], "working": None}


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
def _editing(root: Path) -> Iterator[dict[str, Any]]:
    """The queue's document ({"items": [...], "working": ID}) to change in place, written back
    when the block ends without error; QueueError, and nothing written, when the file exists but
    cannot be read or the result would pass MAX_QUEUE_BYTES."""
    try:
        with _locked(root, ".lock"):
            document = _document(root)
            yield document
            text = json_document(document)
            if len(text.encode("utf-8")) > MAX_QUEUE_BYTES:
                raise QueueError(
                    f"the queue would hold more than {MAX_QUEUE_BYTES >> 20} MiB ({len(document['items']):,} "
                    "items): nothing was added; let some finish or cancel them first"
                )
            write_text_atomic(queue_dir(root) / QUEUE_FILE, text)
    except QueueError:
        raise
    except OSError as exc:  # the lock or the folder is a link, a folder, unwritable
        raise QueueError(f"the queue cannot be changed: {exc}") from None


def read_queue(root: Path) -> list[QueueItem]:
    """The queue's items in order (an unreadable file reads as empty)."""
    return [item for data in _read(root)["items"] if (item := _item(data))]


def enqueue(root: Path, items: list[dict[str, Any]]) -> None:
    """Add items (run_item, search_item) at the end of the queue (QueueError: none added)."""
    with _editing(root) as document:
        document["items"] += [{"id": uuid.uuid4().hex[:12], "added": now_iso(), **item} for item in items]


def move_item(root: Path, item_id: str, offset: int) -> None:
    """Move an item `offset` places (negative: nearer the head), within the queue's bounds and
    never above (nor moving) the item the runner works on."""
    with _editing(root) as document:
        queue = document["items"]
        ids = [item["id"] for item in queue]
        if item_id not in ids or item_id == document["working"]:
            return
        top = ids.index(document["working"]) + 1 if document["working"] in ids else 0
        index = ids.index(item_id)
        item = queue.pop(index)
        queue.insert(min(max(index + offset, top), len(queue)), item)


def current_item(root: Path) -> QueueItem | None:
    """The item the runner works on (the id it recorded), while a runner holds its lock."""
    document = _read(root)
    working = next(
        (item for data in document["items"] if (item := _item(data)) and item.id == document["working"]), None
    )
    return working if working and runner_running(root) else None


def cancel_items(root: Path, chosen: Callable[[QueueItem], bool]) -> list[str]:
    """Remove the `chosen` items that have not started: never the run the runner works on (stop
    it on its Run page), but a search it works on, which then ends after its current trial.
    Their runs, still `queued` without a job, are recorded `stopped` with REMOVED as their error.
    Returns the labels of the removed items."""
    working = current_item(root)
    with _editing(root) as document:
        removed = [
            item
            for data in document["items"]
            if (item := _item(data)) and chosen(item) and (item != working or item.search)
        ]
        ids = {item.id for item in removed}
        document["items"] = [data for data in document["items"] if data["id"] not in ids]
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
    """Whether a runner holds the queue's runner lock (tested with a lock, never a signal);
    QueueError when the lock cannot be tested (a link, a folder): the runner's state is unknown."""
    try:
        os.lstat(queue_dir(root) / RUNNER_LOCK)
    except FileNotFoundError:
        return False  # no runner ever ran here (a runner creates it)
    try:
        with _locked(root, RUNNER_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB):
            return False
    except BlockingIOError:
        return True
    except OSError as exc:
        raise QueueError(f"whether the queue's runner runs is unknown ({RUNNER_LOCK}: {exc})") from None


def ensure_runner(root: Path) -> bool:
    """Start the queue's runner (`python -m core --runs-dir ROOT queue run`, its own session,
    output to `.queue/runner.log`) when the queue has items and none runs; True when started.
    QueueError (nothing started) when the runner's lock cannot be tested.
    Its environment is a job's (job_environment) with the Hub token: it starts jobs that may
    pull from the Hub."""
    if not read_queue(root):
        return False
    with _locked(root, ".start.lock"):  # one starter at a time
        if runner_running(root):
            return False
        output = open_regular(queue_dir(root) / RUNNER_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            start_detached(core_invocation(root, ["queue", "run"]), output, job_environment(hub=True))
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
            if not job_view(path, "eval").active:  # one left by a runner restart is waited for
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
    (its run keeps its own error); the runner goes on. Once it has let the lock go it looks again:
    an item added meanwhile is taken (unless another runner has it)."""
    done, deadline = 0, time.monotonic() + RUNNER_TAKE_S
    while True:
        try:
            with _locked(root, RUNNER_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB):
                count, healthy = _run_held(root, poll_s)
                done += count
        except BlockingIOError:
            if done or time.monotonic() > deadline:
                return done or -1
            time.sleep(0.1)
            continue
        if not healthy or not read_queue(root):
            return done


def _take(root: Path) -> QueueItem | None:
    """The item to work on, recorded as the runner's: the one a runner before it worked on while
    still queued, else the head; None when the queue is empty."""
    with _editing(root) as document:
        items = [item for data in document["items"] if (item := _item(data))]
        item = next((i for i in items if i.id == document["working"]), items[0] if items else None)
        document["working"] = item.id if item else None
    return item


def _finish(root: Path, item_id: str) -> None:
    """Remove the done item and the runner's record of it."""
    with _editing(root) as document:
        document["items"] = [item for item in document["items"] if item["id"] != item_id]
        document["working"] = None


def _run_held(root: Path, poll_s: float) -> tuple[int, bool]:
    """Work while holding the runner lock: the items done, and False when the queue's file or lock
    failed (logged: the runner stops rather than repeat an item it cannot remove)."""
    done = 0
    while True:
        try:
            item = _take(root)
        except OSError as exc:
            log.error("the queue cannot be read or changed, the runner stops: %s", exc)
            return done, False
        if item is None:
            return done, True
        try:
            finished = _work(root, item, poll_s)
        except Exception as exc:  # noqa: BLE001 - one item's error never stops the queue
            log.error("%s: %s", item.label, describe(exc))
            finished = True
        if finished:
            try:
                _finish(root, item.id)
            except OSError as exc:
                log.error(
                    "%s is done but cannot be removed from the queue, the runner stops: %s", item.label, exc
                )
                return done, False
            done += 1


def runner_log(root: Path, lines: int = 20) -> list[str]:
    """The last lines of the runner's output."""
    return tail_lines(queue_dir(root) / RUNNER_LOG, lines)
