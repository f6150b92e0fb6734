"""Which process is a job: pid, host, start time and the command line's marker; the group watch
that ends a job ignoring its stop request; the minimal environments of jobs and of pip.

The marker tests run a stand-in `core` package from a temporary folder (`python -m core ...`
there only sleeps): they check what the command line of a process must say, not a job."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.export.converter import pip_environment
from core.jobs.lifecycle import job_environment
from core.jobs.processes import (
    job_alive,
    job_identity,
    pid_alive,
    process_start,
    runs_job,
    same_process,
)
from core.store.paths import PROJECT_DIR


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_this_process_is_alive_and_identified_but_is_no_job(tmp_path):
    identity = job_identity()
    assert identity["pid"] == os.getpid() and identity["host"] == socket.gethostname()
    assert identity["pid_start"] == process_start(os.getpid()) is not None
    assert same_process(identity)
    assert not job_alive(identity, tmp_path / "runs" / "r", "train")  # pytest is not `python -m core train r`


def test_dead_reused_foreign_malformed_and_incomplete_records_are_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    assert not same_process({"pid": child.pid, "host": socket.gethostname(), "pid_start": 1})
    mine = job_identity()
    assert not same_process({**mine, "pid_start": mine["pid_start"] + 1})  # same pid, another process
    assert not same_process({**mine, "host": "another-machine"})
    # Older versions' records, and planted ones, without a host or a start time name no process.
    assert not same_process({"pid": os.getpid()})
    assert not same_process({**mine, "host": None})
    assert not same_process({**mine, "pid_start": None})
    assert not same_process({**mine, "pid_start": True})
    for pid in (None, "12", True, 0, -1):
        assert not pid_alive(pid)


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert not pid_alive(child.pid)
    finally:
        child.wait()


@pytest.fixture
def stand_in(tmp_path):
    """Start `python [options] -m core ARGS` (or any command) from a folder whose `core` package only
    sleeps; yield the starter, and end every process it started."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__main__.py").write_text("import time\ntime.sleep(120)\n")
    started = []

    def start(*arguments: str, env: dict | None = None, command: list | None = None) -> subprocess.Popen:
        process = subprocess.Popen(
            command or [sys.executable, "-m", "core", *arguments],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"], **(env or {})},
        )
        started.append(process)
        wait_until(lambda: Path(f"/proc/{process.pid}/cmdline").read_bytes())  # a few ms after Popen returns
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_the_command_line_must_run_the_runs_job_in_its_runs_root(tmp_path, stand_in):
    root = tmp_path / "runs"
    run = root / "r1"
    # How the launcher starts a job, and how a person does in a terminal:
    assert runs_job(stand_in("--runs-dir", str(root), "train", "r1").pid, run, "train")
    assert runs_job(
        stand_in("--runs-dir=runs", "train", "--resume", "r1").pid, run, "train"
    )  # from its folder
    assert runs_job(stand_in("train", "r1", env={"PEFT_RUNS_DIR": str(root)}).pid, run, "train")
    assert runs_job(stand_in("eval", "r1").pid, run, "eval")  # ./runs of its working folder
    unbuffered = stand_in(command=[sys.executable, "-u", "-X", "utf8", "-m", "core", "export", "r1"])
    assert runs_job(unbuffered.pid, run, "export")

    job = stand_in("--runs-dir", str(root), "train", "r1")
    assert not runs_job(job.pid, run, "eval")  # another kind
    assert not runs_job(job.pid, root / "r2", "train")  # another run
    assert not runs_job(job.pid, tmp_path / "elsewhere" / "r1", "train")  # a run of that name elsewhere
    assert not runs_job(stand_in("train", "r1", env={"PEFT_RUNS_DIR": "/other"}).pid, run, "train")
    code = stand_in(
        command=[sys.executable, "-c", "import time; time.sleep(60)", "-m", "core", "train", "r1"]
    )
    assert not runs_job(code.pid, run, "train")  # `-m core` as arguments of other code
    glued = stand_in(command=[sys.executable, "-cimport time; time.sleep(60)", "-m", "core", "train", "r1"])
    assert not runs_job(glued.pid, run, "train")  # the same, with -c glued to its code
    sleeper = stand_in(command=["sleep", "60"])
    assert not runs_job(sleeper.pid, run, "train")
    # Another run's job whose arguments happen to hold this run's name: the name must be the run's.
    evaluation = stand_in("--runs-dir", str(root), "eval", "other", "--variant", "base", "--prompts", "lab")
    for name in ("base", "lab"):
        assert not runs_job(evaluation.pid, root / name, "eval")
    assert runs_job(evaluation.pid, root / "other", "eval")
    # The runs root core itself would use: of two --runs-dir, the last.
    twice = stand_in("--runs-dir", str(root), "--runs-dir", "/other", "train", "r1")
    assert not runs_job(twice.pid, run, "train")

    identity = {"pid": job.pid, "host": socket.gethostname(), "pid_start": process_start(job.pid)}
    assert job_alive(identity, run, "train")
    for incomplete in ({"host": None}, {"pid_start": None}, {"pid_start": identity["pid_start"] + 1}):
        assert not job_alive({**identity, **incomplete}, run, "train")
    assert not job_alive(
        {"pid": sleeper.pid, "host": socket.gethostname(), "pid_start": process_start(sleeper.pid)},
        run,
        "train",
    )


