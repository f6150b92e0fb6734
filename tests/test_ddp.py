"""Training with two processes (num_processes=2): real `accelerate launch`, real gloo DDP on the CPU,
real training of the tiny Llama, real SIGTERM, as a user or the dashboard runs it.

Two processes with batch b train on the same global batch as one process with batch 2b: at each
step the ranks' shards of accelerate's sampler together make up the one process's batch, and
the loss is averaged over the tokens of all ranks. Measured here (12 steps, 2026-11-30): the
per-step losses differed by 3.2e-7 on average and 9.5e-7 at most (float rounding), the adapters'
weights by 7.9e-5 at most. The tolerances below are far above that and far below what a
different batch gives (a loss differing by 0.05-0.2 per step).
"""

import subprocess
import sys
import time
from pathlib import Path

from conftest import PROJECT_DIR, run_core

from core.jobs.lifecycle import request_stop, start_training, wait_for_job
from core.store.files import read_json_object, read_jsonl
from core.store.runs import create_run, initial_status, latest_checkpoint
from core.train.presets import get_preset

MEAN_LOSS_TOLERANCE = 1e-4
MAX_LOSS_TOLERANCE = 1e-3
ADAPTER_TOLERANCE = 1e-3
COMMON = {"warmup_steps": 0, "gradient_accumulation_steps": 2, "max_steps": 12}


def settings(**values) -> list[str]:
    return [argument for key, value in values.items() for argument in ("--set", f"{key}={value}")]


def events_of(run) -> list[dict]:
    events, skipped = read_jsonl(run / "events.jsonl")
    assert skipped == 0
    return events


