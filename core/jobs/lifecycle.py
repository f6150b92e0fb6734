"""Jobs: training, evaluation and export as processes of their own.

A job is `python -m core <kind> RUN ...` started in its own process session with its output
in the run folder, so it outlives a page reload and a restart of the dashboard; pages
re-attach by reading the run folder. Nothing here touches Streamlit.

Files a job leaves in its run folder:
- its state: `status.json` for training (written by the training job), `jobs/<kind>.json`
  for eval and export (written by `recorded_job` inside the command);
- its output: `train.log`, or `jobs/<kind>.log`;
- `jobs/<kind>.launch.json`: written only by whoever launched or stopped the job (pid, host,
  process start time, command, stop request), so a job that dies before it writes anything
  is still found dead.

One job at a time per machine: every job takes the machine's job slot (an flock in the
cache folder) before its heavy work. A job started while another holds the slot is not
refused: it waits in state `queued`, naming the job it waits for, and starts by itself when
the slot frees. Queue the lab's experiments one after another and leave them.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from core import describe
from core.jobs.processes import job_alive, job_identity, process_start
from core.store.files import read_json_or_empty, tail_lines, write_json_atomic
from core.store.paths import PROJECT_DIR, cache_dir
from core.store.runs import (
    STATUS_FILE,
    TRAIN_LOG,
    Run,
    merge_document,
    now_iso,
    read_run_folder,
    update_status,
)

JOB_KINDS = ("train", "eval", "export")
JOBS_DIR = "jobs"
SLOT_FILE = "job-slot.lock"
ACTIVE_STATES = ("queued", "running")
STOP_GRACE_S = 30.0


Progress = Callable[[str, "float | None"], None]
"""What a job's work reports its stage with: JobHandle.stage, or any function of (text, fraction)."""


class JobError(RuntimeError):
    """A job cannot be started or stopped now; the message says why."""


class JobStopped(Exception):
    """Raised inside a recorded job when a stop (SIGTERM or SIGINT) arrives."""


def _check_kind(kind: str) -> str:
    if kind not in JOB_KINDS:
        raise JobError(f"unknown job kind {kind!r}: one of {', '.join(JOB_KINDS)}")
    return kind


def state_path(run_path: Path, kind: str) -> Path:
    """The file holding the job's state: status.json for training, jobs/<kind>.json otherwise."""
    return run_path / STATUS_FILE if _check_kind(kind) == "train" else run_path / JOBS_DIR / f"{kind}.json"


def log_path(run_path: Path, kind: str) -> Path:
    """The job's output: train.log for training, jobs/<kind>.log otherwise."""
    return run_path / TRAIN_LOG if _check_kind(kind) == "train" else run_path / JOBS_DIR / f"{kind}.log"


def launch_path(run_path: Path, kind: str) -> Path:
    """The launcher's record of the job's process and of any stop request."""
    return run_path / JOBS_DIR / f"{_check_kind(kind)}.launch.json"


def _merge(path: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into the JSON object at `path` (stamping updated_at) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return merge_document(path, {}, **changes)


@contextmanager
def _control(run_path: Path, kind: str) -> Iterator[None]:
    """Serialize those who launch, stop or record the end of a run's job of this kind (not the
    job itself): a launch's reset-start-record and a dead job's recording never interleave."""
    path = run_path / JOBS_DIR / f".{kind}.control"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- the machine's job slot --------------------------------------------------------------


def slot_path() -> Path:
    """The lock file that admits one job at a time on this machine."""
    return cache_dir() / SLOT_FILE


@contextmanager
def job_slot(holder: str, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the machine's job slot for the block; wait for it, calling `on_wait(holder)`, if taken."""
    path = slot_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
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


# --- inside a job ------------------------------------------------------------------------


class JobHandle:
    """What a recorded job uses to report its stage."""

    def __init__(self, path: Path):
        self.path = path

    def stage(self, text: str, fraction: float | None = None) -> None:
        """Record the current stage (and progress from 0 to 1), and print it as one log line."""
        _merge(self.path, stage=text, fraction=fraction)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stderr, flush=True)


@contextmanager
def _signals_raise_stop() -> Iterator[None]:
    """Turn the first SIGTERM/SIGINT into JobStopped; a second one acts as usual."""
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum: int, frame: Any) -> None:
        for sig in signals:
            signal.signal(sig, previous[sig])
        raise JobStopped(f"stopped by {signal.Signals(signum).name}")

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in signals:
            signal.signal(sig, previous[sig])


