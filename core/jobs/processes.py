"""Which process a job is, and whether it is still alive.

A pid alone is not enough: pids are reused, and a run folder may come from another machine.
A job records its pid, host name and process start time; it is alive only if all three match.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def _proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None when unknown."""
    fields = _proc_stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 of stat; the list starts at field 3
    except (IndexError, ValueError):
        return None


def pid_alive(pid: object) -> bool:
    """True when a process with this pid exists and is not a zombie."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat_fields(pid)
    return not fields or fields[0] != "Z"


def job_identity() -> dict[str, Any]:
    """What a job writes into status.json so that others can tell whether it still runs."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_start": process_start(pid)}


def job_alive(status: dict[str, Any]) -> bool:
    """Whether the job a status.json names is running on this machine now."""
    host = status.get("host")
    if host is not None and host != socket.gethostname():
        return False
    pid = status.get("pid")
    if not pid_alive(pid):
        return False
    started = status.get("pid_start")
    return started is None or process_start(pid) in (None, started)
