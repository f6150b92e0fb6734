"""The one lifecycle of every job: training, evaluation and export as processes of their own.

A job is `python -m core <kind> RUN ...` started in its own process session with its output
in the run folder, so it outlives a page reload and a restart of the dashboard; pages
re-attach by reading the run folder. Nothing here touches Streamlit. Two sides, one module:

- inside the job process, `run_job(run_path, kind)` runs the job's work: it takes the run's
  lock for this kind, starts the group watch (core.jobs.processes.watch_job_group) that ends a
  job ignoring its stop request, waits for the machine's job slot (core.jobs.slot) in state
  `queued`, sweeps what killed writers left in the run folder, records `running`, and ends
  `completed`, `stopped` (after a SIGTERM/SIGINT) or `failed` (with the error and the log's last
  lines). It hands the work a JobControl (core.jobs.protocol), the only thing job code knows
  of all this;
- in the dashboard and the command line, `start_job` launches a job with a minimal environment
  (`job_environment`: a Hub token only for a job that pushes or pulls), `job_view` reads its
  state checked against its process (recording a death it finds), `request_stop` asks it to
  stop, `kill_job` kills it at once, and `delete_run` deletes a run without jobs.

A process is the job only when pid, start time, host and its command line all match (see
core.jobs.processes); anything less is a dead job, recorded as such and never signalled.
Reading and listing (job_view, with_live_states) never send a signal: only a person's stop or
kill does, and only to a verified job. The grace period of a stop is enforced by the job's own
group watch, which SIGKILLs the job's process group STOP_GRACE_S (30 s; $PEFT_STOP_GRACE_S)
after the stop request; `kill_job` is there for a job that outlives even that.

Files a job leaves in its run folder (opened without following a symbolic link: a planted link
makes the launch or the job fail with a message saying which file, and is never followed):
- its state: `jobs/<kind>.json`, except training's, which is the run's `status.json`
  (training also writes its progress there: step, max_steps, training_s, resumes);
- its output: `jobs/<kind>.log`, except training's, which is `train.log`;
- `jobs/<kind>.launch.json`: written only by whoever launched, stopped or killed the job (pid,
  host, process start time, command, stop request), so a job that dies before it writes
  anything is still found dead;
- the lock files `.<kind>.lock` (held by the job) and `jobs/.<kind>.control` (held by those who
  launch, stop, kill, record a death or delete the run).

One job at a time per machine: a job started while another holds the slot is not refused:
it waits in state `queued`, naming the job it waits for, and starts by itself when the slot
frees. Queue the lab's experiments one after another and leave them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import describe
from core.jobs.processes import (
    JOB_VARIABLE_PREFIXES,
    JOB_VARIABLES,
    NETWORK_VARIABLES,
    chosen_environment,
    core_command,
    job_alive,
    job_identity,
    process_start,
    runs_job,
    same_process,
    start_group_watch,
)
from core.jobs.protocol import STOP_GRACE_ENV, JobControl, JobStopped, stop_grace_s
from core.jobs.slot import job_slot
from core.store.files import (
    delete_dir,
    finite_number,
    open_regular,
    read_json_or_empty,
    sweep_debris,
    tail_lines,
    why_not_opened,
    write_json_atomic,
)
from core.store.paths import CACHE_DIR_ENV, PROJECT_DIR, RUNS_DIR_ENV, runs_root_side
from core.store.runs import (
    CONFIG_FILE,
    GGUF_DIR,
    STATUS_FILE,
    TRAIN_LOG,
    Run,
    merge_document,
    now_iso,
    read_run_folder,
)


@dataclass(frozen=True)
class JobKind:
    """What the lifecycle says about a kind of job."""

    title: str  # in messages: "training of run1 failed"
    out_of_memory_hint: str  # added to an out-of-memory error


KINDS = {
    "train": JobKind("training", "try a smaller batch_size or max_seq_length, or load_in_4bit=true"),
    "eval": JobKind("evaluation", "try a smaller max_new_tokens, or the GGUF variant on the CPU"),
    "export": JobKind("export", "the merge holds the base model in 16-bit: try a machine with more memory"),
    "bench": JobKind("benchmark", "try a smaller --batch-size, or fewer examples with --limit"),
}
JOB_KINDS = tuple(KINDS)  # the one list of job kinds: python -m core <kind> RUN ...
JOBS_DIR = "jobs"
ACTIVE_STATES = ("queued", "running")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXEC_WAIT_S = 5.0  # for a launched job's command line to show in /proc
JOB_LOG = logging.getLogger("core")  # a job's stage lines come from core.jobs.protocol, core.train.*, ...
log = logging.getLogger(__name__)


class JobError(RuntimeError):
    """A job cannot be started or stopped now; the message says why."""


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
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


def lock_path(run_path: Path, kind: str) -> Path:
    """The lock a job holds while it runs (one job of a kind per run at a time), beside its state file."""
    return state_path(run_path, kind).with_name(f".{kind}.lock")


def _merge(path: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into the JSON object at `path` (stamping updated_at) and return it. A
    missing jobs/ folder is made, never a missing run folder: a run deleted meanwhile stays deleted."""
    if path.name != STATUS_FILE:  # status.json lies in the run folder itself, the others in jobs/
        path.parent.mkdir(exist_ok=True)
    return merge_document(path, {}, **changes)