@contextmanager
def _own_lock(run_path: Path, kind: str) -> Iterator[None]:
    """One job of a kind per run at a time."""
    path = run_path / JOBS_DIR / f".{kind}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"an {kind} job of run {run_path.name} is already running") from None
        yield


@contextmanager
def recorded_job(run_path: Path, kind: str) -> Iterator[JobHandle]:
    """Record the eval or export job that runs the block in `jobs/<kind>.json`.

    Waits for the machine's job slot (state `queued`), then `running`; `completed` when the
    block returns, `stopped` when a SIGTERM/SIGINT arrives (JobStopped is raised inside the
    block, so its cleanup runs), `failed` with the error's first line when an exception
    escapes. The exception propagates either way.
    """
    if _check_kind(kind) == "train":
        raise JobError("training records its own state in status.json")
    path = state_path(run_path, kind)
    handle = JobHandle(path)
    with _own_lock(run_path, kind), _signals_raise_stop():
        _merge(path, state="queued", **job_identity(), created_at=now_iso(), started_at=None, ended_at=None,
               error=None, stage="waiting for the job slot", fraction=None, waiting_for=None)
        try:
            with job_slot(f"{kind} of {run_path.name}", lambda holder: _merge(path, waiting_for=holder)):
                _merge(path, state="running", started_at=now_iso(), waiting_for=None, stage="starting")
                yield handle
        except JobStopped:
            _merge(path, state="stopped", ended_at=now_iso())
            raise
        except BaseException as exc:
            _merge(path, state="failed", ended_at=now_iso(), error=describe(exc)[:500])
            raise
        _merge(path, state="completed", ended_at=now_iso(), stage="done", fraction=1.0)


# --- launching, watching and stopping ----------------------------------------------------


def _launch(run_path: Path, kind: str, arguments: list[str], secrets: dict[str, str] | None = None) -> int:
    """Start `python -m core --runs-dir ROOT <arguments>` as its own session; return its pid.

    `secrets` (a Hub token, say) reach the job through its environment only: they are in no
    file, no command line and no log.
    """
    command = [sys.executable, "-m", "core", "--runs-dir", str(run_path.parent), *arguments]
    log = log_path(run_path, kind)
    (run_path / JOBS_DIR).mkdir(exist_ok=True)
    with log.open("ab") as output:
        output.write(f"\n=== {now_iso()} {shlex.join(['python', *command[1:]])}\n".encode())
        output.flush()
        process = subprocess.Popen(
            command, cwd=PROJECT_DIR, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, **(secrets or {}), "PYTHONUNBUFFERED": "1"},
        )
    write_json_atomic(launch_path(run_path, kind), {
        **job_identity(), "pid": process.pid, "pid_start": process_start(process.pid),
        "command": shlex.join(["python", *command[1:]]), "launched_at": now_iso(),
    })
    return process.pid


@contextmanager
def _launching(run_path: Path, kind: str) -> Iterator[None]:
    """Hold the run's control lock for a launch, refusing while a job of this kind lives."""
    job_view(run_path, kind)  # records a job found dead, outside the lock it takes
    with _control(run_path, kind):
        view = job_view(run_path, kind, reconcile=False)
        if view.active:
            raise JobError(f"a {kind} job of run {run_path.name} is already {view.state}")
        yield


def start_training(run_path: Path, *, resume: bool = False) -> int:
    """Start the training job of a queued run, or resume a stopped or failed one; return its pid.

    Raises JobError when the run is not in a state that allows it.
    """
    from core.train.training import TrainingError, trainable_config

    with _launching(run_path, "train"):
        run = read_run_folder(run_path)
        try:
            trainable_config(run, resume=resume)
        except TrainingError as exc:
            raise JobError(str(exc)) from None
        if resume:
            update_status(run_path, state="queued", pid=None, host=None, pid_start=None, ended_at=None, error=None,
                          log_tail=None, waiting_for=None)
        return _launch(run_path, "train", ["train", run.name, *(["--resume"] if resume else [])])


