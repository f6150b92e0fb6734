"""The job manager with real processes: real training jobs of the tiny Llama, real signals.

Every job here is `python -m core train ...` started by core.jobs in its own session, as the
Train page starts it; kills and stops are real SIGKILL and SIGTERM signals.
"""

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, run_core

from core.jobs import lifecycle as jobs
from core.jobs.processes import pid_alive, process_start
from core.store.files import read_json_object, write_json_atomic
from core.store.runs import (
    create_run,
    initial_status,
    latest_checkpoint,
    list_runs,
    load_run,
)
from core.train.presets import get_preset
from core.train.training import LOCK_FILE


def smoke_config(**changes) -> dict:
    config = {**get_preset("cpu_smoke").config(), "batch_size": 2, "gradient_accumulation_steps": 1,
              "warmup_steps": 0}
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


def test_a_job_outlives_the_process_that_launched_it(runs_root, tiny_model):
    run = queued_run(runs_root, "orphan", max_steps=8)
    launcher = subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from core.jobs.lifecycle import start_training; "
         "print(start_training(Path(sys.argv[1]))); sys.stdout.flush(); import os; os._exit(0)", str(run)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60, check=True,
    )
    pid = int(launcher.stdout)  # the launcher is gone now; the job must not be
    assert jobs.job_view(run, "train").pid == pid
    view = jobs.wait_for_job(run, "train", timeout_s=120)
    assert view.state == "completed", view.tail()
    assert load_run(runs_root, "orphan").metrics["steps"] == 8
    assert "python -m core --runs-dir" in (run / "train.log").read_text()


def test_a_killed_job_is_reported_dead_and_resumes_from_its_checkpoint(runs_root, tiny_model):
    run = queued_run(runs_root, "killed", max_steps=400, save_steps=3)
    pid = jobs.start_training(run)
    wait_until(lambda: latest_checkpoint(run) is not None and step_of(run) >= 4)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid))
    assert read_json_object(run / "status.json")["state"] == "running"  # as the dead job left it
    assert [r.state for r in jobs.with_live_states(list_runs(runs_root))] == ["failed"]

    view = jobs.job_view(run, "train")
    assert view.state == "failed" and view.error.startswith("process died"), view.status
    assert read_json_object(run / "status.json")["state"] == "failed"  # recorded, so every reader agrees
    checkpoint_step = int(latest_checkpoint(run).name.split("-")[1])

    jobs.start_training(run, resume=True)
    wait_until(lambda: jobs.job_view(run, "train").state == "running" and step_of(run) > checkpoint_step + 1)
    jobs.request_stop(run, "train")
    view = jobs.wait_for_job(run, "train", timeout_s=60)
    assert view.state == "stopped", view.tail()
    assert read_json_object(run / "status.json")["resumes"] == 1


def test_stop_ends_the_run_stopped_with_a_checkpoint_at_its_step(runs_root, tiny_model):
    run = queued_run(runs_root, "stopme", max_steps=400, save_steps=1000)
    jobs.start_training(run)
    wait_until(lambda: step_of(run) >= 3)
    view = jobs.request_stop(run, "train")
    assert view.stop_requested
    view = jobs.wait_for_job(run, "train", timeout_s=60)
    assert (view.state, view.error) == ("stopped", None)
    stopped_at = step_of(run)
    assert latest_checkpoint(run).name == f"checkpoint-{stopped_at}"
    with pytest.raises(jobs.JobError, match="no train job running"):
        jobs.request_stop(run, "train")


def test_a_second_job_waits_in_the_queue_and_starts_when_the_first_ends(runs_root, tiny_model):
    first = queued_run(runs_root, "first", max_steps=12)
    second = queued_run(runs_root, "second", max_steps=4)
    jobs.start_training(first)
    wait_until(lambda: jobs.job_view(first, "train").state == "running")
    jobs.start_training(second)
    wait_until(lambda: jobs.job_view(second, "train").waiting_for is not None)
    waiting = jobs.job_view(second, "train")
    assert waiting.state == "queued" and waiting.active
    assert "training first" in waiting.waiting_for
    with pytest.raises(jobs.JobError, match="already queued"):
        jobs.start_training(second)

    assert jobs.wait_for_job(first, "train", timeout_s=120).state == "completed"
    assert jobs.wait_for_job(second, "train", timeout_s=120).state == "completed"
    first_end = read_json_object(first / "status.json")["ended_at"]
    assert read_json_object(second / "status.json")["started_at"] >= first_end


def test_a_job_that_exits_before_starting_is_failed_with_its_reason(runs_root, tiny_model):
    run = queued_run(runs_root, "locked", max_steps=4)
    with open(run / LOCK_FILE, "a") as held:  # as if another process were training this run
        fcntl.flock(held, fcntl.LOCK_EX)
        jobs.start_training(run)
        wait_until(lambda: not jobs.job_view(run, "train").alive)
    view = jobs.job_view(run, "train")
    assert view.state == "failed"
    assert view.error.startswith("the job exited before it started")
    assert "being trained by another process" in view.error


