"""Whether a job recorded in status.json is still running: pid, host and start time."""

import os
import socket
import subprocess
import sys

from core.jobs.processes import job_alive, job_identity, pid_alive, process_start


def test_this_process_is_alive_and_identified():
    identity = job_identity()
    assert identity["pid"] == os.getpid() and identity["host"] == socket.gethostname()
    assert identity["pid_start"] == process_start(os.getpid()) is not None
    assert job_alive(identity)


def test_dead_reused_foreign_and_malformed_pids_are_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    assert not job_alive({"pid": child.pid, "host": socket.gethostname()})
    mine = job_identity()
    assert not job_alive({**mine, "pid_start": mine["pid_start"] + 1})  # same pid, another process
    assert not job_alive({**mine, "host": "another-machine"})
    for pid in (None, "12", True, 0, -1):
        assert not pid_alive(pid)


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert not pid_alive(child.pid)
    finally:
        child.wait()