def training_processes(runs_root) -> list[str]:
    """The command lines of the launchers and ranks training runs under `runs_root` (from /proc)."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile
            continue
        if str(runs_root) in line and ("core.train.rank" in line or "run_launcher" in line):
            lines.append(line)
    return lines


def step_of(run) -> int:
    try:
        return read_json_object(run / "status.json").get("step") or 0
    except Exception:  # not written yet
        return 0


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_two_processes_train_as_one_with_the_same_global_batch_and_rank_0_alone_writes(runs_root, tiny_model):
    two = run_core(
        "train",
        "two",
        "--preset",
        "cpu_smoke",
        *settings(**COMMON, batch_size=1, num_processes=2),
        runs_root=runs_root,
    )
    assert two.returncode == 0, two.stderr
    assert two.stdout.strip() == "two: completed at step 12/12"
    assert "warning: no CUDA GPU here: 2 processes train on the CPU (gloo)" in two.stderr
    one = run_core(
        "train", "one", "--preset", "cpu_smoke", *settings(**COMMON, batch_size=2), runs_root=runs_root
    )
    assert one.returncode == 0, one.stderr

    run = runs_root / "two"
    events, reference = events_of(run), events_of(runs_root / "one")
    assert [e["step"] for e in events] == list(range(1, 13))  # one event per step: rank 0 alone writes
    differences = [abs(a["loss"] - b["loss"]) for a, b in zip(events, reference, strict=True)]
    assert sum(differences) / len(differences) < MEAN_LOSS_TOLERANCE, differences
    assert max(differences) < MAX_LOSS_TOLERANCE, differences
    assert events[-1]["tokens_seen"] == reference[-1]["tokens_seen"]  # every rank's tokens counted

    metrics = read_json_object(run / "metrics.json")
    assert metrics["processes"] == 2 and metrics["plan"]["processes"] == 2 and metrics["steps"] == 12
    assert len(metrics["process_peak_memory_gb"]) == 2
    assert metrics["peak_memory_gb"] == max(metrics["process_peak_memory_gb"])  # the peak of the max
    assert all(e["memory_gb"] <= metrics["peak_memory_gb"] + 0.0005 for e in events)  # 4 vs 3 decimals
    assert read_json_object(runs_root / "one" / "metrics.json")["processes"] == 1
    status = read_json_object(run / "status.json")
    assert (status["state"], status["step"]) == ("completed", 12)
    log = (run / "train.log").read_text()
    assert log.count("step 12/12 loss") == 1 and log.count("saving the adapter") == 1
    assert "training: 12 steps on 2 processes (CPU, gloo) under accelerate launch" in log
    assert latest_checkpoint(run).name == "checkpoint-12"
    assert not training_processes(runs_root)

    # The adapter of the two processes loads on the base model and is the one process's.
    check = (
        "import sys, torch\n"
        "from peft import PeftModel\n"
        "from safetensors.torch import load_file\n"
        "from transformers import AutoModelForCausalLM\n"
        "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[1]), sys.argv[2])\n"
        "trained = {k: v for k, v in model.state_dict().items() if 'lora_B' in k}\n"
        "assert len(trained) == 14 and all(v.abs().max() > 0 for v in trained.values())\n"
        "assert model(torch.tensor([[1, 2, 3]])).logits.shape[:2] == (1, 3)\n"
        "a, b = load_file(sys.argv[2] + '/adapter_model.safetensors'), load_file(sys.argv[3])\n"
        "print(max((a[k] - b[k]).abs().max().item() for k in a))\n"
    )
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            check,
            str(tiny_model),
            str(run / "adapter"),
            str(runs_root / "one" / "adapter" / "adapter_model.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert float(loaded.stdout) < ADAPTER_TOLERANCE


def test_the_dashboards_stop_ends_every_process_at_one_checkpoint_and_the_run_resumes_to_the_same_losses(
    runs_root, tiny_model
):
    values = {**COMMON, "max_steps": 24, "save_steps": 4, "batch_size": 1, "num_processes": 2}
    reference = run_core(
        "train", "reference", "--preset", "cpu_smoke", *settings(**values), runs_root=runs_root
    )
    assert reference.returncode == 0, reference.stderr
    expected = [(e["step"], e["loss"]) for e in events_of(runs_root / "reference")]

    # The dashboard's way: a launched job in a session of its own, then Stop (SIGTERM to its group).
    run = runs_root / "stopped"
    create_run(
        runs_root,
        "stopped",
        {**get_preset("cpu_smoke").config(), **values},
        status=initial_status("queued", 24),
    )
    start_training(run)
    wait_until(lambda: step_of(run) >= 6)
    request_stop(run, "train")
    view = wait_for_job(run, "train", 60)
    assert view.state == "stopped" and view.error is None, view.tail()
    step = view.status["step"]
    assert 6 <= step < 24
    assert latest_checkpoint(run).name == f"checkpoint-{step}"  # the step every process stopped after
    assert [e["step"] for e in events_of(run)] == list(range(1, step + 1))
    log = (run / "train.log").read_text()
    assert "asking every training process to stop" in log and log.count("saving a checkpoint at step") == 1
    assert "SIGTERM passed on to the training processes" in log and "Traceback" not in log
    assert not training_processes(runs_root)

    resumed = run_core("train", "stopped", "--resume", runs_root=runs_root)
    assert resumed.returncode == 0, resumed.stderr
    assert [(e["step"], e["loss"]) for e in events_of(run)] == expected
    status = read_json_object(run / "status.json")
    assert (status["state"], status["step"], status["resumes"]) == ("completed", 24, 1)
    assert read_json_object(run / "metrics.json")["resumed"]


def test_killing_the_job_ends_its_launcher_and_every_training_process(runs_root, tiny_model):
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core",
            "--runs-dir",
            str(runs_root),
            "train",
            "killed",
            "--preset",
            "cpu_smoke",
        ]
        + settings(max_steps=1000, num_processes=2, batch_size=1),
        cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: step_of(runs_root / "killed") >= 1)
    assert len(training_processes(runs_root)) == 3  # the launcher and two ranks
    job.kill()  # the job cannot pass anything on
    job.wait()
    wait_until(lambda: not training_processes(runs_root), timeout=10)


def test_a_failing_process_ends_the_job_failed_with_the_reason(runs_root, tiny_model):
    config = {**get_preset("cpu_smoke").config(), "dataset": "someone/not-here", "num_processes": 2}
    create_run(runs_root, "offline", config, status=initial_status("queued", 30))
    done = run_core("train", "offline", runs_root=runs_root)
    assert done.returncode == 1
    assert "a training process failed (accelerate launch exited with code 1)" in done.stderr
    status = read_json_object(runs_root / "offline" / "status.json")
    assert status["state"] == "failed" and status["error"].startswith(
        "TrainingError: a training process failed"
    )
    assert "DataError: cannot load someone/not-here" in (runs_root / "offline" / "train.log").read_text()
    assert not (runs_root / "offline" / "metrics.json").exists() and not training_processes(runs_root)