def test_start_refuses_runs_that_cannot_train(runs_root):
    done = create_run(runs_root, "done", smoke_config(), status=initial_status("completed", 30))
    with pytest.raises(jobs.JobError, match="already completed"):
        jobs.start_training(done)
    stopped = create_run(runs_root, "stopped", smoke_config(), status=initial_status("stopped", 30))
    with pytest.raises(jobs.JobError, match="continue it with --resume"):
        jobs.start_training(stopped)
    assert not (stopped / "jobs" / "train.launch.json").exists()  # nothing launched


def test_a_job_that_ignores_its_stop_request_is_killed_after_the_grace_period(tmp_path, monkeypatch):
    """The job's command is a stand-in process that ignores SIGTERM: no real job does on purpose."""
    run = tmp_path / "stubborn"
    (run / "jobs").mkdir(parents=True)
    process = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    assert process.stdout.readline().strip() == "ready"
    identity = {"pid": process.pid, "host": os.uname().nodename, "pid_start": process_start(process.pid)}
    write_json_atomic(run / "jobs" / "export.json", {"state": "running", **identity})
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 2.0)

    jobs.request_stop(run, "export")
    time.sleep(0.2)
    assert jobs.job_view(run, "export").alive  # still inside the grace period
    time.sleep(2.0)
    view = jobs.job_view(run, "export")
    process.wait(timeout=10)
    assert (view.state, view.alive) == ("stopped", False)
    assert view.error.startswith("killed")


def test_recorded_job_records_each_ending(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    with jobs.recorded_job(run, "eval") as job:
        job.stage("answering prompt 1 of 10", 0.1)
        assert read_json_object(run / "jobs" / "eval.json")["state"] == "running"
    assert read_json_object(run / "jobs" / "eval.json")["state"] == "completed"

    with pytest.raises(ValueError):
        with jobs.recorded_job(run, "eval"):
            raise ValueError("bad prompt set\nmore detail")
    record = read_json_object(run / "jobs" / "eval.json")
    assert (record["state"], record["error"]) == ("failed", "ValueError: bad prompt set")

    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(jobs.JobStopped):
        with jobs.recorded_job(run, "export"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert read_json_object(run / "jobs" / "export.json")["state"] == "stopped"
    assert signal.getsignal(signal.SIGTERM) == handler_before  # restored


def test_a_queued_job_can_be_stopped_while_it_waits(runs_root, tiny_model):
    run = queued_run(runs_root, "waiting", max_steps=4)
    with jobs.job_slot("a job held by this test", lambda holder: None):
        jobs.start_training(run)
        wait_until(lambda: jobs.job_view(run, "train").waiting_for is not None)
        assert jobs.job_view(run, "train").waiting_for.startswith("a job held by this test")
        jobs.request_stop(run, "train")
        view = jobs.wait_for_job(run, "train", timeout_s=30)
    assert (view.state, view.alive) == ("stopped", False)
    assert not (run / "events.jsonl").exists()  # it never trained


def test_a_reader_during_a_launch_does_not_take_the_new_job_for_dead(runs_root, tiny_model, monkeypatch):
    """Another reader (a second browser tab, Home, the live view's timer) looks at the run while a
    resume is being launched, when its status is reset but the new process is not recorded yet."""
    run = queued_run(runs_root, "relaunch", max_steps=4)
    finished = subprocess.run([sys.executable, "-c", "pass"])  # the earlier job, long gone
    write_json_atomic(run / "status.json", {**read_json_object(run / "status.json"), "state": "stopped"})
    (run / "jobs").mkdir()
    write_json_atomic(run / "jobs" / "train.launch.json", {"pid": 2**22 - 1, "host": os.uname().nodename,
                                                         "pid_start": None, "command": finished.args[0]})
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


def test_a_token_handed_to_a_job_reaches_the_hub_and_no_file(runs_root, tiny_model, converter_dir, monkeypatch):
    """The Hub is a local fake (test_hub.FakeHub): the real one cannot be reached from tests."""
    from test_hub import TOKEN, FakeHub

    monkeypatch.setenv("LLAMA_CPP_DIR", str(converter_dir))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    trained = run_core("train", "pushme", "--preset", "cpu_smoke", "--set", "max_steps=2", "--set", "warmup_steps=0",
                       runs_root=runs_root)
    assert trained.returncode == 0, trained.stderr
    run = runs_root / "pushme"
    with FakeHub({TOKEN: {"tester"}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.delenv("TRANSFORMERS_OFFLINE")
        jobs.start_job(run, "export", ["--quant", "f16", "--push", "tester/pushme"], secrets={"HF_TOKEN": TOKEN})
        view = jobs.wait_for_job(run, "export", timeout_s=300)
    assert view.state == "completed", "\n".join(view.tail(40))
    assert "gguf/pushme-f16.gguf" in hub.repos["tester/pushme"] or "pushme-f16.gguf" in hub.repos["tester/pushme"]
    assert read_json_object(run / "export.json")["hub"]["repo_id"] == "tester/pushme"
    files = [path for path in run.rglob("*") if path.is_file()]
    assert run / "jobs" / "export.log" in files and run / "jobs" / "export.launch.json" in files
    assert not [path for path in files if TOKEN.encode() in path.read_bytes()]
