"""Training with more than one process (num_processes > 1): data-parallel (DDP) under `accelerate launch`.

The run's training job stays the process the lifecycle knows (pid, lock, status.json, stop
handling). It plans the run, then `train_processes` starts a launcher, `accelerate launch
--multi_gpu --num_processes N -m core.train.rank ...`, in a session of its own, and waits for
it. The launcher (torch's elastic agent, inside accelerate) starts one process per rank
(core.train.rank), each in its own session; on CPU they meet over gloo (ACCELERATE_USE_CPU), on
CUDA over NCCL, one GPU each.

- **Who writes**: rank 0 alone writes the run folder (status, events, checkpoints through the
  trainer, adapter, metrics) and tells the job how it ended (a file in a private temporary
  folder: completed or stopped); the other ranks train and write nothing.
- **Stop**: the job relays its stop request as one SIGTERM to the launcher, which sends SIGTERM
  to every rank and waits for them up to the job's stop grace (TORCH_ELASTIC_SHUTDOWN_TIMEOUT).
  A rank's SIGTERM only sets its stop flag; at every step's end the ranks take the maximum of
  their flags (RunRecorder, `max_over_processes`), so all of them stop after the same step and
  save one checkpoint together: a rank stopping a step before another would leave the other
  waiting in a collective.
- **Nothing outlives the job**: the launcher and every rank ask Linux to SIGKILL them when
  their parent ends (`die_with_parent`), so killing the job (kill_job, its group watch, a crash)
  ends them all, although they do not share its process group.
- **Memory**: each event's memory is the largest of the ranks' readings at that step; metrics
  take the figures of the rank with the highest peak and list every rank's peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TypeVar

from core.jobs.protocol import JobControl, JobStopped, stop_grace_s
from core.store.files import open_regular
from core.store.paths import PROJECT_DIR
from core.store.runs import TRAIN_LOG
from core.train.config import RunConfig
from core.train.plan import TrainingPlan

log = logging.getLogger(__name__)
T = TypeVar("T")

PARENT_PID_ENV = "PEFT_PARENT_PID"
"""The pid of the process that started this one, for `die_with_parent`'s check."""
OUTCOME_FILE = "outcome"
COMPLETED, STOPPED = "completed", "stopped"
PR_SET_PDEATHSIG = 1
WAIT_POLL_S = 0.2
LAUNCHER_CODE = "import sys; from core.train.distributed import run_launcher; run_launcher(sys.argv[1:])"


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when the process that started it ends (prctl
    PR_SET_PDEATHSIG), and exit now when that process ($PEFT_PARENT_PID) has ended already.
    Elsewhere than on Linux nothing is set: jobs are Linux-only (core.jobs.processes)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if str(os.getppid()) != os.environ.get(PARENT_PID_ENV):
        raise SystemExit("the process that started this one has already ended")


def run_launcher(arguments: list[str]) -> None:
    """The launcher process's body: `accelerate launch ARGUMENTS`, ending with the job, and its
    ranks ending with it."""
    die_with_parent()
    os.environ[PARENT_PID_ENV] = str(os.getpid())  # the ranks' parent
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException

    try:
        launch_command(launch_command_parser().parse_args(arguments))
    except SignalException as exc:  # the job's stop, relayed: the ranks were asked to stop and waited for
        raise SystemExit(
            f"accelerate launch: {exc.sigval.name} passed on to the training processes"
        ) from None


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def max_over_processes(values: list[float]) -> list[float]:
    """Each value's maximum over the processes of a distributed run (the values as they are in
    a run of one process). Every process must call it at the same point."""
    if not _distributed():
        return list(values)
    import torch
    import torch.distributed as dist
    from accelerate import PartialState

    tensor = torch.tensor(values, dtype=torch.float64, device=PartialState().device)  # NCCL: on the GPU
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def gathered(value: T) -> list[T]:
    """`value` from every process of a distributed run, in rank order ([value] in a run of one
    process). Every process must call it at the same point."""
    if not _distributed():
        return [value]
    import torch.distributed as dist

    values: list[T | None] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values  # type: ignore[return-value]


