"""Real training of the tiny Llama on CPU through `python -m core train`, as a user runs it.

Every run here is a real subprocess that trains real steps with transformers, peft and trl;
stops and crashes are real SIGTERM and SIGKILL signals.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_DIR, run_core

from core.store.files import read_json_object, read_jsonl
from core.store.runs import create_run, initial_status, latest_checkpoint
from core.train.presets import get_preset

SHORT = ["--set", "batch_size=2", "--set", "gradient_accumulation_steps=1", "--set", "warmup_steps=0"]


def events_of(run: Path) -> list[tuple[int, float]]:
    events, skipped = read_jsonl(run / "events.jsonl")
    assert skipped == 0
    return [(event["step"], event["loss"]) for event in events]


def status_of(run: Path) -> dict:
    return read_json_object(run / "status.json")


def start_training(runs_root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core", "--runs-dir", str(runs_root), "train", *args],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def step_reached(run: Path, step: int):
    def reached() -> bool:
        try:
            return status_of(run).get("step", 0) >= step
        except Exception:  # not written yet
            return False

    return reached


def test_a_config_file_run_memorizes_and_writes_the_whole_run_folder(
    runs_root, tiny_model, memorize_data, tmp_path
):
    config = {
        **get_preset("cpu_smoke").config(),
        "dataset": str(memorize_data),
        "max_steps": 20,
        "learning_rate": 1e-2,
        "save_steps": 10,
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
    }
    (tmp_path / "memorize.json").write_text(json.dumps(config))
    done = run_core("train", "memorize", "--config", str(tmp_path / "memorize.json"), runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "memorize: completed at step 20/20"
    run = runs_root / "memorize"
    losses = [loss for _, loss in events_of(run)]
    assert [step for step, _ in events_of(run)] == list(range(1, 21))
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses  # memorized, not just "changed"

    status = status_of(run)
    assert (status["state"], status["step"], status["max_steps"], status["error"]) == (
        "completed",
        20,
        20,
        None,
    )
    assert status["ended_at"] and status["started_at"] and status["resumes"] == 0
    metrics = read_json_object(run / "metrics.json")
    assert metrics["train_loss"] == pytest.approx(metrics["trainer_train_loss"], rel=1e-6)
    assert metrics["final_loss"] == losses[-1] and metrics["steps"] == 20
    assert metrics["memory_measure"] == "process_rss" and metrics["device"] == "cpu"
    assert 0 < metrics["start_memory_gb"] <= metrics["peak_memory_gb"] < 4
    assert metrics["start_peak_memory_gb"] <= metrics["peak_memory_gb"]  # the lab's definition
    assert metrics["start_memory_gb"] <= metrics["training_peak_memory_gb"] <= metrics["peak_memory_gb"]
    assert metrics["training_memory_gb"] >= 0 and metrics["lora_memory_gb"] >= 0
    assert metrics["tokens_seen"] > 0 and metrics["tokens_per_s"] > 0 and metrics["train_runtime_s"] > 0
    assert metrics["data"]["rows_used"] == 6 and metrics["data"]["skipped"] == {}
    assert metrics["plan"]["backend"] == "hf" and metrics["plan"]["optimizer"] == "adamw_torch"
    assert {"torch", "transformers", "peft", "trl", "python"} <= set(metrics["versions"])

    adapter = run / "adapter"
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (16, 16)
    assert set(adapter_config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer.json").is_file()
    assert "<|start_header_id|>" in (adapter / "chat_template.jinja").read_text()
    assert latest_checkpoint(run).name == "checkpoint-20"
    log = (run / "train.log").read_text()
    for stage in (
        "plan: backend hf on cpu",
        "loading data:",
        "loading model: tiny-llama",
        "data: ",
        "6 of 6 rows used",
        "training: 20 steps",
        "step 20/20 loss",
        "checkpoint saved at step 10",
        "saving the adapter",
        "completed: loss",
    ):
        assert stage in log, stage


def test_stop_and_crash_then_resume_give_the_losses_of_an_uninterrupted_run(runs_root, tiny_model):
    common = ["--preset", "cpu_smoke", "--set", "max_steps=24", "--set", "save_steps=4", *SHORT]
    reference = run_core("train", "reference", *common, runs_root=runs_root)
    assert reference.returncode == 0, reference.stderr
    expected = events_of(runs_root / "reference")
    assert [step for step, _ in expected] == list(range(1, 25))

    # SIGTERM mid-run: a checkpoint at the current step, state stopped, exit 0.
    stopped = runs_root / "stopped"
    job = start_training(runs_root, "stopped", *common)
    wait_until(step_reached(stopped, 6))
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    status = status_of(stopped)
    assert status["state"] == "stopped" and "stopped at step" in out
    stop_step = status["step"]
    spent = {"stopped": status["training_s"]}
    assert 6 <= stop_step < 24
    assert latest_checkpoint(stopped).name == f"checkpoint-{stop_step}"
    assert "stop requested (SIGTERM): saving a checkpoint at step" in (stopped / "train.log").read_text()

    # SIGKILL mid-run: no chance to clean up; the status still says running with a dead pid.
    killed = runs_root / "killed"
    job = start_training(runs_root, "killed", *common)
    wait_until(lambda: latest_checkpoint(killed) is not None and step_reached(killed, 10)())
    job.kill()
    job.communicate(timeout=60)
    assert status_of(killed)["state"] == "running"
    spent["killed"] = status_of(killed)["training_s"]
    kill_checkpoint = latest_checkpoint(killed).name

    for name in ("stopped", "killed"):
        resumed = run_core("train", name, "--resume", runs_root=runs_root)
        assert resumed.returncode == 0, resumed.stderr
        assert events_of(runs_root / name) == expected, name  # continuous, and equal step by step
        status = status_of(runs_root / name)
        assert (status["state"], status["step"], status["resumes"]) == ("completed", 24, 1)
        metrics = read_json_object(runs_root / name / "metrics.json")
        assert metrics["resumed"] and metrics["steps"] == 24
        assert metrics["train_runtime_s"] > spent[name] > 0  # time before the stop or crash still counts
        assert metrics["train_loss"] == pytest.approx(
            read_json_object(runs_root / "reference" / "metrics.json")["train_loss"]
        )
    assert (
        f"resuming from {runs_root / 'killed' / 'checkpoints' / kill_checkpoint}"
        in (killed / "train.log").read_text()
    )


def test_a_failure_ends_the_run_failed_with_its_reason_and_log_tail(runs_root, tiny_model):
    create_run(
        runs_root,
        "offline",
        {
            "base_model": "tiny-llama",
            "dataset": "someone/not-here",
            "split": "train[:10]",
            "load_in_4bit": False,
            "backend": "hf",
        },
        status=initial_status("queued", 60),
    )
    done = run_core("train", "offline", runs_root=runs_root)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: training offline failed: DataError: cannot load someone/not-here")
    )
    status = status_of(runs_root / "offline")
    assert status["state"] == "failed" and status["error"].startswith(
        "DataError: cannot load someone/not-here"
    )
    assert status["ended_at"] and any("training failed" in line for line in status["log_tail"])
    assert (
        not (runs_root / "offline" / "metrics.json").exists()
        and not (runs_root / "offline" / "adapter").exists()
    )


def test_the_cpu_smoke_preset_as_shipped_trains_and_its_loss_falls(runs_root, tiny_model):
    done = run_core("train", "smoke", "--preset", "cpu_smoke", runs_root=runs_root)
    assert done.returncode == 0, done.stderr
    run = runs_root / "smoke"
    assert (
        read_json_object(run / "config.json")["dataset"] == "data/sample_sharegpt.jsonl"
    )  # moves with the project
    losses = [loss for _, loss in events_of(run)]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < losses[0] - 0.3, losses
    metrics = read_json_object(run / "metrics.json")
    assert metrics["data"]["rows_used"] == 300 and metrics["tokens_seen"] > 30_000


def test_a_last_partial_logging_interval_is_logged_and_weighted(runs_root, tiny_model):
    done = run_core(
        "train",
        "sparse",
        "--preset",
        "cpu_smoke",
        "--set",
        "max_steps=12",
        "--set",
        "logging_steps=5",
        *SHORT,
        runs_root=runs_root,
    )
    assert done.returncode == 0, done.stderr
    assert [step for step, _ in events_of(runs_root / "sparse")] == [5, 10, 12]
    metrics = read_json_object(runs_root / "sparse" / "metrics.json")
    assert metrics["train_loss"] == pytest.approx(metrics["trainer_train_loss"], rel=1e-6)
