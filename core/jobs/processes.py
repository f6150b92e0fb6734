"""Which process a job is, whether it is still alive, and what a job's process starts with.

A pid alone is not enough: pids are reused, and a run folder may come from another machine or
be planted. A process is the run's job of a kind only when all of these hold (`job_alive`):

- its pid, host name and start time (from /proc) are the ones the job or its launcher recorded;
  a record without a host or a start time (an older version's, or a planted one) names none;
- its command line (/proc/PID/cmdline) is `python -m core [--runs-dir ROOT] KIND ...` naming
  the run, and its runs root (ROOT, else its $PEFT_RUNS_DIR, else ./runs, from its own working
  folder) is the run's: the marker is checked against the run folder being looked at, not
  against anything the folder says.

Only a process that passes is ever signalled, and only by a person's action (stop, kill);
nothing that reads or lists signals anything. Linux only (/proc): elsewhere no job is seen alive.

A launched job leads its own process group; `watch_job_group` runs beside it in that group and
ends the group (the job and its children) once a stop request has gone unanswered for the grace
period, or as soon as the job itself has ended.

Child processes start with an explicit, minimal environment (`chosen_environment`): the
variables they need by name or prefix, never the rest of the dashboard's (tokens, keys).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from core.store.paths import PROJECT_DIR, runs_root

PROC_READ_BYTES = 1 << 16  # of a command line or an environment: a job's are far shorter
WATCH_POLL_S = 0.2

# The system's variables every child process may see: programs, home, locale, time zone,
# temporary files, caches, the venv.
SYSTEM_VARIABLES = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "XDG_CACHE_HOME", "VIRTUAL_ENV"}
)
# What a job process may see of the dashboard's environment besides them and this project's own
# settings (job_environment, in the lifecycle, adds those by name):
JOB_VARIABLES = SYSTEM_VARIABLES | frozenset(
    {
        "LD_LIBRARY_PATH",  # CUDA libraries
        # Hugging Face caches, mirror and offline switches (never a token)
        *("HF_HOME", "HF_HUB_CACHE", "HF_XET_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT"),
        *("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"),
        *("HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"),
        "HF_DATASETS_DISABLE_PROGRESS_BARS",
        # threads
        *("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM"),
    }
)
JOB_VARIABLE_PREFIXES = (
    "LC_",  # locale
    "HF_HUB_DISABLE_",  # progress bars, telemetry, symlink warnings
    "TRANSFORMERS_",  # offline switch, cache, verbosity
    *("CUDA_", "PYTORCH_", "TORCH", "TRITON_", "BNB_", "UNSLOTH_"),  # devices, allocator, compile caches
)
# Proxies and certificates: only for what reaches the network (a job that pushes or pulls, pip).
NETWORK_VARIABLES = frozenset(
    {
        *("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"),
        *("http_proxy", "https_proxy", "all_proxy", "no_proxy"),
        *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"),
    }
)
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASS|PWD|KEY|CREDENTIAL|AUTH|COOKIE|PAT\b", re.IGNORECASE)
"""What a variable taken by prefix may not contain: a secret's name (only a name listed in full,
such as TOKENIZERS_PARALLELISM, may)."""


def chosen_environment(
    names: Collection[str], prefixes: tuple[str, ...] = (), environment: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables of `environment` (default: this process's) named in `names`, or starting with
    one of `prefixes` without a secret's word in the name (SECRET_WORDS)."""
    source = os.environ if environment is None else environment
    return {
        name: value
        for name, value in source.items()
        if name in names or (name.startswith(prefixes) and not SECRET_WORDS.search(name))
    }


def _proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def _start_time(fields: list[str] | None) -> int | None:
    """The start time in clock ticks since boot in /proc/PID/stat's fields, or None."""
    try:
        return int(fields[19]) if fields else None  # field 22 of stat; the list starts at field 3
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None when unknown."""
    return _start_time(_proc_stat_fields(pid))


def _live_stat(pid: object) -> list[str] | None:
    """The /proc/PID/stat fields of the process `pid` names when it exists and is not a zombie;
    None for anything else, a pid of the wrong type included (read from /proc: no signal)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    fields = _proc_stat_fields(pid)
    return fields if fields and fields[0] != "Z" else None


def pid_alive(pid: object) -> bool:
    """True when a process with this pid exists and is not a zombie (read from /proc: no signal)."""
    return _live_stat(pid) is not None


