"""Training on Hugging Face Jobs, driven through a local stand-in of the Hub's Jobs and bucket API:
run_job starts the job's real command as a local process with its volumes as local folders (the
code volume is this project, the runs bucket a folder), so everything but the HTTP calls runs:
the install check, the pull from the mounted bucket, training with a live sync, stop and cancel.
Never run against the live service (README)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import PROJECT_DIR, StandInBucketApi
from huggingface_hub import Volume

from core.remote import hf_jobs, sync
from core.remote.stores import open_remote
from core.store.runs import create_run, initial_status, read_run_folder
from core.train.config import parse_config
from core.train.presets import get_preset

TOKEN = "hf_standin_token_never_written"


class StandInHub(StandInBucketApi):
    """The bucket calls (over `hub/<bucket>/...`) and the Jobs calls (local processes)."""

    def __init__(self, hub: Path, home: Path, environment: dict[str, str]):
        super().__init__(hub)
        self.hub, self.home, self.environment = hub, home, environment
        self.jobs: dict[str, SimpleNamespace] = {}
        self.mounts: dict[str, Path] = {}

    # jobs
    def list_jobs_hardware(self, token=None):
        gpu = lambda model: SimpleNamespace(type="gpu", model=model)  # noqa: E731
        return [
            SimpleNamespace(
                name="cpu-basic",
                pretty_name="CPU",
                accelerator=None,
                unit_cost_usd=0.0001,
                unit_label="minute",
            ),
            SimpleNamespace(
                name="a10g-small",
                pretty_name="A10G small",
                accelerator=gpu("A10G"),
                unit_cost_usd=0.0167,
                unit_label="minute",
            ),
            SimpleNamespace(
                name="t4-medium",
                pretty_name="T4 medium",
                accelerator=gpu("T4"),
                unit_cost_usd=0.01,
                unit_label="minute",
            ),
            SimpleNamespace(
                name="t4-small",
                pretty_name="T4 small",
                accelerator=gpu("T4"),
                unit_cost_usd=0.00667,
                unit_label="minute",
            ),
        ]

    def sync_job_volume(self, source, mount_path, *, read_only=True, token=None):
        self.mounts[mount_path] = Path(source)
        return Volume(type="bucket", source="standin/code", mount_path=mount_path, read_only=read_only)

    def run_job(self, *, image, command, env, flavor, timeout, labels, volumes, token, secrets=None):
        assert token == TOKEN and not secrets  # the job itself gets no token: the bucket is mounted
        for volume in volumes:
            if volume.source != "standin/code":
                self.mounts[volume.mount_path] = self.hub / volume.source / (volume.path or "")

        def mounted(text: str) -> str:
            for mount, folder in sorted(self.mounts.items(), key=lambda item: -len(item[0])):
                text = text.replace(mount, str(folder))
            return text

        log = self.home / f"job-{len(self.jobs)}.log"
        process = subprocess.Popen(
            [mounted(part) for part in command],
            env={**self.environment, "HOME": str(self.home), **{k: mounted(v) for k, v in env.items()}},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        job = SimpleNamespace(id=f"job-{len(self.jobs)}", url=None, process=process, log=log, canceled=False)
        self.jobs[job.id] = job
        return job

    def inspect_job(self, *, job_id, token=None):
        job = self.jobs[job_id]
        code = job.process.poll()
        stage = (
            "RUNNING"
            if code is None
            else "CANCELED"
            if job.canceled
            else "COMPLETED"
            if code == 0
            else "ERROR"
        )
        return SimpleNamespace(status=SimpleNamespace(stage=stage, message=None))

    def fetch_job_logs(self, *, job_id, tail=None, token=None):
        return self.jobs[job_id].log.read_text().splitlines()[-(tail or 0) :]

    def fetch_job_metrics(self, *, job_id, token=None):
        yield {"gpu_utilization": None, "cpu_usage_pct": 100.0}

    def cancel_job(self, *, job_id, token=None):
        job = self.jobs[job_id]
        job.canceled = True
        os.killpg(job.process.pid, signal.SIGKILL)
        job.process.wait()


@pytest.fixture
def hub(tmp_path, tiny_model):
    home = tmp_path / "job-home"
    home.mkdir()
    environment = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the image's python
        "OMP_NUM_THREADS": "1",
        "PEFT_CACHE_DIR": os.environ["PEFT_CACHE_DIR"],  # where the tiny model is, as a download would be
        "HF_HUB_OFFLINE": "1",
    }
    stand_in = StandInHub(tmp_path / "hub", home, environment)
    (tmp_path / "hub" / "lab" / "runs").mkdir(parents=True)
    yield stand_in
    for job in stand_in.jobs.values():
        if job.process.poll() is None:
            os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait()


def queued_run(root: Path, name: str, max_steps: int):
    config = parse_config({**get_preset("cpu_smoke").config(), "max_steps": max_steps, "logging_steps": 1})
    create_run(root, name, config.to_dict(), status=initial_status("queued", max_steps))
    return config


def wait_for(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_a_run_launched_on_hf_jobs_trains_there_and_comes_back_through_the_bucket(tmp_path, hub):
    dashboard = tmp_path / "dashboard"
    config = queued_run(dashboard, "far", 6)
    record = hf_jobs.launch(dashboard, "far", config, "hf://buckets/lab/runs", "t4-small", hub, TOKEN)
    assert record["flavor"] == "t4-small" and record["job_id"] == "job-0"
    store = open_remote("hf://buckets/lab/runs", api=hub, token=TOKEN)

    def completed_here() -> bool:
        sync.pull(dashboard, store)
        return read_run_folder(dashboard / "far").state == "completed"

    wait_for(completed_here)
    run = read_run_folder(dashboard / "far")
    assert (
        run.metrics["steps"] == 6 and (dashboard / "far" / "adapter" / "adapter_model.safetensors").is_file()
    )
    assert run.status["side"] != hf_jobs.job_record(dashboard / "far")["side"]  # trained on the job's side
    wait_for(
        lambda: hf_jobs.job_report(hub, record, TOKEN).stage != "RUNNING", 60
    )  # its last push, then exit
    report = hf_jobs.job_report(hub, record, TOKEN)
    assert report.stage == "COMPLETED" and any("completed at step 6/6" in line for line in report.log_tail)
    everything = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size < 5_000_000]
    assert not [p for p in everything if TOKEN.encode() in p.read_bytes()]  # the token is written nowhere


def test_a_job_is_stopped_through_the_bucket_and_cancelled_when_a_stop_is_overdue(tmp_path, hub):
    dashboard = tmp_path / "dashboard"
    config = queued_run(dashboard, "long", 100_000)
    record = hf_jobs.launch(dashboard, "long", config, "hf://buckets/lab/runs", "t4-small", hub, TOKEN)
    store = open_remote("hf://buckets/lab/runs", api=hub, token=TOKEN)

    def running_here() -> bool:
        sync.pull(dashboard, store)
        return read_run_folder(dashboard / "long").status.get("step", 0) >= 2

    wait_for(running_here)
    report = hf_jobs.job_report(hub, record, TOKEN)
    assert report.stage == "RUNNING" and report.metrics
    assert not hf_jobs.cancel_if_overdue(
        hub, record, dashboard / "long", report, 30.0, TOKEN
    )  # nothing asked yet
    sync.request_remote_stop(dashboard, store, "long")
    assert not hf_jobs.cancel_if_overdue(
        hub, record, dashboard / "long", report, 30.0, TOKEN
    )  # asked just now
    wait_for(lambda: hf_jobs.job_report(hub, record, TOKEN).stage == "COMPLETED", 120)
    sync.pull(dashboard, store)
    assert read_run_folder(dashboard / "long").state == "stopped"  # graceful: a checkpoint, then stopped

    queued_run(dashboard, "stuck", 100_000)
    record = hf_jobs.launch(dashboard, "stuck", config, "hf://buckets/lab/runs", "t4-small", hub, TOKEN)
    sync.request_remote_stop(dashboard, store, "stuck")  # before the job reads it: as if ignored
    report = hf_jobs.job_report(hub, record, TOKEN)
    assert hf_jobs.cancel_if_overdue(hub, record, dashboard / "stuck", report, 0.0, TOKEN)
    assert hf_jobs.job_report(hub, record, TOKEN).stage == "CANCELED"


def test_hardware_lists_gpus_t4_first_with_the_price_and_the_runs_cost(hub):
    flavours = hf_jobs.gpu_hardware(hub, TOKEN)
    assert [h.name for h in flavours] == ["t4-small", "t4-medium", "a10g-small"]
    t4 = flavours[0]
    assert t4.usd_per_hour == pytest.approx(0.4002)
    t1 = parse_config(get_preset("t1_baseline").config())
    hours = (hf_jobs.SETUP_S + 600 * (2594.04 + 2649.69) / 2 / 600) / 3600  # the lab's T1 and T2 runtimes
    assert t4.cost_usd(t1) == pytest.approx(hours * 0.4002)
    assert flavours[2].cost_usd(t1) is None  # never measured on an A10G: no guess


def test_a_folder_remote_cannot_be_mounted_by_a_job(tmp_path, hub):
    dashboard = tmp_path / "dashboard"
    config = queued_run(dashboard, "r", 5)
    (tmp_path / "folder").mkdir()
    with pytest.raises(hf_jobs.HfJobError, match="mount a bucket"):
        hf_jobs.launch(dashboard, "r", config, str(tmp_path / "folder"), "t4-small", hub, TOKEN)
    assert hub.jobs == {}


def test_the_jobs_command_installs_only_what_the_image_lacks():
    command = hf_jobs.job_command("t1", "auto")[2]
    assert "import torch, transformers, peft, trl, datasets, accelerate, unsloth" in command
    assert "pip install -r requirements-gpu.txt -c /tmp/keep-torch.txt" in command
    assert "unsloth" not in hf_jobs.job_command("t1", "hf")[2].split("||")[0]
    assert (PROJECT_DIR / "requirements-gpu.txt").is_file()


@pytest.mark.parametrize(
    "extra, environment, message",
    [
        ([], {}, "needs the runs bucket the job trains into"),
        (["--sync", "/tmp"], {"HF_TOKEN": "x"}, "a Hugging Face job mounts a bucket"),
        (["--sync", "hf://buckets/lab/runs"], {}, "needs a Hugging Face token"),
    ],
)
def test_the_command_line_refuses_a_launch_it_cannot_make_and_creates_nothing(
    runs_root, monkeypatch, extra, environment, message
):
    from conftest import run_core

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PEFT_RUNS_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    done = run_core("train", "t1", "--preset", "cpu_smoke", "--on", "hf-jobs", *extra, runs_root=runs_root)
    assert done.returncode != 0 and message in done.stderr
    assert not (runs_root / "t1").exists()