def start_job(run_path: Path, kind: str, arguments: list[str], secrets: dict[str, str] | None = None) -> int:
    """Start an eval or export job of the run with extra command-line `arguments` (and `secrets`
    in its environment); return its pid."""
    if _check_kind(kind) == "train":
        raise JobError("use start_training for training jobs")
    if not run_path.is_dir():
        raise JobError(f"no run folder at {run_path}")
    with _launching(run_path, kind):
        write_json_atomic(state_path(run_path, kind), {
            "state": "queued", "pid": None, "created_at": now_iso(), "updated_at": now_iso(), "started_at": None,
            "ended_at": None, "error": None, "stage": "starting", "fraction": None, "waiting_for": None,
        })
        return _launch(run_path, kind, [kind, run_path.name, *arguments], secrets)


@dataclass(frozen=True)
class JobView:
    """A job as the pages and the command line see it."""

    kind: str
    state: str | None  # None: never started
    alive: bool
    pid: int | None
    status: dict[str, Any]
    launch: dict[str, Any]
    log: Path

    @property
    def active(self) -> bool:
        """Queued or running, with its process alive."""
        return self.state in ACTIVE_STATES and self.alive

    @property
    def waiting_for(self) -> str | None:
        """The job this one waits for, when it is queued behind another."""
        return self.status.get("waiting_for") if self.state == "queued" else None

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for and the job has not ended yet."""
        return self.active and _stop_request(self.launch, _process_of(self.status, self.launch)) is not None

    @property
    def error(self) -> str | None:
        """The error the job ended with, if any."""
        return self.status.get("error")

    def tail(self, lines: int = 20) -> list[str]:
        """The last lines of the job's output."""
        return tail_lines(self.log, lines)


def _process_of(status: dict[str, Any], launch: dict[str, Any]) -> dict[str, Any]:
    """The identity of the job's process: the one it recorded, else the launched one."""
    return status if status.get("pid") else launch


def _stop_request(launch: dict[str, Any], process: dict[str, Any]) -> dict[str, Any] | None:
    """The stop request recorded for this process (pid and start time), if there is one; older
    requests were for earlier jobs of the run."""
    request = launch.get("stop")
    if not isinstance(request, dict) or process.get("pid") is None:
        return None
    same = request.get("pid") == process.get("pid") and request.get("pid_start") == process.get("pid_start")
    return request if same else None


