"""The durable queue with real training jobs of the tiny Llama: a 4-member CPU smoke grid that runs
one after another with nobody watching, through a failing member and a runner killed mid-member and
started again as the dashboard or the command line starts it; then the sweep view of the four. And
a 6-trial Optuna search whose runner and training job are killed mid-trial (the machine going
down), resumed to its six trials."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
from conftest import PROJECT_DIR, app_at, charts, plain, run_core

from core.jobs.lifecycle import job_view, start_job
from core.jobs.queue import read_queue, run_member, runner_running
from core.store.runs import load_run
from core.sweeps.definition import read_sweep
from core.sweeps.outcomes import objective_value
from core.sweeps.search import storage_url


def start_runner(root):
    """`python -m core queue run` as a process of its own (its session: killed with its group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "core", "--runs-dir", str(root), "queue", "run"],
        cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def state(root, name: str) -> str:
    return load_run(root, name).state if (root / name).is_dir() else "absent"


def drained(root) -> bool:
    """The queue is empty and its runner has exited."""
    return not read_queue(root) and not runner_running(root)


def test_a_grid_runs_one_after_another_through_a_failure_and_a_runner_restart(runs_root, tiny_model):
    done = run_core(
        "sweep", "g", "--preset", "cpu_smoke", "--grid", "lora_r=4,8", "--grid", "learning_rate=0.01,0.02",
        "--set", "max_steps=6", "--set", "warmup_steps=1", "--no-start", runs_root=runs_root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = done.stdout.split()
    assert names == ["g-r4-lr0.01", "g-r4-lr0.02", "g-r8-lr0.01", "g-r8-lr0.02"]
    assert [item.run for item in read_queue(runs_root)] == names and not runner_running(runs_root)
    failing = runs_root / names[1] / "config.json"  # made to fail in training: its data is gone
    failing.write_text(json.dumps({**json.loads(failing.read_text()), "dataset": "data/gone.jsonl"}))

    runner = start_runner(runs_root)
    wait_until(lambda: state(runs_root, names[0]) == "running", 120, "the first member to run")
    os.killpg(runner.pid, signal.SIGKILL)  # the dashboard's machine loses the runner, not the job
    runner.wait()
    assert not runner_running(runs_root) and len(read_queue(runs_root)) == 4
    restarted = run_core("queue", "start", runs_root=runs_root)  # what the next page view or command does
    assert "started the runner" in restarted.stdout, restarted.stderr
    wait_until(lambda: drained(runs_root), 300, "the queue to finish")

    runs = [load_run(runs_root, name) for name in names]
    assert [run.state for run in runs] == ["completed", "failed", "completed", "completed"]
    assert "gone.jsonl" in runs[1].status["error"]
    for before, after in zip(runs, runs[1:]):  # one after another: each began once the one before ended
        assert before.status["ended_at"] <= after.status["started_at"]
    assert all(run.metrics.get("steps") == 6 for run in runs if run.state == "completed")

    app = app_at("pages/5_Sweeps.py", {"sweep": "g"}, timeout=60)
    app.run()
    assert not app.exception, app.exception
    figures = charts(app)
    axes = {d["label"]: plain(d["values"]) for d in figures["parcoords"]["data"][0]["dimensions"]}
    assert axes["lora_r"] == [4, 4, 8, 8] and axes["learning_rate"] == [0.01, 0.02, 0.01, 0.02]
    assert len([loss for loss in axes["Final loss"] if loss is not None]) == 3  # the failed member has none
    importance = figures["importance"]["data"]
    assert {trace["name"] for trace in importance} >= {"Final loss", "Runtime (s)"}
    assert sorted(importance[0]["y"]) == ["learning_rate", "lora_r"]
    assert {metric.label: metric.value for metric in app.metric}["Failed"] == "1"


def test_a_search_resumes_after_being_killed_mid_trial(runs_root, tiny_model):
    done = run_core(
        "sweep", "s", "--preset", "cpu_smoke", "--search", "lora_r=int:2:16", "--search",
        "learning_rate=float:0.001:0.05:log", "--trials", "6", "--set", "max_steps=3", "--set", "warmup_steps=0",
        "--no-start", runs_root=runs_root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runner = start_runner(runs_root)
    wait_until(lambda: state(runs_root, "s-t1") == "running", 180, "the second trial to train")
    job = load_run(runs_root, "s-t1").status["pid"]
    os.killpg(runner.pid, signal.SIGKILL)  # the machine goes down: runner and training job
    os.killpg(job, signal.SIGKILL)
    runner.wait()
    study = optuna.load_study(study_name="s", storage=storage_url(runs_root, "s"))
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "RUNNING"]

    assert "started the runner" in run_core("queue", "start", runs_root=runs_root).stdout
    wait_until(lambda: drained(runs_root), 400, "the search to finish")
    study = optuna.load_study(study_name="s", storage=storage_url(runs_root, "s"))
    assert [trial.state.name for trial in study.trials] == ["COMPLETE"] * 6
    assert [trial.user_attrs["run"] for trial in study.trials] == [f"s-t{n}" for n in range(6)]
    resumed = load_run(runs_root, "s-t1")
    assert resumed.state == "completed" and resumed.status["resumes"] == 1  # its run resumed, not lost
    assert study.trials[1].value == resumed.metrics["final_loss"]
    assert read_sweep(runs_root, "s").run_names == [f"s-t{n}" for n in range(6)]
    for trial in study.trials:
        assert 2 <= trial.params["lora_r"] <= 16
        assert load_run(runs_root, trial.user_attrs["run"]).config["lora_r"] == trial.params["lora_r"]


def test_a_checks_passed_sweep_evaluates_each_member_after_training(runs_root, tiny_model):
    done = run_core(
        "sweep", "c", "--preset", "cpu_smoke", "--grid", "lora_r=4", "--set", "max_steps=2", "--set",
        "warmup_steps=0", "--objective", "checks_passed", "--no-start", runs_root=runs_root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ran = run_core("queue", "run", runs_root=runs_root, timeout=300)  # the runner in the foreground
    assert ran.returncode == 0 and "c-r4: completed" in ran.stderr, ran.stderr
    run = load_run(runs_root, "c-r4")
    answers = [json.loads(line) for line in (run.path / "eval" / "adapter.jsonl").read_text().splitlines()]
    assert len(answers) == 10  # the lab's prompts, answered by the member's adapter
    value, _ = objective_value(run, "checks_passed")
    assert value == sum(answer["passed"] is True for answer in answers)
    assert drained(runs_root)


def test_a_member_whose_evaluation_was_started_by_an_earlier_runner_is_waited_for(runs_root, tiny_model):
    """A runner restarted while a member's adapter is evaluated waits for that evaluation instead of
    telling the objective without it."""
    done = run_core(
        "sweep", "e", "--preset", "cpu_smoke", "--grid", "lora_r=4", "--set", "max_steps=2", "--set",
        "warmup_steps=0", "--no-start", runs_root=runs_root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = runs_root / "e-r4"
    assert run_member(path, poll_s=0.2) == "completed"
    start_job(path, "eval", [])  # the evaluation the killed runner had started
    assert run_member(path, evaluate=True, poll_s=0.2) == "completed"
    assert not job_view(path, "eval").active
    value, why = objective_value(load_run(runs_root, "e-r4"), "checks_passed")
    assert value is not None, why