def _open_run_file(path: Path, flags: int) -> int:
    """Open (creating it when missing) one of the lifecycle's own files in a run folder, a log or
    a lock, through open_regular; JobError saying which file when it is a symbolic link (or its
    folder is) or not a regular file: nothing planted there is followed."""
    try:
        return open_regular(path, flags | os.O_CREAT)
    except OSError as exc:
        raise JobError(f"cannot open {path.parent.name}/{path.name}: {why_not_opened(exc)}") from None


def _reset(path: Path, **changes: Any) -> dict[str, Any]:
    """Clear the state file's record of an earlier job for a new one; created_at is written only
    when the file has none (status.json's is when the run was created: runs are listed by it)."""
    cleared: dict[str, Any] = {
        "pid": None,
        "host": None,
        "pid_start": None,
        "started_at": None,
        "ended_at": None,
        "error": None,
        "log_tail": None,
        "fraction": None,
        "waiting_for": None,
        **changes,
    }
    if not read_json_or_empty(path).get("created_at"):
        cleared["created_at"] = now_iso()
    return _merge(path, **cleared)


@contextmanager
def _control(run_path: Path, kind: str) -> Iterator[None]:
    """Serialize those who launch, stop, kill or record the end of a run's job of this kind, and
    who delete the run (not the job itself): a launch's reset-start-record, a dead job's
    recording and a deletion never interleave. JobError for a run folder that is a symbolic link:
    no job is started, stopped or recorded through one."""
    if run_path.is_symlink():
        raise JobError(f"run {run_path.name} is a symbolic link to another folder: not followed")
    try:
        (run_path / JOBS_DIR).mkdir(exist_ok=True)
    except FileNotFoundError:  # deleted meanwhile
        raise JobError(f"no run folder at {run_path}") from None
    descriptor = _open_run_file(run_path / JOBS_DIR / f".{kind}.control", os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def failure_text(kind: str, exc: BaseException) -> str:
    """How a job's failure is recorded: the error's type and first line, with a hint for out-of-memory."""
    line = describe(exc)
    if "out of memory" in line.lower():
        line += f" ({KINDS[kind].out_of_memory_hint})"
    return line[:500]


# --- inside a job ------------------------------------------------------------------------


@contextmanager
def _own_lock(run_path: Path, kind: str) -> Iterator[None]:
    """One job of a kind per run at a time."""
    path = lock_path(run_path, kind)
    path.parent.mkdir(exist_ok=True)
    descriptor = _open_run_file(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            job = f"the {KINDS[kind].title} of run {run_path.name}"
            raise JobError(f"{job} is already running in another process") from None
        yield
    finally:
        os.close(descriptor)


def _same_file(stream: Any, path: Path) -> bool:
    """Whether `stream` writes to the file at `path` (a link there is another file)."""
    try:
        mine, theirs = os.fstat(stream.fileno()), os.lstat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


@contextmanager
def _job_logging(path: Path) -> Iterator[logging.Handler]:
    """Log the `core` loggers' lines to stderr and to the job's log (once when stderr is the log,
    as in a launched job); yield the handler that writes the log."""
    if not sys.stderr.isatty():  # progress bars would fill the log with carriage returns
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    with ExitStack() as stack:
        console: logging.Handler = logging.StreamHandler(sys.stderr)
        handlers = [console]
        to_file = console
        if not _same_file(sys.stderr, path):
            log_file = os.fdopen(_open_run_file(path, os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8")
            stack.enter_context(log_file)
            to_file = logging.StreamHandler(log_file)
            handlers.append(to_file)
        before = JOB_LOG.level, JOB_LOG.propagate
        for handler in handlers:
            handler.setFormatter(formatter)
            JOB_LOG.addHandler(handler)
        JOB_LOG.setLevel(logging.INFO)
        JOB_LOG.propagate = False
        try:
            yield to_file
        finally:
            for handler in handlers:
                JOB_LOG.removeHandler(handler)
                handler.close()
            JOB_LOG.setLevel(before[0])
            JOB_LOG.propagate = before[1]


@contextmanager
def _stop_signals(control: JobControl, raise_now: Callable[[], bool]) -> Iterator[None]:
    """Turn the first SIGTERM/SIGINT into the control's stop request, raising JobStopped at once
    when `raise_now()` says so. After it, a second SIGINT (Ctrl-C twice in a terminal) acts as it
    did before the job (KeyboardInterrupt in the command line), while a further SIGTERM is
    ignored: the stop is under way (training is saving its checkpoint), and only the group
    watch's SIGKILL after the grace period (or kill_job) ends a job that does not finish it."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    stopping = [False]

    def restore(sig: int) -> None:
        action = previous[sig]
        signal.signal(sig, signal.SIG_DFL if action is None else action)

    def handler(signum: int, frame: Any) -> None:
        # Only set the flag (or raise): logging from a signal handler can re-enter a stream mid-write.
        if stopping[0]:
            return  # a repeated SIGTERM (SIGINT's own action is back by now)
        stopping[0] = True
        restore(signal.SIGINT)
        name = signal.Signals(signum).name
        control.request_stop(name)
        if raise_now():
            raise JobStopped(f"stopped by {name}")

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            restore(sig)


@contextmanager
def _group_watch() -> Iterator[None]:
    """The job's group watch (core.jobs.processes.watch_job_group) for the block: a stop request
    left unanswered for stop_grace_s() ends the job and its children without anyone looking."""
    watch = start_group_watch(stop_grace_s())
    try:
        yield
    finally:
        if watch is not None:
            watch.kill()
            watch.wait()


def _sweep_debris(run_path: Path) -> None:
    """Delete what killed writers left in the run folder and its gguf/ folder (sweep_debris leaves
    a live writer's files alone; no other job runs on this machine while the slot is held)."""
    swept = sweep_debris(run_path) + [f"{GGUF_DIR}/{name}" for name in sweep_debris(run_path / GGUF_DIR)]
    if swept:
        log.info("removed what interrupted writers left: %s", ", ".join(swept))


@contextmanager
def run_job(
    run_path: Path, kind: str, *, interrupt: bool = False, admit: Callable[[], object] | None = None
) -> Iterator[JobControl]:
    """Run the block as the run's job of this kind, recording its lifecycle in its state file.

    Takes the run's lock for this kind (JobError when another process holds it), calls
    `admit()` (which raises to refuse the job; nothing is written then), logs the `core`
    loggers to the job's log, starts its group watch (a launched job only: see
    core.jobs.processes.watch_job_group), then waits for the machine's job slot in state
    `queued` (naming the job it waits for), sweeps what killed writers left in the run folder
    (_sweep_debris), and runs the block in state `running` with the job's pid identity and start
    time. The block gets a JobControl to report stages and learn of a stop. The job ends:

    - `completed` when the block returns;
    - `stopped` when JobStopped (or a KeyboardInterrupt) escapes. The first SIGTERM/SIGINT
      sets the control's stop request, which `stage()` and `check_stop()` turn into
      JobStopped; a job waiting for the slot, or run with `interrupt=True` (for work that
      cannot check often), gets JobStopped raised from the signal handler at once;
    - `failed` when any other exception escapes, with the error (failure_text) and the last
      lines of the log, where its traceback goes.

    The exception propagates either way.
    """
    title = KINDS[_check_kind(kind)].title
    path, output = state_path(run_path, kind), log_path(run_path, kind)
    with _own_lock(run_path, kind):
        if admit is not None:
            admit()
        control = JobControl(lambda text, fraction: _merge(path, stage=text, fraction=fraction))
        raising = [True]  # while it waits for the slot, a stop ends the wait at once

        def waiting(holder: str) -> None:
            _merge(path, waiting_for=holder)
            log.info("waiting for %s to finish (one job at a time per machine)", holder)

        with _job_logging(output) as log_file, _group_watch(), _stop_signals(control, lambda: raising[0]):
            try:
                _reset(
                    path,
                    state="queued",
                    **job_identity(),
                    side=runs_root_side(run_path.parent),  # whose files these are, for a sync
                    stage="waiting for the job slot",
                )
                with job_slot(f"{title} of {run_path.name}", waiting):
                    control.check_stop()
                    _sweep_debris(run_path)
                    _merge(path, state="running", started_at=now_iso(), waiting_for=None, stage="starting")
                    raising[0] = interrupt
                    yield control
                    raising[0] = False
            except (JobStopped, KeyboardInterrupt) as exc:
                raising[0] = False
                _merge(path, state="stopped", ended_at=now_iso())
                reason = exc if isinstance(exc, JobStopped) else "stopped at once by a second interrupt"
                log.info("%s %s", title, reason)
                raise
            except BaseException as exc:
                raising[0] = False
                error = failure_text(kind, exc)
                log_file.handle(
                    log.makeRecord(
                        log.name,
                        logging.ERROR,
                        __file__,
                        0,
                        "%s failed: %s",
                        (title, error),
                        (type(exc), exc, exc.__traceback__),
                    )
                )
                _merge(path, state="failed", ended_at=now_iso(), error=error, log_tail=tail_lines(output))
                raise
            _merge(path, state="completed", ended_at=now_iso(), stage="done", fraction=1.0)


# --- launching, watching, stopping and killing -------------------------------------------


def job_reaches_hub(run_path: Path, kind: str, arguments: list[str]) -> bool:
    """Whether the job pushes to or pulls from the Hugging Face Hub: an export with --push, or a
    job that loads the run's base model from the Hub (a Hub id, not a local folder or the tiny
    model), as training, the merge of an export, and an evaluation of the adapter or the base
    model do; training also pulls a dataset that is not a local file. An evaluation of a GGUF
    file reads the file only."""
    from core.train.config import is_local_model, resolve_local_file
    from core.train.tiny import TINY_MODEL_ID

    def from_hub(spec: object) -> bool:
        if not isinstance(spec, str) or spec == TINY_MODEL_ID:
            return False
        return not is_local_model(str(PROJECT_DIR / Path(spec).expanduser()))  # as jobs run, from PROJECT_DIR

    command = core_command([kind, run_path.name, *arguments])  # as the job will read them
    if kind == "export" and getattr(command, "push", None):
        return True
    if kind == "eval" and str(getattr(command, "variant", "")).startswith("gguf"):
        return False
    if kind == "bench" and getattr(command, "variant", "") == "merged":
        return False  # the export's merged model is in the run folder
    config = read_json_or_empty(run_path / CONFIG_FILE)
    dataset = config.get("dataset")
    pulls_data = kind == "train" and isinstance(dataset, str) and resolve_local_file(dataset) is None
    return pulls_data or from_hub(config.get("base_model"))


def job_settings() -> frozenset[str]:
    """This project's settings a job reads, passed on by name (see job_environment)."""
    from core.evaluate.sandbox import UNISOLATED_ENV  # imported when a job starts, not with the pages
    from core.export.converter import LLAMA_CPP_DIR_ENV

    return frozenset({RUNS_DIR_ENV, CACHE_DIR_ENV, STOP_GRACE_ENV, UNISOLATED_ENV, LLAMA_CPP_DIR_ENV})


def job_environment(hub: bool, network: bool = False) -> dict[str, str]:
    """The whole environment a job starts with, built from this process's: the variables jobs need
    (core.jobs.processes.JOB_VARIABLES and JOB_VARIABLE_PREFIXES: paths, locale, caches, offline
    switches, threads, devices), this project's settings a job reads (job_settings, by name: never
    the owner's password), the trackers' settings (TRACKER_SETTINGS, no key) and unbuffered output; for a job that
    pushes or pulls (`hub`, see job_reaches_hub) also the proxy and certificate settings and the
    dashboard's Hub token as HF_TOKEN; with `network` (an export, whose converter may be fetched
    with pip; a benchmark, whose tasks' data may be downloaded) the proxy and certificate settings without the token. Nothing else of the
    dashboard's reaches a job: no other token, key or password, whatever its name."""
    from core.train.plan import TRACKER_SETTINGS  # a run's report_to: trackio's folder, W&B's project

    names = (
        JOB_VARIABLES
        | job_settings()
        | TRACKER_SETTINGS
        | (NETWORK_VARIABLES if hub or network else frozenset())
    )
    environment = {**chosen_environment(names, JOB_VARIABLE_PREFIXES), "PYTHONUNBUFFERED": "1"}
    from core.export.gguf_files import environment_token

    token = environment_token() if hub else None
    if token:
        environment["HF_TOKEN"] = token
    return environment


def _wait_for_exec(process: subprocess.Popen[bytes], run_path: Path, kind: str) -> None:
    """Wait (up to EXEC_WAIT_S) until the launched job's command line shows in /proc: Popen returns
    once the child has exec'd, a few ms before that. Recorded sooner, the job would be taken for
    a process that is not the job, and recorded dead, by the next look."""
    deadline = time.monotonic() + EXEC_WAIT_S
    while (
        not runs_job(process.pid, run_path, kind) and process.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.001)


def core_invocation(root: Path, arguments: list[str]) -> list[str]:
    """`python -m core --runs-dir ROOT <arguments>`, as a job runs it."""
    return [sys.executable, "-m", "core", "--runs-dir", str(root.resolve()), *arguments]


def start_detached(command: list[str], output: Any, environment: dict[str, str]) -> subprocess.Popen[bytes]:
    """`command` started in the project folder as its own session (a stop signals its group), with
    no input, stdout and stderr to `output` (a file or descriptor) and `environment` as its whole
    environment (secrets in it are in no file, no command line and no log)."""
    return subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=environment,
    )


def _launch(run_path: Path, kind: str, arguments: list[str], environment: dict[str, str]) -> int:
    """Start `python -m core --runs-dir ROOT <arguments>` detached with `environment`; return its pid."""
    command = core_invocation(run_path.parent, arguments)
    (run_path / JOBS_DIR).mkdir(exist_ok=True)
    with os.fdopen(_open_run_file(log_path(run_path, kind), os.O_WRONLY | os.O_APPEND), "ab") as output:
        output.write(f"\n=== {now_iso()} {shlex.join(['python', *command[1:]])}\n".encode())
        output.flush()
        process = start_detached(command, output, environment)
    _wait_for_exec(process, run_path, kind)
    try:
        write_json_atomic(
            launch_path(run_path, kind),
            {
                **job_identity(),
                "pid": process.pid,
                "pid_start": process_start(process.pid),
                "command": shlex.join(["python", *command[1:]]),
                "launched_at": now_iso(),
            },
        )
    except BaseException:  # a job nobody could find or stop: end it, the child just started (its session)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process.pid


def start_job(
    run_path: Path,
    kind: str,
    arguments: list[str],
    secrets: dict[str, str] | None = None,
    *,
    admit: Callable[[], object] | None = None,
) -> int:
    """Start the run's job of this kind, `python -m core <kind> RUN <arguments>`, in state
    `queued`, with job_environment (the dashboard's Hub token only when job_reaches_hub) and
    `secrets` (variables for this job alone, e.g. a page's Hub token for a push); return its pid.

    Raises JobError when a job of this kind of the run is queued or running, or when
    `admit()`, called under the run's control lock before anything is written, raises it,
    or when the process cannot be started (the job is then recorded `failed` with the error).
    """
    _check_kind(kind)
    if not run_path.is_dir():
        raise JobError(f"no run folder at {run_path}")
    job_view(run_path, kind)  # records a job found dead, outside the lock it takes
    with _control(run_path, kind):
        view = job_view(run_path, kind, reconcile=False)
        if view.active:
            raise JobError(f"a {kind} job of run {run_path.name} is already {view.state}")
        if admit is not None:
            admit()
        path = state_path(run_path, kind)
        _reset(path, state="queued", stage="starting")
        hub = job_reaches_hub(run_path, kind, arguments)
        environment = {**job_environment(hub, network=kind in ("export", "bench")), **(secrets or {})}
        try:
            return _launch(run_path, kind, [kind, run_path.name, *arguments], environment)
        except Exception as exc:
            # Recorded here, under the lock: left `queued`, the next look would take the earlier
            # job's process (still in launch.json) for this one and record its death.
            reason = str(exc) if isinstance(exc, JobError) else describe(exc)[:500]
            _merge(path, state="failed", ended_at=now_iso(), error=f"the job could not be started: {reason}")
            raise JobError(
                f"could not start the {KINDS[kind].title} of run {run_path.name}: {reason}"
            ) from exc


def start_training(run_path: Path, *, resume: bool = False) -> int:
    """Start the training job of a queued run, or resume a stopped or failed one; return its pid.

    Raises JobError when the run is not in a state that allows it.
    """
    from core.train.training import TrainingError, check_trainable

    def trainable() -> None:
        try:
            check_trainable(run_path, resume=resume)
        except TrainingError as exc:
            raise JobError(str(exc)) from None

    return start_job(run_path, "train", ["--resume"] if resume else [], admit=trainable)


@dataclass(frozen=True)
class JobView:
    """A job as the pages and the command line see it."""

    kind: str
    state: str | None  # None: never started
    alive: bool  # its process is verified to be the job (core.jobs.processes.job_alive)
    pid: int | None
    status: dict[str, Any]
    launch: dict[str, Any]
    log: Path
    recorded_elsewhere: bool = False  # by another host or side: its files are a synced copy

    @property
    def active(self) -> bool:
        """Queued or running, with its process alive."""
        return self.state in ACTIVE_STATES and self.alive

    @property
    def elsewhere(self) -> bool:
        """Queued or running by its files, on another host or side: watched through a sync,
        stopped through a remote (core.remote.sync.request_remote_stop)."""
        return self.state in ACTIVE_STATES and self.recorded_elsewhere

    @property
    def waiting_for(self) -> str | None:
        """The job this one waits for, when it is queued behind another."""
        return self.status.get("waiting_for") if self.state == "queued" else None

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for and the job has not ended yet."""
        return self.active and self._request is not None

    @property
    def stop_overdue(self) -> bool:
        """Whether the job still runs stop_grace_s() after its stop request, which its group
        watch would have ended (an older job without one, or one not launched by the
        dashboard): the moment for kill_job (the Run page's Kill button). A request dated in the
        future (a clock gone wrong, a planted record) counts as overdue: Kill is never withheld."""
        request = self._request if self.active else None
        requested = finite_number(request.get("requested_s")) if request else None
        if requested is None:
            return False
        waited = time.time() - requested
        return waited >= stop_grace_s() or waited < 0

    @property
    def _request(self) -> dict[str, Any] | None:
        return _stop_request(self.launch, _process_of(self.status, self.launch))

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
    requests were for earlier jobs of the run, and a record without a start time names no
    process that could have been asked."""
    request = launch.get("stop")
    if not isinstance(request, dict) or process.get("pid") is None or process.get("pid_start") is None:
        return None
    same = request.get("pid") == process.get("pid") and request.get("pid_start") == process.get("pid_start")
    return request if same else None


def _kill_reason(request: dict[str, Any]) -> str | None:
    """Why a job that was asked to stop ended without recording its end: killed on request
    (kill_job), or by its group watch once the grace period was over; None when it died sooner
    by itself."""
    grace = stop_grace_s()
    requested = finite_number(request.get("requested_s")) or 0.0
    killed = finite_number(request.get("killed_s"))
    if killed is not None and killed - requested < grace:
        return "killed on request before it had stopped"
    if killed is not None or time.time() - requested >= grace:
        return f"killed: it did not stop within {grace:.0f} s of the stop request"
    return None


def _ended_by_death(
    run_path: Path, kind: str, launch: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    """Record a job whose process is gone (or is not the job) while its state says queued or
    running."""
    changes: dict[str, Any] = {"ended_at": now_iso()}
    process = _process_of(status, launch)
    # A process still there that is not the job was never asked, nor killed, by us.
    request = None if same_process(process) else _stop_request(launch, process)
    if request:
        changes |= {"state": "stopped", "error": _kill_reason(request)}
    else:
        tail = tail_lines(log_path(run_path, kind))
        last = next((line for line in reversed(tail) if line.strip() and not line.startswith("===")), None)
        started = status.get("state") == "running"
        reason = "process died" if started else "the job exited before it started"
        changes |= {
            "state": "failed",
            "error": f"{reason}" + (f" (last output: {last.strip()[:300]})" if last else ""),
            "log_tail": tail,
        }
    return _merge(state_path(run_path, kind), **changes)


def _look(run_path: Path, kind: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bool]:
    """The job's state and launch records, its process identity, and whether that process is the
    job and alive (core.jobs.processes.job_alive). A run folder that is a symbolic link has no job
    of its own: nothing in it is read (it would be another folder's)."""
    if run_path.is_symlink():
        return {}, {}, {}, False
    status, launch = (
        read_json_or_empty(state_path(run_path, kind)),
        read_json_or_empty(launch_path(run_path, kind)),
    )
    process = _process_of(status, launch)
    return status, launch, process, job_alive(process, run_path, kind) if process.get("pid") else False


def _recorded_elsewhere(run_path: Path, status: dict[str, Any], process: dict[str, Any]) -> bool:
    """Whether the job was recorded by another host, or by another side (runs root) of a sync
    (core.remote): its state file is a copy, and only that side can tell whether it still runs."""
    side = status.get("side")
    host = process.get("host")
    return (host is not None and host != socket.gethostname()) or (
        isinstance(side, str) and side != runs_root_side(run_path.parent)
    )


def _dead_here(run_path: Path, status: dict[str, Any], process: dict[str, Any], alive: bool) -> bool:
    """Whether a job is queued or running by its files while the process it names, recorded here
    (or with no host, as older versions did), is not the job."""
    return (
        status.get("state") in ACTIVE_STATES
        and bool(process.get("pid"))
        and not alive
        and not _recorded_elsewhere(run_path, status, process)
    )


def job_view(run_path: Path, kind: str, *, reconcile: bool = True) -> JobView:
    """The job's state, checked against its process. It reads and records; it never signals.

    With `reconcile`, a job that is queued or running by its files but whose process is gone,
    or is not the job (see core.jobs.processes), is recorded as ended here, so every reader
    agrees: `stopped` when a stop was requested (with the kill that ended it, if one did), else
    `failed` ("process died"). The recording happens under the run's control lock after
    reading the files again: a death is final, so what is read then is what the job left, and
    a launch in progress is waited for. Jobs recorded on another host are reported as their
    files say; a record without a host (an older version's) is not alive.
    """
    status, launch, process, alive = _look(run_path, kind)
    if reconcile and _dead_here(run_path, status, process, alive):
        try:
            with _control(run_path, kind):
                status, launch, process, alive = _look(run_path, kind)
                if _dead_here(run_path, status, process, alive):
                    status = _ended_by_death(run_path, kind, launch, status)
        except (JobError, OSError):
            pass  # a run folder that cannot be written (planted links, read-only, deleted): reported as read
    pid = process.get("pid")
    state = status.get("state")
    return JobView(
        kind,
        None if state is None else str(state),  # a state file from elsewhere may hold anything
        alive,
        pid if isinstance(pid, int) else None,
        status,
        launch,
        log_path(run_path, kind),
        _recorded_elsewhere(run_path, status, process),
    )


def _signal_job(process: dict[str, Any], signum: int) -> None:
    """Send `signum` to the verified job's process group when it leads one (a launched job and
    its group watch, its children), else to the process alone."""
    pid = process["pid"]
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def request_stop(run_path: Path, kind: str) -> JobView:
    """Ask a queued or running job to stop: SIGTERM to its process group, once its process is
    verified to be the job (JobError "no job running" otherwise: nothing is signalled).

    The job ends `stopped` (see run_job; training saves a checkpoint at its current step
    first); a job that has not stopped stop_grace_s() after the request is killed by its group
    watch, without anyone looking. Asking again while a stop is under way (Stop clicked twice,
    `python -m core stop` run twice) sends nothing and returns the job's view: the first
    request and its grace period stand.
    """
    view = job_view(run_path, kind)
    if not view.active:
        raise JobError(f"run {run_path.name} has no {kind} job running")
    if view.stop_requested:
        return view
    with _control(run_path, kind):  # of two requests at once (two tabs), the second finds the first's
        _, launch, process, alive = _look(run_path, kind)  # verified again, just before the signal
        if alive and _stop_request(launch, process) is None:
            _merge(
                launch_path(run_path, kind),
                stop={
                    "pid": process["pid"],
                    "pid_start": process["pid_start"],
                    "requested_at": now_iso(),
                    "requested_s": time.time(),
                    "killed_at": None,
                },
            )
            _signal_job(process, signal.SIGTERM)
    return job_view(run_path, kind)


def kill_job(run_path: Path, kind: str, wait_s: float = 5.0) -> JobView:
    """Kill the run's job of this kind at once: SIGKILL to its process group (the job and its
    children), once its process is verified to be the job (JobError "no job running"
    otherwise: nothing is signalled). For a job that outlives its stop request (the Run page's
    Kill button when JobView.stop_overdue, `python -m core stop RUN --kill`): training saves no
    checkpoint. The kill is recorded as the stop request's end, so the job is recorded
    `stopped` with "killed ..." as its error; waits up to `wait_s` for the process to end and
    returns the job's view."""
    view = job_view(run_path, kind)
    if not view.active:
        raise JobError(f"run {run_path.name} has no {kind} job running")
    with _control(run_path, kind):
        _, launch, process, alive = _look(run_path, kind)  # verified again, just before the signal
        if alive:
            now = time.time()
            request = _stop_request(launch, process) or {
                "pid": process["pid"],
                "pid_start": process["pid_start"],
                "requested_at": now_iso(),
                "requested_s": now,
            }
            _merge(launch_path(run_path, kind), stop={**request, "killed_at": now_iso(), "killed_s": now})
            _signal_job(process, signal.SIGKILL)
    return wait_for_job(run_path, kind, wait_s, poll_s=0.05)


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

    The check and the deletion happen under the run's control locks of every kind, so no job
    is launched into a run being deleted. The folder is first renamed to a hidden name, so it
    leaves the runs list at once and a failure half-way leaves no half-deleted run behind.
    """
    for kind in JOB_KINDS:
        job_view(run_path, kind)  # records jobs found dead, outside the locks it takes
    locks = ExitStack()
    try:
        for kind in JOB_KINDS:  # always in this order: no two deleters wait for each other
            locks.enter_context(_control(run_path, kind))
    except (JobError, OSError):  # OSError: jobs/ is a file
        locks.close()
        if not os.path.lexists(run_path):
            raise
        # A link to another folder (only the link goes), or planted control files: no job of ours
        # can be launched there, since every launch takes these locks first.
        delete_dir(run_path)
        return
    with locks:
        busy = [view for kind in JOB_KINDS if (view := job_view(run_path, kind, reconcile=False)).active]
        if busy:
            raise JobError(f"run {run_path.name} has a {busy[0].kind} job {busy[0].state}: stop it first")
        delete_dir(run_path)


def with_live_states(runs: list[Run]) -> list[Run]:
    """`runs` with every queued or running training job checked against its process; a job
    found dead is recorded as ended (see job_view) and its run read again. Never signals."""
    return [
        read_run_folder(run.path)
        if run.state in ACTIVE_STATES and job_view(run.path, "train").state != run.state
        else run
        for run in runs
    ]
