"""Training on Hugging Face Jobs: a queued run launched on a GPU the Hub rents by the minute,
through huggingface_hub's Jobs API (run_job, inspect_job, fetch_job_logs, fetch_job_metrics,
cancel_job, list_jobs_hardware, sync_job_volume).

The job gets two volumes: the project's code (sync_job_volume, read-only) and the runs bucket,
mounted read-write. It installs what the run needs when the image lacks it (requirements-gpu.txt
with the image's own torch pinned), pulls the run from the mounted bucket into a local runs
root, and trains it with `--sync` to the mounted bucket: its files appear in the bucket as it
goes, where the dashboard pulls them, and it stops when the dashboard leaves a stop request
there. The job needs no token: the bucket is mounted. The launch is recorded in the run's
`jobs/hfjob.json` (the job's id, hardware and price), which the dashboard owns.

Only the launch needs the Hub: the tests drive these functions with a local stand-in of the API
that runs the job's command as a local process with the volumes as local folders.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import describe
from core.remote.stores import BucketStore, open_remote
from core.remote.sync import STOP_REQUEST_FILE, push
from core.store.files import read_json_or_empty, write_json_atomic
from core.store.paths import PROJECT_DIR, runs_root_side
from core.store.runs import now_iso
from core.train.config import RunConfig
from core.train.estimate import estimate_t4_step_s

JOB_IMAGE = "pytorch/pytorch:2.9.1-cuda12.8-cudnn9-devel"  # pinned: CUDA PyTorch, with a compiler
PROJECT_MOUNT = "/project"
BUCKET_MOUNT = "/runs-bucket"
JOB_RUNS_DIR = "~/peft-runs"  # the job's own runs root, on the container's disk
JOB_RECORD = "jobs/hfjob.json"
SETUP_S = 6 * 60.0  # image pull, install and model download before the first step: a rough figure
DEFAULT_TIMEOUT_S = 6 * 3600
TERMINAL_STAGES = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
TRAINING_MODULES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")


class HfJobError(RuntimeError):
    """A launch or a job request that cannot be made; the message says why."""


@dataclass(frozen=True)
class Hardware:
    """A GPU flavour Hugging Face Jobs offers, with its price."""

    name: str
    label: str
    gpu: str
    usd_per_hour: float

    def step_s(self, config: RunConfig) -> float | None:
        """Seconds per step of `config` here, where the lab measured this GPU (a T4)."""
        return estimate_t4_step_s(config) if self.gpu.upper() == "T4" else None

    def cost_usd(self, config: RunConfig) -> float | None:
        """The run's estimated cost: setup plus its steps at step_s, at this flavour's price."""
        step = self.step_s(config)
        return None if step is None else (SETUP_S + config.max_steps * step) / 3600 * self.usd_per_hour


def gpu_hardware(api: Any, token: str | None) -> list[Hardware]:
    """The GPU flavours the Hub offers now, T4s first, then by price."""
    try:
        offered = api.list_jobs_hardware(token=token)
    except Exception as exc:  # HTTP and auth errors come in many types
        raise HfJobError(f"cannot list Hugging Face Jobs hardware: {describe(exc)}") from None
    flavours = []
    for info in offered:
        accelerator = getattr(info, "accelerator", None)
        if accelerator is None or getattr(accelerator, "type", "") != "gpu":
            continue
        per_unit = float(info.unit_cost_usd)
        per_hour = per_unit * {"minute": 60, "second": 3600, "hour": 1}.get(str(info.unit_label), 60)
        flavours.append(Hardware(info.name, info.pretty_name, str(accelerator.model), per_hour))
    return sorted(flavours, key=lambda h: (h.gpu.upper() != "T4", h.usd_per_hour, h.name))


def job_command(run: str, backend: str) -> list[str]:
    """The job's command: install what the run lacks, pull it from the mounted bucket, train it
    with a live sync back there."""
    modules = TRAINING_MODULES + (("unsloth",) if backend != "hf" else ())
    check = f"python -c {shlex.quote('import ' + ', '.join(modules))}"
    install = (
        "pip list --format=freeze | grep -iE '^(torch|torchvision|torchaudio)==' > /tmp/keep-torch.txt && "
        "pip install -r requirements-gpu.txt -c /tmp/keep-torch.txt"
    )
    script = "\n".join(
        [
            "set -e",
            f"cd {PROJECT_MOUNT}",
            f"{check} 2>/dev/null || ({install})",
            f"python -m core runs pull {BUCKET_MOUNT} {shlex.quote(run)}",
            f"exec python -m core train {shlex.quote(run)} --sync {BUCKET_MOUNT} --sync-every 30",
        ]
    )
    return ["bash", "-c", script]


def launch(
    root: Path,
    run: str,
    config: RunConfig,
    remote_spec: str,
    flavor: str,
    api: Any,
    token: str | None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Launch the queued run `run` of `root` on Hugging Face Jobs with `flavor`; the launch record
    (also written to the run's jobs/hfjob.json and pushed with the run to the bucket)."""
    from huggingface_hub import Volume

    store = open_remote(remote_spec, api=api, token=token)
    if not isinstance(store, BucketStore):
        raise HfJobError(
            f"Hugging Face Jobs mount a bucket: the runs remote must be hf://buckets/NAMESPACE/NAME[/prefix] "
            f"(got {remote_spec})"
        )
    push(root, store, [run])  # the job pulls the queued run from the bucket
    try:
        code = api.sync_job_volume(str(PROJECT_DIR), PROJECT_MOUNT, read_only=True, token=token)
        runs = Volume(
            type="bucket",
            source=store.bucket_id,
            mount_path=BUCKET_MOUNT,
            read_only=False,
            path=store.prefix or None,
        )
        job = api.run_job(
            image=JOB_IMAGE,
            command=job_command(run, config.backend),
            env={
                "PEFT_RUNS_DIR": JOB_RUNS_DIR,
                "PYTHONUNBUFFERED": "1",
                "UNSLOTH_COMPILE_LOCATION": "/tmp/unsloth_compiled_cache",  # the code's folder is read-only
            },
            flavor=flavor,
            timeout=timeout_s,
            labels={"peft-run": run},
            volumes=[code, runs],
            token=token,
        )
    except Exception as exc:
        raise HfJobError(f"cannot launch {run} on Hugging Face Jobs: {describe(exc)}") from None
    record = {
        "side": runs_root_side(root),
        "job_id": job.id,
        "url": getattr(job, "url", None),
        "flavor": flavor,
        "image": JOB_IMAGE,
        "remote": remote_spec,
        "launched_at": now_iso(),
    }
    (root / run / "jobs").mkdir(exist_ok=True)
    write_json_atomic(root / run / JOB_RECORD, record)
    push(root, store, [run])
    return record