def local_rank() -> int:
    """This process's index among the ranks on this machine (its GPU), 0 outside a distributed run."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _free_port() -> int:
    """A TCP port free on the loopback interface now, for the ranks' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(
    run_path: Path,
    plan: TrainingPlan,
    checkpoint: Path | None,
    resume: bool,
    runtime_before_s: float,
    outcome: Path,
    port: int,
) -> list[str]:
    """The launcher's command line: accelerate launch running core.train.rank in each process, with
    the distributed type, process count, precision and port given (a user's accelerate config
    file cannot turn it into DeepSpeed or FSDP). `--multi_gpu` selects torch's launcher on the
    CPU too: accelerate's `--cpu` starts one process whatever `--num_processes` says."""
    rank_arguments = [str(run_path), "--runtime-before", repr(runtime_before_s), "--outcome", str(outcome)]
    if checkpoint is not None:
        rank_arguments += ["--checkpoint", str(checkpoint)]
    if resume:
        rank_arguments.append("--resume")
    return [
        sys.executable,
        "-c",
        LAUNCHER_CODE,
        "--multi_gpu",
        "--num_processes",
        str(plan.processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",  # the trainer's own fp16/bf16 settings decide
        "--dynamo_backend",
        "no",
        "-m",
        "core.train.rank",
        *rank_arguments,
    ]


def launch_environment(plan: TrainingPlan) -> dict[str, str]:
    """The launcher's environment: the job's own (already the minimal one a job gets), the job's
    pid for die_with_parent, the stop grace as the launcher's wait for its ranks, and the CPU
    switch where there is no GPU."""
    environment = {
        **os.environ,
        PARENT_PID_ENV: str(os.getpid()),
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(math.ceil(stop_grace_s())),
    }
    if plan.device == "cpu":
        environment["ACCELERATE_USE_CPU"] = "true"
    return environment


def _wait_relaying_stop(process: subprocess.Popen[bytes], job: JobControl) -> None:
    """Wait for the launcher to end; relay the job's stop request to it as one SIGTERM (a
    second would cut short its wait for the ranks). Should the job itself be interrupted
    (a second Ctrl-C), the launcher is killed, and its ranks with it."""
    relayed = False
    try:
        while process.poll() is None:
            if job.stop_requested and not relayed:
                log.info("stop requested (%s): asking every training process to stop", job.stop_signal)
                process.send_signal(signal.SIGTERM)
                relayed = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(WAIT_POLL_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def train_processes(
    run_path: Path,
    config: RunConfig,
    plan: TrainingPlan,
    checkpoint: Path | None,
    resume: bool,
    runtime_before_s: float,
    job: JobControl,
) -> None:
    """Train the run with plan.processes processes under accelerate launch (see the module's
    docstring); return once they completed it. Their output goes to train.log.

    Raises JobStopped once they stopped on the job's stop request (with a checkpoint when
    training had begun), and TrainingError when they ended otherwise (a rank failed).
    """
    from core.train.training import TrainingError

    job.stage(
        f"training: {config.max_steps} steps on {plan.processes} processes "
        f"({'GPUs' if plan.device == 'cuda' else 'CPU, gloo'}) under accelerate launch"
    )
    with tempfile.TemporaryDirectory(prefix="peft-ddp-") as private:
        outcome = Path(private) / OUTCOME_FILE
        command = launch_command(run_path, plan, checkpoint, resume, runtime_before_s, outcome, _free_port())
        descriptor = open_regular(run_path / TRAIN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(descriptor, "ab") as output:
            process = subprocess.Popen(
                command,
                cwd=PROJECT_DIR,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a stop sent to the job's process group is relayed once, by the job
                env=launch_environment(plan),
            )
        _wait_relaying_stop(process, job)
        ended = outcome.read_text() if outcome.is_file() else None
    if ended == COMPLETED:
        return
    if ended == STOPPED or job.stop_requested:
        raise JobStopped(f"stopped by {job.stop_signal or 'a stop request'}")
    raise TrainingError(
        f"a training process failed (accelerate launch exited with code {process.returncode}): "
        f"its error is in {TRAIN_LOG}"
    )