def _read_proc(pid: int, name: str) -> list[str] | None:
    """The NUL-separated strings of /proc/PID/<name> (cmdline, environ), or None when unreadable
    (gone, or another user's)."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            data = handle.read(PROC_READ_BYTES)
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in data.split(b"\0")[:-1]]


def _core_arguments(command: list[str]) -> list[str] | None:
    """The arguments after `-m core` in a Python command line, read as the interpreter reads its
    options (clusters such as `-Im`, `-mcore`, `-cCODE`); None when it runs something else (a
    script, code given with -c, another module)."""
    options = iter(command[1:])
    for option in options:
        if option == "--check-hash-based-pycs":  # the one long option that takes a value
            next(options, None)
            continue
        if option.startswith("--"):
            continue
        if option == "-" or not option.startswith("-"):
            return None
        cluster = option[1:]
        for index, flag in enumerate(cluster):
            rest = cluster[index + 1 :]
            if flag == "c":
                return None
            if flag == "m":
                return list(options) if (rest or next(options, None)) == "core" else None
            if flag in "WX":  # takes a value: the rest of the cluster, else the next argument
                if not rest:
                    next(options, None)
                break
    return None


def _runs_root_of(pid: int, explicit: str | None) -> Path | None:
    """The runs root `python -m core` resolves in process `pid` (core.store.paths.runs_root with
    its --runs-dir, its environment and its working folder), or None when they cannot be read."""
    try:
        folder = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    variables = _read_proc(pid, "environ") or []
    environment = dict(variable.partition("=")[::2] for variable in variables)
    return runs_root(explicit, environment, Path(folder))


@functools.cache
def _core_parser() -> Any:
    """The command line's one parser (core.cli imports this module: imported when first used)."""
    from core.cli import build_parser

    return build_parser()


def core_command(arguments: list[str]) -> Any:
    """The arguments of `python -m core` as its own parser reads them (command, name, runs_dir),
    or None when it would refuse them."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parsed, _ = _core_parser().parse_known_args(arguments)
    except SystemExit:
        return None
    return parsed


def runs_job(pid: int, run_path: Path, kind: str) -> bool:
    """Whether process `pid` runs `python -m core [--runs-dir ROOT] KIND NAME ...` for this run:
    its command line read as Python and core's own parser read it (the command is KIND, the run
    named is this one), in the run's runs root."""
    arguments = _core_arguments(_read_proc(pid, "cmdline") or [])
    parsed = None if arguments is None else core_command(arguments)
    if (
        parsed is None
        or getattr(parsed, "command", None) != kind
        or getattr(parsed, "name", None) != run_path.name
    ):
        return False
    return _runs_root_of(pid, parsed.runs_dir) == run_path.parent.resolve()


def job_identity() -> dict[str, Any]:
    """What a job writes into its state file so that others can tell whether it still runs."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_start": process_start(pid)}


def same_process(record: Mapping[str, Any]) -> bool:
    """Whether the process `record` names (pid, host and start time, all three) runs here now."""
    pid, started = record.get("pid"), record.get("pid_start")
    if record.get("host") != socket.gethostname() or type(started) is not int:
        return False
    fields = _live_stat(pid)
    return fields is not None and _start_time(fields) == started


def job_alive(record: Mapping[str, Any], run_path: Path, kind: str) -> bool:
    """Whether the process `record` names is running here now and is the run's `kind` job
    (same_process and runs_job): the only process the lifecycle ever signals."""
    return same_process(record) and runs_job(record["pid"], run_path, kind)


def watch_job_group(job: int, grace_s: float) -> None:
    """The body of a job's group watch, a process in the job's process group: once the group has
    had a SIGTERM or SIGINT (a stop request) and `grace_s` has passed, or as soon as the job has
    ended, SIGKILL the whole group: the job (even stuck in C code), its children, and the watch."""
    deadline = [math.inf]

    def stop_requested(signum: int, frame: Any) -> None:
        if deadline[0] == math.inf:
            deadline[0] = time.monotonic() + grace_s

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_requested)
    while os.getppid() == job and time.monotonic() < deadline[0]:
        time.sleep(WATCH_POLL_S)
    os.killpg(0, signal.SIGKILL)


def start_group_watch(grace_s: float) -> subprocess.Popen[bytes] | None:
    """Start `watch_job_group` for this process, when it leads its own session (a launched job:
    everything in its process group is its own); None otherwise."""
    if os.getsid(0) != os.getpid():
        return None
    code = f"from core.jobs.processes import watch_job_group; watch_job_group({os.getpid()}, {grace_s!r})"
    return subprocess.Popen(
        [sys.executable, "-S", "-c", code], cwd=PROJECT_DIR, stdin=subprocess.DEVNULL, close_fds=True, env={}
    )
