"""The one job lifecycle with real processes: real training, evaluation and export jobs of the
tiny Llama, real signals.

Every job here is `python -m core <kind> ...` started by core.jobs in its own session, as the
pages start it; kills and stops are real SIGKILL and SIGTERM signals. The lifecycle's own
endings are also checked in this process with run_job around plain code. Planted run folders
name real processes (a `sleep`) that must survive every look, stop and delete.
"""

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, train_smoke_run

from core.jobs import lifecycle as jobs
from core.jobs.processes import pid_alive, process_start
from core.jobs.protocol import JobControl, JobStopped
from core.jobs.slot import job_slot
from core.store.files import read_json_object, read_jsonl, write_json_atomic
from core.store.runs import (
    create_run,
    initial_status,
    latest_checkpoint,
    list_runs,
    load_run,
)
from core.train import tiny
from core.train.presets import get_preset


def smoke_config(**changes) -> dict:
    config = {
        **get_preset("cpu_smoke").config(),
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
    }
    return {**config, **changes}


def queued_run(root: Path, name: str, **changes) -> Path:
    config = smoke_config(**changes)
    return create_run(root, name, config, status=initial_status("queued", config["max_steps"]))


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def step_of(run: Path) -> int:
    return read_json_object(run / "status.json").get("step") or 0


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> Path:
    """A run of the tiny Llama trained for 2 steps (it has an adapter to evaluate and export), to copy."""
    cache = tmp_path_factory.mktemp("jobs-cache")
    root = tmp_path_factory.mktemp("jobs-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFT_CACHE_DIR", str(cache))
        tiny.tiny_model_dir().parent.mkdir(parents=True)
        tiny.tiny_model_dir().symlink_to(tiny_model_build, target_is_directory=True)
        train_smoke_run("template", root, max_steps=2)
    return root / "template"


def trained_run(template: Path, root: Path, name: str) -> Path:
    """A copy of the trained template named `name`, without the template's job records."""
    root.mkdir(exist_ok=True)
    shutil.copytree(template, root / name, ignore=shutil.ignore_patterns("jobs"))
    return root / name


def start_kind(kind: str, root: Path, request: pytest.FixtureRequest, name: str) -> Path:
    """Start a real job of `kind` that runs long enough to be stopped or killed; return its run."""
    request.getfixturevalue("tiny_model")
    if kind == "train":
        run = queued_run(root, name, max_steps=400, save_steps=1000)
        jobs.start_training(run)
    elif kind == "eval":  # the lab's 10 prompts, 1000 tokens each: about 1.5 s an answer here
        run = queued_run(root, name)
        jobs.start_job(run, "eval", ["--variant", "base", "--max-new-tokens", "1000"])
    elif kind == "bench":  # the base model on a local lm-eval task, 40 times over: some 20 s here
        run = trained_run(request.getfixturevalue("trained_template"), root, name)
        jobs.start_job(run, "bench", ["--variant", "base", "--tasks", ",".join(["peft_capitals_gen"] * 40)])
    else:
        converter = request.getfixturevalue("converter_dir")
        request.getfixturevalue("monkeypatch").setenv("LLAMA_CPP_DIR", str(converter))
        run = trained_run(request.getfixturevalue("trained_template"), root, name)
        jobs.start_job(run, "export", ["--quant", "f16"])
    return run


def last_logged_step(run: Path) -> int:
    """The last step events.jsonl holds (one event per step in the smoke preset)."""
    events, _ = read_jsonl(run / "events.jsonl")
    return max((event["step"] for event in events if isinstance(event.get("step"), int)), default=0)


def working(run: Path, kind: str) -> bool:
    """Whether the job is at work: training steps done, an answer given, export loading the model to merge."""
    view = jobs.job_view(run, kind)
    if kind == "train":
        return view.state == "running" and step_of(run) >= 3
    return view.state == "running" and (view.status.get("fraction") or 0) >= 0.08


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split() if entry.name.isdigit() else []
        except OSError:
            continue
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def environment_of(pid: int) -> dict[str, str]:
    """The environment process `pid` started with, from /proc/PID/environ."""
    data = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace")
    return dict(item.split("=", 1) for item in data.split("\0") if "=" in item)