def _ended_by_death(run_path: Path, kind: str, launch: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """Record a job whose process is gone while its state says queued or running."""
    changes: dict[str, Any] = {"ended_at": now_iso()}
    request = _stop_request(launch, _process_of(status, launch))
    if request:
        changes["state"] = "stopped"
        if request.get("killed_at"):
            changes["error"] = f"killed: it did not stop within {STOP_GRACE_S:.0f} s of the stop request"
    else:
        tail = tail_lines(log_path(run_path, kind))
        last = next((line for line in reversed(tail) if line.strip() and not line.startswith("===")), None)
        started = status.get("state") == "running"
        reason = "process died" if started else "the job exited before it started"
        changes |= {"state": "failed", "error": f"{reason}" + (f" (last output: {last.strip()[:300]})" if last else ""),
                    "log_tail": tail}
    if kind == "train":
        return update_status(run_path, **changes)
    return _merge(state_path(run_path, kind), **changes)


def _look(run_path: Path, kind: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bool]:
    """The job's state and launch records, its process identity, and whether that process lives."""
    status, launch = read_json_or_empty(state_path(run_path, kind)), read_json_or_empty(launch_path(run_path, kind))
    process = _process_of(status, launch)
    return status, launch, process, job_alive(process) if process.get("pid") else False


def job_view(run_path: Path, kind: str, *, reconcile: bool = True) -> JobView:
    """The job's state, checked against its process.

    With `reconcile`, a job that is queued or running by its files but whose process is gone
    on this machine is recorded as ended here, so every reader agrees: `stopped` when a stop
    was requested, else `failed` ("process died"); and a stop request older than the grace
    period is enforced with SIGKILL. The recording happens under the run's control lock
    after reading the files again: a death is final, so what is read then is what the job
    left, and a launch in progress is waited for. Jobs on another host are reported as their
    files say.
    """
    status, launch, process, alive = _look(run_path, kind)
    if reconcile and status.get("state") in ACTIVE_STATES and process.get("pid"):
        request = _stop_request(launch, process)
        if alive and request and not request.get("killed_at"):
            alive = _enforce_stop(run_path, kind, launch, process)
        foreign = process.get("host") not in (None, job_identity()["host"])
        if not alive and not foreign:
            with _control(run_path, kind):
                status, launch, process, alive = _look(run_path, kind)
                if status.get("state") in ACTIVE_STATES and process.get("pid") and not alive:
                    status = _ended_by_death(run_path, kind, launch, status)
    pid = process.get("pid")
    return JobView(kind, status.get("state"), alive, pid if isinstance(pid, int) else None, status, launch,
                   log_path(run_path, kind))


def _signal_job(process: dict[str, Any], signum: int) -> None:
    """Send `signum` to the job's process group when it leads one, else to the process."""
    pid = process["pid"]
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _enforce_stop(run_path: Path, kind: str, launch: dict[str, Any], process: dict[str, Any]) -> bool:
    """SIGKILL a job that ignored its stop request for the grace period; return whether it lives."""
    request = launch["stop"]
    if time.time() - float(request.get("requested_s") or 0) < STOP_GRACE_S:
        return True
    _signal_job(process, signal.SIGKILL)
    with _control(run_path, kind):
        _merge(launch_path(run_path, kind), stop={**request, "killed_at": now_iso()})
    for _ in range(50):
        if not job_alive(process):
            return False
        time.sleep(0.1)
    return job_alive(process)


def request_stop(run_path: Path, kind: str) -> JobView:
    """Ask a queued or running job to stop (SIGTERM to its process group).

    A training job saves a checkpoint at its current step and ends `stopped`; a job that
    has not stopped after STOP_GRACE_S is killed the next time it is looked at.
    """
    view = job_view(run_path, kind)
    if not view.active:
        raise JobError(f"run {run_path.name} has no {kind} job running")
    process = _process_of(view.status, view.launch)
    with _control(run_path, kind):
        _merge(launch_path(run_path, kind), stop={"pid": view.pid, "pid_start": process.get("pid_start"),
                                                   "requested_at": now_iso(), "requested_s": time.time(),
                                                   "killed_at": None})
    _signal_job(process, signal.SIGTERM)
    return job_view(run_path, kind)


def wait_for_job(run_path: Path, kind: str, timeout_s: float, poll_s: float = 0.2) -> JobView:
    """Look at the job until it is no longer active or `timeout_s` passes; return the last view."""
    deadline = time.monotonic() + timeout_s
    view = job_view(run_path, kind)
    while view.active and time.monotonic() < deadline:
        time.sleep(poll_s)
        view = job_view(run_path, kind)
    return view


def delete_run(run_path: Path) -> None:
    """Delete a run folder; JobError while any of its jobs is queued or running.

    The folder is first renamed to a hidden name, so it leaves the runs list at once and a
    failure half-way leaves no half-deleted run behind.
    """
    busy = [view.kind for kind in JOB_KINDS if (view := job_view(run_path, kind)).active]
    if busy:
        raise JobError(f"run {run_path.name} has a {busy[0]} job {job_view(run_path, busy[0]).state}: stop it first")
    doomed = run_path.with_name(f".deleting-{run_path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(run_path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def with_live_states(runs: list[Run]) -> list[Run]:
    """`runs` with every queued or running training job checked against its process; a job
    found dead is recorded as ended (see job_view) and its run read again."""
    return [
        read_run_folder(run.path) if run.state in ACTIVE_STATES and job_view(run.path, "train").state != run.state
        else run
        for run in runs
    ]