def job_record(run_path: Path) -> dict[str, Any]:
    """The run's Hugging Face job launch record ({} when it was not launched there)."""
    record = read_json_or_empty(run_path / JOB_RECORD)
    return record if isinstance(record.get("job_id"), str) else {}


@dataclass(frozen=True)
class JobReport:
    """What the Hub says of a launched job now."""

    stage: str
    message: str | None
    log_tail: list[str]
    metrics: dict[str, Any]


def job_report(api: Any, record: dict[str, Any], token: str | None, tail: int = 20) -> JobReport:
    """The job's stage, its log's last lines and its latest GPU metrics."""
    job_id = record["job_id"]
    try:
        info = api.inspect_job(job_id=job_id, token=token)
        lines = [str(line).rstrip("\n") for line in api.fetch_job_logs(job_id=job_id, tail=tail, token=token)]
        metrics: dict[str, Any] = {}
        if str(info.status.stage) == "RUNNING":
            for sample in api.fetch_job_metrics(job_id=job_id, token=token):
                metrics = dict(sample)
                break
    except Exception as exc:
        raise HfJobError(f"cannot read Hugging Face job {job_id}: {describe(exc)}") from None
    stage = getattr(info.status.stage, "value", info.status.stage)
    return JobReport(str(stage), info.status.message, lines[-tail:], metrics)


def cancel_if_overdue(
    api: Any,
    record: dict[str, Any],
    run_path: Path,
    report: JobReport,
    grace_s: float,
    token: str | None,
) -> bool:
    """Cancel the job when a stop was requested through the remote (the request is in the run
    folder here: the dashboard wrote it, or pulled it), after the launch, at least `grace_s`
    seconds ago, and it still runs (the graceful stop did not end it); whether it was."""
    if report.stage in TERMINAL_STAGES:
        return False
    requested = read_json_or_empty(run_path / STOP_REQUEST_FILE).get("requested_at")
    if not isinstance(requested, str) or requested < str(record.get("launched_at") or ""):
        return False
    try:
        waited = (
            time.time() - datetime.strptime(requested, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        )
    except ValueError:
        return False  # not a time now_iso writes: not this project's request
    if waited < grace_s:
        return False
    try:
        api.cancel_job(job_id=record["job_id"], token=token)
    except Exception as exc:
        raise HfJobError(f"cannot cancel Hugging Face job {record['job_id']}: {describe(exc)}") from None
    return True