STUBBORN_JOB = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from core.jobs.processes import start_group_watch
    watch = start_group_watch(float(sys.argv[1]))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a job that ignores its stop request, and its child too
    child = subprocess.Popen(["sleep", "120"])  # in the job's group, as the GGUF converter is
    print(watch.pid, child.pid, flush=True)
    time.sleep(120)
    """
)


def start_stubborn_job(grace_s: float) -> tuple[subprocess.Popen, int, int]:
    """A process in a session of its own, as a launched job is, with its group watch and a child."""
    job = subprocess.Popen(
        [sys.executable, "-c", STUBBORN_JOB, str(grace_s)],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    watch, child = (int(pid) for pid in job.stdout.readline().split())
    return job, watch, child


def test_the_group_watch_ends_a_job_that_ignores_its_stop_request_and_its_children():
    job, watch, child = start_stubborn_job(grace_s=1.5)
    time.sleep(0.3)  # the watch has set up its handlers
    asked = time.monotonic()
    os.killpg(job.pid, signal.SIGTERM)  # the stop request, as request_stop sends it
    time.sleep(0.5)
    assert job.poll() is None and pid_alive(child) and pid_alive(watch)  # within the grace period
    assert job.wait(timeout=10) == -signal.SIGKILL
    assert 1.5 <= time.monotonic() - asked < 4
    wait_until(lambda: not pid_alive(child) and not pid_alive(watch), timeout=5)


def test_the_group_watch_ends_the_children_of_a_job_that_died():
    job, watch, child = start_stubborn_job(grace_s=60)
    os.kill(job.pid, signal.SIGKILL)  # the job alone, as the out-of-memory killer ends it
    job.wait()
    wait_until(lambda: not pid_alive(child) and not pid_alive(watch), timeout=5)


def test_a_process_that_does_not_lead_its_session_gets_no_watch():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from core.jobs.processes import start_group_watch; print(start_group_watch(1.0))",
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "None"


SECRETS = {
    "HF_TOKEN": "hf_dashboard",
    "HUGGING_FACE_HUB_TOKEN": "hf_legacy",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "OPENAI_API_KEY": "sk",
    "PEFT_BUCKET_TOKEN": "bucket",  # a project setting not named in JOB_VARIABLES stays out
    "PEFT_OWNER_PASSWORD": "owner",
    "PEFT_owner_pass": "owner",
    "TRANSFORMERS_AUTH": "auth",
    "TORCH_HUB_PAT": "pat",  # names taken by prefix: a secret's word in any case keeps them out
    "CUDA_DB_PWD": "pwd",
    "TORCH_COOKIE_SIGNING": "cookie",
}
SETTINGS = {
    "PEFT_RUNS_DIR": "/runs",
    "HF_HOME": "/hf",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CUDA_VISIBLE_DEVICES": "0",
    "LC_ALL": "C.UTF-8",
    "LLAMA_CPP_DIR": "/llama.cpp",
}
NETWORK = {"HTTPS_PROXY": "http://proxy:3128", "SSL_CERT_FILE": "/certs.pem"}


def test_a_job_gets_what_it_needs_and_a_token_only_when_it_reaches_the_hub(monkeypatch):
    system = {"PATH": "/usr/bin", "HOME": "/home/u", "SHELL": "/bin/bash", "PIP_INDEX_URL": "https://index"}
    monkeypatch.setattr(
        os, "environ", {**system, **SECRETS, **SETTINGS, **NETWORK}
    )  # the dashboard's, exactly
    local = job_environment(hub=False)
    assert local == {**SETTINGS, "PATH": "/usr/bin", "HOME": "/home/u", "PYTHONUNBUFFERED": "1"}
    assert job_environment(hub=True) == {**local, **NETWORK, "HF_TOKEN": "hf_dashboard"}
    assert job_environment(hub=False, network=True) == {**local, **NETWORK}  # an export's pip: no token
    del os.environ["HF_TOKEN"]
    assert job_environment(hub=True)["HF_TOKEN"] == "hf_legacy"  # the name older setups use
    del os.environ["HUGGING_FACE_HUB_TOKEN"]
    assert "HF_TOKEN" not in job_environment(hub=True)


def test_pip_gets_its_settings_and_proxies_and_no_token(monkeypatch):
    system = {"PATH": "/usr/bin", "HOME": "/home/u", "PIP_INDEX_URL": "https://index", "PIP_CERT": "/c.pem"}
    monkeypatch.setattr(os, "environ", {**system, **SECRETS, **SETTINGS, **NETWORK})
    assert pip_environment() == {**system, **NETWORK, "LC_ALL": "C.UTF-8"}