def core_command(root: Path, *arguments: str) -> subprocess.CompletedProcess:
    """`python -m core --runs-dir ROOT ARGUMENTS` in a process of its own, as a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "core", "--runs-dir", str(root), *arguments],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_job_outlives_the_process_that_launched_it(runs_root, tiny_model):
    run = queued_run(runs_root, "orphan", max_steps=8)
    launcher = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from core.jobs.lifecycle import start_training; "
            "print(start_training(Path(sys.argv[1]))); sys.stdout.flush(); import os; os._exit(0)",
            str(run),
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid = int(launcher.stdout)  # the launcher is gone now; the job must not be
    assert jobs.job_view(run, "train").pid == pid
    view = jobs.wait_for_job(run, "train", timeout_s=120)
    assert view.state == "completed", view.tail()
    assert load_run(runs_root, "orphan").metrics["steps"] == 8
    assert "python -m core --runs-dir" in (run / "train.log").read_text()


@pytest.mark.parametrize("kind", jobs.JOB_KINDS)
def test_a_killed_job_is_reported_dead_and_leaves_no_child(runs_root, request, kind):
    run = start_kind(kind, runs_root, request, f"killed-{kind}")
    wait_until(lambda: working(run, kind))
    pid = jobs.job_view(run, kind).pid
    if kind == "export":  # killed while llama.cpp's converter runs in a child process
        wait_until(lambda: any("gguf_files" in command_of(member) for member in group_members(pid)))
    os.kill(pid, signal.SIGKILL)  # the job alone, as the out-of-memory killer or kill -9 PID ends it
    wait_until(lambda: not pid_alive(pid))
    wait_until(lambda: not group_members(pid), timeout=10)  # its group watch took its children with it
    state_file = jobs.state_path(run, kind)
    assert read_json_object(state_file)["state"] == "running"  # as the dead job left it

    view = jobs.job_view(run, kind)
    assert (view.state, view.alive) == ("failed", False)
    assert view.error.startswith("process died"), view.status
    recorded = read_json_object(state_file)  # recorded, so every reader agrees
    assert recorded["state"] == "failed" and recorded["ended_at"] and recorded["log_tail"]
    assert not view.active and not view.stop_requested
    with pytest.raises(jobs.JobError, match=f"no {kind} job running"):
        jobs.request_stop(run, kind)
    if kind != "train":  # started again, as the Run page's button does, it runs to the end (training
        # resumes from its checkpoint: the next test)
        again = {
            "eval": ["--variant", "base", "--max-new-tokens", "4"],
            "bench": ["--variant", "base", "--tasks", "peft_capitals_mc", "--limit", "2"],
            "export": ["--quant", "f16"],
        }[kind]
        jobs.start_job(run, kind, again)
        view = jobs.wait_for_job(run, kind, timeout_s=300)
        assert (view.state, view.error) == ("completed", None), view.tail()


def test_a_killed_training_is_listed_failed_and_resumes_from_its_checkpoint(runs_root, tiny_model):
    run = queued_run(runs_root, "killed", max_steps=400, save_steps=3)
    pid = jobs.start_training(run)
    wait_until(lambda: latest_checkpoint(run) is not None and step_of(run) >= 4)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid))
    assert [r.state for r in jobs.with_live_states(list_runs(runs_root))] == ["failed"]
    assert read_json_object(run / "status.json")["state"] == "failed"
    checkpoint_step = int(latest_checkpoint(run).name.split("-")[1])
    created = read_json_object(run / "status.json")["created_at"]

    jobs.start_training(run, resume=True)
    wait_until(lambda: jobs.job_view(run, "train").state == "running" and step_of(run) > checkpoint_step + 1)
    jobs.request_stop(run, "train")
    view = jobs.wait_for_job(run, "train", timeout_s=60)
    assert view.state == "stopped", view.tail()
    status = read_json_object(run / "status.json")
    assert status["resumes"] == 1 and status["error"] is None and status["log_tail"] is None
    assert status["created_at"] == created  # runs are listed by it


@pytest.mark.parametrize("kind", jobs.JOB_KINDS)
def test_stop_ends_the_job_stopped_promptly(runs_root, request, kind, monkeypatch):
    monkeypatch.setenv(
        "HF_TOKEN", "hf_the_dashboards_own"
    )  # in the dashboard's environment, as Streamlit puts it
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not for jobs")
    run = start_kind(kind, runs_root, request, f"stop-{kind}")
    wait_until(lambda: working(run, kind))
    # The job (the tiny model and the bundled sample: nothing from the Hub) has no token, no other secret.
    environment = environment_of(jobs.job_view(run, kind).pid)
    assert not {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY"} & set(environment)
    assert (
        environment["PEFT_CACHE_DIR"] == os.environ["PEFT_CACHE_DIR"]
        and environment["PYTHONUNBUFFERED"] == "1"
    )
    logged_before = last_logged_step(run)
    view = jobs.request_stop(run, kind)
    assert view.stop_requested
    view = jobs.wait_for_job(run, kind, timeout_s=60)
    assert (view.state, view.error) == ("stopped", None), view.tail()  # not killed: it stopped by itself
    wait_until(lambda: not jobs.job_view(run, kind).alive, timeout=30)  # and exits
    assert read_json_object(jobs.state_path(run, kind))["ended_at"]
    with pytest.raises(jobs.JobError, match=f"no {kind} job running"):
        jobs.request_stop(run, kind)
    if kind == "train":  # a checkpoint at the step it stopped at, to resume from
        assert latest_checkpoint(run).name == f"checkpoint-{step_of(run)}"
        # The job looks for the request after every step: it ends within a step or two of it, not at
        # the next poll of a page (a stop at step 9 once ended at step 18).
        assert step_of(run) - logged_before <= 2, (logged_before, step_of(run))
    elif kind == "eval":
        assert not (run / "eval").exists()  # results are written whole at the end, or not at all
    else:
        assert not list(run.glob("gguf/*.gguf"))  # no file of an export that did not finish


def test_a_second_stop_request_leaves_the_first_to_finish(runs_root, tiny_model):
    """Stop clicked twice on the Run page, or `python -m core stop` run twice: the second request
    changes nothing. (A second SIGTERM once killed the job while it saved its checkpoint, and
    the death was recorded as a clean `stopped`.)"""
    run = queued_run(runs_root, "twice", max_steps=400, save_steps=1000)
    jobs.start_training(run)
    wait_until(lambda: working(run, "train"))
    first = jobs.request_stop(run, "train")
    second = jobs.request_stop(run, "train")
    assert first.stop_requested and second.stop_requested
    assert second.launch["stop"] == first.launch["stop"]  # the first request stands, with its time
    view = jobs.wait_for_job(run, "train", timeout_s=60)
    assert (view.state, view.error) == ("stopped", None), view.tail()
    wait_until(lambda: not jobs.job_view(run, "train").alive, timeout=30)
    assert latest_checkpoint(run) is not None, view.tail()
    assert latest_checkpoint(run).name == f"checkpoint-{step_of(run)}"
    assert f"stopped at step {step_of(run)}; resume with --resume" in (run / "train.log").read_text()


def test_a_second_job_waits_in_the_queue_and_starts_when_the_first_ends(runs_root, tiny_model):
    first = queued_run(runs_root, "first", max_steps=12)
    second = queued_run(runs_root, "second", max_steps=4)
    jobs.start_training(first)
    wait_until(lambda: jobs.job_view(first, "train").state == "running")
    jobs.start_training(second)
    wait_until(lambda: jobs.job_view(second, "train").waiting_for is not None)
    waiting = jobs.job_view(second, "train")
    assert waiting.state == "queued" and waiting.active
    assert "training of first" in waiting.waiting_for
    with pytest.raises(jobs.JobError, match="already queued"):
        jobs.start_training(second)

    assert jobs.wait_for_job(first, "train", timeout_s=120).state == "completed"
    assert jobs.wait_for_job(second, "train", timeout_s=120).state == "completed"
    first_end = read_json_object(first / "status.json")["ended_at"]
    assert read_json_object(second / "status.json")["started_at"] >= first_end


def test_a_job_that_exits_before_starting_is_failed_with_its_reason(runs_root, tiny_model):
    run = queued_run(runs_root, "locked", max_steps=4)
    with open(jobs.lock_path(run, "train"), "a") as held:  # as if another process were training this run
        fcntl.flock(held, fcntl.LOCK_EX)
        jobs.start_training(run)
        wait_until(lambda: not jobs.job_view(run, "train").alive)
    view = jobs.job_view(run, "train")
    assert view.state == "failed"
    assert view.error.startswith("the job exited before it started")
    assert "the training of run locked is already running in another process" in view.error


def test_start_refuses_runs_that_cannot_train(runs_root):
    done = create_run(runs_root, "done", smoke_config(), status=initial_status("completed", 30))
    with pytest.raises(jobs.JobError, match="already completed"):
        jobs.start_training(done)
    stopped = create_run(runs_root, "stopped", smoke_config(), status=initial_status("stopped", 30))
    with pytest.raises(jobs.JobError, match="continue it with --resume"):
        jobs.start_training(stopped)
    assert not (stopped / "jobs" / "train.launch.json").exists()  # nothing launched


def test_run_job_records_each_ending(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    with jobs.run_job(run, "eval") as job:
        job.stage("answering prompt 1 of 10", 0.1)
        record = read_json_object(run / "jobs" / "eval.json")
        assert (record["state"], record["stage"]) == ("running", "answering prompt 1 of 10")
        assert record["fraction"] == 0.1
        assert record["pid"] == os.getpid() and record["started_at"]
    record = read_json_object(run / "jobs" / "eval.json")
    assert (record["state"], record["fraction"], record["error"]) == ("completed", 1.0, None)
    assert record["ended_at"]
    assert "answering prompt 1 of 10" in (run / "jobs" / "eval.log").read_text()

    with pytest.raises(ValueError), jobs.run_job(run, "eval"):
        raise ValueError("bad prompt set\nmore detail")
    record = read_json_object(run / "jobs" / "eval.json")
    assert (record["state"], record["error"]) == ("failed", "ValueError: bad prompt set")
    failure = [
        i
        for i, line in enumerate(record["log_tail"])
        if "evaluation failed: ValueError: bad prompt set" in line
    ]
    assert failure and record["log_tail"][failure[0] + 1] == "Traceback (most recent call last):"
    assert record["log_tail"][-2:] == ["ValueError: bad prompt set", "more detail"]

    with pytest.raises(RuntimeError), jobs.run_job(run, "export"):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert read_json_object(run / "jobs" / "export.json")["error"] == (
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB "
        "(the merge holds the base model in 16-bit: try a machine with more memory)"
    )


def test_a_stop_is_a_flag_that_stage_raises_and_a_second_sigint_acts_as_before(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    handlers_before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(JobStopped, match="stopped by SIGTERM"), jobs.run_job(run, "eval") as job:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # not interrupted: the job checks when it can
        assert job.stop_requested and job.stop_signal == "SIGTERM"
        # A second SIGTERM is ignored, not the default action that would kill a checkpoint half-saved
        # (checked first: the default action would end this test process).
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        job.stage("answering prompt 2 of 10", 0.2)
    record = read_json_object(run / "jobs" / "eval.json")
    assert record["state"] == "stopped" and record["stage"] != "answering prompt 2 of 10"

    with pytest.raises(KeyboardInterrupt), jobs.run_job(run, "eval") as job:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        assert job.stop_requested
        os.kill(os.getpid(), signal.SIGINT)  # a second one acts as before the job: KeyboardInterrupt here
        time.sleep(5)
    assert read_json_object(run / "jobs" / "eval.json")["state"] == "stopped"

    with pytest.raises(JobStopped), jobs.run_job(run, "export", interrupt=True):  # work that seldom checks
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert read_json_object(run / "jobs" / "export.json")["state"] == "stopped"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers_before  # restored


def test_training_state_lives_in_status_json_and_keeps_the_run_fields(tmp_path):
    run = create_run(tmp_path, "r", smoke_config(), status={**initial_status("queued", 30), "step": 7})
    created = read_json_object(run / "status.json")["created_at"]
    with pytest.raises(RuntimeError), jobs.run_job(run, "train"):
        assert read_json_object(run / "status.json")["state"] == "running"
        raise RuntimeError("CUDA out of memory")
    status = read_json_object(run / "status.json")
    assert (status["state"], status["step"], status["created_at"]) == ("failed", 7, created)
    assert status["error"] == (
        "RuntimeError: CUDA out of memory (try a smaller batch_size or max_seq_length, or load_in_4bit=true)"
    )
    assert "training failed: RuntimeError: CUDA out of memory" in (run / "train.log").read_text()
    assert not (run / "jobs" / "train.json").exists() and not (run / "jobs" / "train.log").exists()


def test_a_refused_or_locked_job_writes_nothing(tmp_path):
    run = tmp_path / "r"
    run.mkdir()

    def refuse() -> None:
        raise jobs.JobError("not now")

    with pytest.raises(jobs.JobError, match="not now"), jobs.run_job(run, "eval", admit=refuse):
        pytest.fail("the job ran")
    jobs.lock_path(run, "eval").parent.mkdir(exist_ok=True)
    with open(jobs.lock_path(run, "eval"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        message = "the evaluation of run r is already running in another process"
        with pytest.raises(jobs.JobError, match=message), jobs.run_job(run, "eval"):
            pytest.fail("the job ran")
    assert not jobs.state_path(run, "eval").exists() and not jobs.log_path(run, "eval").exists()


def test_job_code_sees_only_the_protocol():
    """Training, evaluation and export code imports core.jobs.protocol, never the launcher."""
    for folder in ("train", "evaluate", "export"):
        for path in (PROJECT_DIR / "core" / folder).glob("*.py"):
            imports = re.findall(r"^\s*(?:from|import) (core\.jobs\S*)", path.read_text(), re.MULTILINE)
            assert set(imports) <= {"core.jobs.protocol", "core.jobs.processes"}, path
    control = JobControl()
    control.stage("outside a job, a stage is only a log line")
    control.request_stop("SIGTERM")
    with pytest.raises(JobStopped):
        control.check_stop()


@pytest.mark.parametrize("kind", jobs.JOB_KINDS)
def test_a_queued_job_can_be_stopped_while_it_waits(runs_root, request, kind):
    with job_slot("a job held by this test", lambda holder: None):
        run = start_kind(kind, runs_root, request, f"waiting-{kind}")
        wait_until(lambda: jobs.job_view(run, kind).waiting_for is not None)
        view = jobs.job_view(run, kind)
        assert (view.state, view.active) == ("queued", True)
        assert view.waiting_for.startswith("a job held by this test")
        with pytest.raises(jobs.JobError, match=f"has a {kind} job queued: stop it first"):
            jobs.delete_run(run)
        jobs.request_stop(run, kind)
        view = jobs.wait_for_job(run, kind, timeout_s=30)
    assert (view.state, view.error) == ("stopped", None)
    wait_until(lambda: not jobs.job_view(run, kind).alive, timeout=30)
    assert read_json_object(jobs.state_path(run, kind))["started_at"] is None  # it never ran
    unwritten = {"train": "events.jsonl", "eval": "eval", "bench": "eval/bench-base.json", "export": "merged"}
    assert not (run / unwritten[kind]).exists()


def test_a_reader_during_a_launch_does_not_take_the_new_job_for_dead(runs_root, tiny_model, monkeypatch):
    """Another reader (a second browser tab, Home, the live view's timer) looks at the run while a
    resume is being launched, when its status is reset but the new process is not recorded yet."""
    run = queued_run(runs_root, "relaunch", max_steps=4)
    finished = subprocess.run([sys.executable, "-c", "pass"])  # the earlier job, long gone
    write_json_atomic(run / "status.json", {**read_json_object(run / "status.json"), "state": "stopped"})
    (run / "jobs").mkdir()
    write_json_atomic(
        run / "jobs" / "train.launch.json",
        {"pid": 2**22 - 1, "host": os.uname().nodename, "pid_start": None, "command": finished.args[0]},
    )
    seen = []
    real_popen = subprocess.Popen

    def popen_with_a_reader(*args, **kwargs):
        reader = threading.Thread(target=lambda: seen.append(jobs.job_view(run, "train").state))
        reader.start()
        time.sleep(0.5)  # the reader looks while the launch is half done
        process = real_popen(*args, **kwargs)
        popen_with_a_reader.reader = reader
        return process

    monkeypatch.setattr(jobs.subprocess, "Popen", popen_with_a_reader)
    jobs.start_training(run, resume=True)
    popen_with_a_reader.reader.join(timeout=30)
    assert seen and seen[0] in ("queued", "running")
    assert jobs.wait_for_job(run, "train", timeout_s=120).state == "completed"


def test_a_launch_that_fails_records_the_job_failed_with_its_error(runs_root, monkeypatch):
    """The earlier job of the run was stopped; its process, its stop request and its last log line are
    still on record when the resume cannot start its process (no memory to fork, say)."""
    run = create_run(runs_root, "nofork", smoke_config(), status=initial_status("stopped", 30))
    earlier = {"pid": 2**22 - 1, "host": os.uname().nodename, "pid_start": None}  # long gone
    (run / "jobs").mkdir()
    write_json_atomic(run / "jobs" / "train.launch.json", {**earlier, "stop": dict(earlier)})
    (run / "train.log").write_text("step 7/30 loss 1.2\nstopped at step 7; resume with --resume\n")

    def no_fork(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(jobs.subprocess, "Popen", no_fork)
    message = "could not start the training of run nofork: OSError: .* Cannot allocate memory"
    with pytest.raises(jobs.JobError, match=message):
        jobs.start_training(run, resume=True)
    view = jobs.job_view(run, "train")
    assert (view.state, view.active) == ("failed", False)
    assert view.error == "the job could not be started: OSError: [Errno 12] Cannot allocate memory"
    assert read_json_object(run / "status.json")["ended_at"]
    assert "resume" in "".join(view.tail())  # the old job's log is kept, not taken for this one's


def test_a_token_handed_to_a_job_reaches_the_hub_and_no_file(
    runs_root, tiny_model, converter_dir, monkeypatch, trained_template
):
    """The Hub is a local fake (test_hub.FakeHub): the real one cannot be reached from tests."""
    from test_hub import TOKEN, FakeHub

    monkeypatch.setenv("LLAMA_CPP_DIR", str(converter_dir))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    run = trained_run(trained_template, runs_root, "pushme")
    with FakeHub({TOKEN: {"tester"}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.delenv("TRANSFORMERS_OFFLINE")
        jobs.start_job(
            run, "export", ["--quant", "f16", "--push", "tester/pushme"], secrets={"HF_TOKEN": TOKEN}
        )
        view = jobs.wait_for_job(run, "export", timeout_s=300)
    assert view.state == "completed", "\n".join(view.tail(40))
    assert (
        "gguf/pushme-f16.gguf" in hub.repos["tester/pushme"]
        or "pushme-f16.gguf" in hub.repos["tester/pushme"]
    )
    assert read_json_object(run / "export.json")["hub"]["repo_id"] == "tester/pushme"
    files = [path for path in run.rglob("*") if path.is_file()]
    assert run / "jobs" / "export.log" in files and run / "jobs" / "export.launch.json" in files
    assert not [path for path in files if TOKEN.encode() in path.read_bytes()]


PLANTED_IDENTITIES = {
    # what versions before this one recorded, or a folder from elsewhere: a pid alone
    "a pid without host or start time": lambda pid: {"pid": pid},
    # the right pid, host and start time of a process that is not `python -m core train RUN`
    "a process without the marker": lambda pid: {
        "pid": pid,
        "host": socket.gethostname(),
        "pid_start": process_start(pid),
    },
}


@pytest.mark.parametrize("planted", PLANTED_IDENTITIES)
def test_looking_at_stopping_or_deleting_a_planted_run_never_signals_its_process(runs_root, planted):
    """A run folder says its training runs as a process of ours (a `sleep` started here) and has a
    stop request an hour old: listing runs once SIGKILLed that process's group."""
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    identity = PLANTED_IDENTITIES[planted](sleeper.pid)
    old_request = {
        "pid": sleeper.pid,
        "pid_start": identity.get("pid_start"),
        "requested_s": time.time() - 3600,
        "killed_at": None,
    }

    def plant(name: str) -> Path:
        run = queued_run(runs_root, name)
        write_json_atomic(
            run / "status.json", {**read_json_object(run / "status.json"), "state": "running", **identity}
        )
        (run / "jobs").mkdir()
        write_json_atomic(run / "jobs" / "train.launch.json", {**identity, "stop": old_request})
        return run

    try:
        plant("listed")
        listing = core_command(runs_root, "runs", "list", "--json")
        assert listing.returncode == 0, listing.stderr
        assert [(row["name"], row["state"]) for row in json.loads(listing.stdout)] == [("listed", "failed")]

        view = jobs.job_view(plant("viewed"), "train")
        assert (view.state, view.alive, view.active) == ("failed", False, False)
        assert view.error.startswith("process died") and not view.stop_requested
        plant("live")
        assert [run.state for run in jobs.with_live_states([load_run(runs_root, "live")])] == ["failed"]
        for act in (jobs.request_stop, jobs.kill_job):
            with pytest.raises(jobs.JobError, match="has no train job running"):
                act(plant(f"by-{act.__name__}"), "train")
        for extra in ([], ["--kill"]):
            plant(f"cli{len(extra)}")
            done = core_command(runs_root, "stop", f"cli{len(extra)}", *extra)
            assert done.returncode == 1 and "has no train job running" in done.stderr, done.stderr
        deleted = plant("deleted")
        jobs.delete_run(deleted)
        assert not deleted.exists()

        assert sleeper.poll() is None and pid_alive(sleeper.pid)  # never signalled
        for run in runs_root.iterdir():
            assert read_json_object(run / "status.json")["state"] == "failed", run.name  # recorded dead
    finally:
        sleeper.kill()
        sleeper.wait()


class SilentHub:
    """A local stand-in for the Hub that takes requests for a repo and never answers them: the
    network hangs (other requests get a 404). The real Hub cannot be reached from tests."""

    def __init__(self, repo: str):
        self.repo = repo

    def __enter__(self) -> "SilentHub":
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.requests: list[str] = []
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            request = connection.recv(65536).decode("latin-1")
            if self.repo in request.partition("\r\n")[0]:
                self.requests.append(request)
                self.connections.append(connection)
            else:
                connection.sendall(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                connection.close()

    def __exit__(self, *exc_info) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


def test_a_job_that_ignores_its_stop_request_is_killed_after_the_grace_period_without_anyone_looking(
    runs_root, tiny_model, monkeypatch
):
    """A real training job pulls its dataset from a Hub that never answers: stuck in a read, it
    cannot act on its stop request. Its group watch (PEFT_STOP_GRACE_S=2, in the job's
    environment as in this process's) kills it; nothing reads the run meanwhile."""
    token = "hf_pull_token"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("PEFT_STOP_GRACE_S", "2")
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable)
    for variable in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.setenv(variable, "120")  # the read hangs longer than the grace period
    run = queued_run(runs_root, "hanging", dataset="tester/hanging-data")
    with SilentHub("tester/hanging-data") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        pid = jobs.start_training(run)
        wait_until(lambda: hub.requests, timeout=120)
        assert f"authorization: bearer {token}" in hub.requests[0].lower()  # a pulling job gets the token
        assert environment_of(pid)["HF_TOKEN"] == token
        assert jobs.request_stop(run, "train").stop_requested
        asked = time.monotonic()
        wait_until(lambda: not pid_alive(pid), timeout=30)  # /proc only: the run is not looked at
        took = time.monotonic() - asked
    assert 2 <= took < 6, took
    assert not group_members(pid)
    assert read_json_object(run / "status.json")["state"] == "running"  # nobody recorded anything yet
    view = jobs.job_view(run, "train")
    assert (view.state, view.error) == ("stopped", "killed: it did not stop within 2 s of the stop request")


def test_kill_ends_a_job_at_once_and_its_children_with_it(runs_root, tiny_model):
    run = queued_run(runs_root, "killme", max_steps=400, save_steps=1000)
    pid = jobs.start_training(run)
    wait_until(lambda: working(run, "train"))
    done = core_command(runs_root, "stop", "killme", "--kill")
    assert done.returncode == 0, done.stderr
    assert f"killed the train job of killme (pid {pid}): stopped" in done.stderr
    view = jobs.job_view(run, "train")
    assert (view.state, view.alive, view.error) == (
        "stopped",
        False,
        "killed on request before it had stopped",
    )
    wait_until(lambda: not group_members(pid), timeout=10)
    assert latest_checkpoint(run) is None  # killed, not stopped: no checkpoint saved
    with pytest.raises(jobs.JobError, match="has no train job running"):
        jobs.kill_job(run, "train")


def test_a_stop_is_overdue_once_the_grace_period_is_over(tmp_path, monkeypatch):
    """When the Run page offers Kill. A JobView is plain data: built here for an active job."""
    monkeypatch.setenv("PEFT_STOP_GRACE_S", "30")
    process = {"pid": 4242, "host": socket.gethostname(), "pid_start": 7}

    def view(requested_s: float) -> jobs.JobView:
        launch = {**process, "stop": {"pid": 4242, "pid_start": 7, "requested_s": requested_s}}
        return jobs.JobView("train", "running", True, 4242, {"state": "running", **process}, launch, tmp_path)

    assert view(time.time() - 5).stop_requested and not view(time.time() - 5).stop_overdue
    assert view(time.time() - 31).stop_overdue
    assert view(time.time() + 3600).stop_overdue  # a request dated in the future never withholds Kill


def test_only_a_job_that_pushes_or_pulls_reaches_the_hub(tmp_path, tiny_model):
    local = create_run(tmp_path, "local", smoke_config())  # the tiny model, the bundled sample
    folder = create_run(tmp_path, "folder", smoke_config(base_model=str(tiny_model)))  # a model folder here
    hub_model = create_run(tmp_path, "hubmodel", smoke_config(base_model="unsloth/Llama-3.2-1B-Instruct"))
    hub_data = create_run(tmp_path, "hubdata", smoke_config(dataset="mlabonne/FineTome-100k"))
    for run in (local, folder):
        assert not jobs.job_reaches_hub(run, "train", [])
        assert not jobs.job_reaches_hub(run, "eval", ["--variant", "adapter"])
        assert not jobs.job_reaches_hub(run, "export", ["--quant", "f16"])
    assert jobs.job_reaches_hub(local, "export", ["--quant", "f16", "--push", "me/model"])
    assert jobs.job_reaches_hub(hub_data, "train", []) and not jobs.job_reaches_hub(hub_data, "eval", [])
    for kind, arguments in (("train", []), ("eval", ["--variant", "base"]), ("export", ["--quant", "f16"])):
        assert jobs.job_reaches_hub(hub_model, kind, arguments), kind
    assert not jobs.job_reaches_hub(hub_model, "eval", ["--variant", "gguf:model.gguf"])


def test_planted_links_for_a_jobs_log_or_lock_are_not_followed(runs_root, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("precious\n")
    run = queued_run(runs_root, "linked")
    (run / "train.log").symlink_to(target)
    message = "cannot open linked/train.log: it or its folder is a symbolic link, which is not followed"
    with pytest.raises(jobs.JobError, match=f"could not start the training of run linked: {message}"):
        jobs.start_training(run)
    view = jobs.job_view(run, "train")
    assert (view.state, view.error) == ("failed", f"the job could not be started: {message}")

    other = tmp_path / "other"
    (other / "jobs").mkdir(parents=True)
    (other / "jobs" / "eval.log").symlink_to(target)  # the job's own log, as a job run by hand writes it
    linked = "cannot open jobs/eval.log: it or its folder is a symbolic link"
    with pytest.raises(jobs.JobError, match=linked), jobs.run_job(other, "eval"):
        pytest.fail("the job ran")
    (other / "jobs" / ".export.lock").symlink_to(target)
    linked = "cannot open jobs/.export.lock: it or its folder is a symbolic link"
    with pytest.raises(jobs.JobError, match=linked), jobs.run_job(other, "export"):
        pytest.fail("the job ran")
    assert target.read_text() == "precious\n"
    assert not jobs.state_path(other, "eval").exists() and not jobs.state_path(other, "export").exists()


def test_delete_waits_for_a_launch_in_progress_and_nothing_is_launched_into_a_deleted_run(runs_root):
    run = queued_run(runs_root, "doomed")
    (run / "jobs").mkdir()
    with open(
        run / "jobs" / ".eval.control", "a"
    ) as launching:  # held as start_job holds it while it launches
        fcntl.flock(launching, fcntl.LOCK_EX)
        deleter = threading.Thread(target=jobs.delete_run, args=(run,))
        deleter.start()
        time.sleep(0.5)
        assert run.exists() and deleter.is_alive()
    deleter.join(timeout=10)
    assert not deleter.is_alive() and not run.exists()
    with pytest.raises(jobs.JobError, match="no run folder"):
        jobs.start_job(run, "eval", [])
    assert not run.exists()


def test_a_job_removes_what_killed_writers_left_once_it_holds_the_slot(tmp_path):
    run = tmp_path / "r"
    (run / "gguf").mkdir(parents=True)
    staging = run / ".adapter.0123abcd.partial"
    staging.mkdir()
    (staging / "adapter_model.safetensors").write_text("half")
    partial_file = run / "gguf" / ".r-f16.gguf.89abcdef.partial"
    partial_file.write_text("half")
    temporary = run / ".status.json.01234567.tmp"
    temporary.write_text("{")
    in_use = run / ".merged.fedcba98.partial"  # a writer still at work holds its staging folder
    in_use.mkdir()
    held = os.open(in_use, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        with jobs.run_job(run, "eval"):
            assert not staging.exists() and not partial_file.exists() and not temporary.exists()
            assert in_use.exists()
    finally:
        os.close(held)
    log = (run / "jobs" / "eval.log").read_text()
    assert "removed what interrupted writers left:" in log and "gguf/.r-f16.gguf.89abcdef.partial" in log
