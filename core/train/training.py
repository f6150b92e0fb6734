"""The training job: run one run folder's config to the end, writing the run folder contract.

`train_run` is what `python -m core train` calls in the job process. It never leaves a run
in a state that lies: completed runs have their adapter and metrics, a stop (SIGTERM or
SIGINT) saves a checkpoint and ends `stopped`, and any error ends `failed` with its text and
the last lines of train.log. Heavy libraries are imported only once training starts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core import describe
from core.jobs.processes import job_alive, job_identity
from core.machine.installed import package_version
from core.store.files import (
    read_jsonl,
    tail_lines,
    write_json_atomic,
    write_jsonl_atomic,
)
from core.store.runs import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    EVENTS_FILE,
    METRICS_FILE,
    TRAIN_LOG,
    Run,
    checkpoint_step,
    latest_checkpoint,
    now_iso,
    read_run_folder,
    remove_incomplete_checkpoints,
    update_status,
)
from core.train.config import ConfigError, RunConfig, parse_config

JOB_LOG = logging.getLogger("core")  # the job's stage lines come from core.training, core.tiny, ...
log = logging.getLogger(__name__)
VERSION_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "unsloth")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOCK_FILE = ".lock"


class TrainingError(RuntimeError):
    """The run cannot be trained as asked (wrong state, imported, broken); nothing was changed."""


class StopRequested(Exception):
    """A stop signal arrived before the training loop began."""


@dataclass
class StopRequest:
    """Set by a signal handler; the recorder turns it into a checkpoint and a clean stop."""

    signal_name: str | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop has been asked for."""
        return self.signal_name is not None


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and first line, with a hint for out-of-memory."""
    line = describe(exc)
    if "out of memory" in line.lower():
        line += " (try a smaller batch_size or max_seq_length, or load_in_4bit=true)"
    return line[:500]


def check_trainable(run_path: Path, *, resume: bool) -> RunConfig:
    """The run's config if it may be trained (or resumed) now; TrainingError saying why not."""
    return trainable_config(read_run_folder(run_path), resume=resume)


def trainable_config(run: Run, *, resume: bool) -> RunConfig:
    """`run`'s config if it may be trained (or resumed) now; TrainingError saying why not."""
    if run.broken:
        raise TrainingError(f"run {run.name} is broken: {'; '.join(run.problems)}")
    if run.imported:
        raise TrainingError(f"run {run.name} was imported from a CSV and holds metrics only; it cannot be trained")
    state = run.state
    if state == "running" and job_alive(run.status):
        raise TrainingError(f"run {run.name} is already training (pid {run.status.get('pid')})")
    if state == "completed":
        raise TrainingError(f"run {run.name} is already completed; train a new run instead")
    if not resume and state != "queued":
        raise TrainingError(f"run {run.name} is {state}; continue it with --resume")
    try:
        return parse_config(run.config, check_files=False)
    except ConfigError as exc:
        raise TrainingError(f"run {run.name} has an invalid config.json: {exc}") from None


def _same_file(stream: Any, path: Path) -> bool:
    try:
        mine, theirs = os.fstat(stream.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _start_logging(run_path: Path) -> list[logging.Handler]:
    """Log the `core` loggers' stage lines to stderr and train.log (once if stderr is train.log)."""
    formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if not _same_file(sys.stderr, run_path / TRAIN_LOG):
        handlers.append(logging.FileHandler(run_path / TRAIN_LOG, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        JOB_LOG.addHandler(handler)
    JOB_LOG.setLevel(logging.INFO)
    JOB_LOG.propagate = False
    return handlers


def _install_stop_handlers(stop: StopRequest) -> Callable[[], None]:
    """Turn the first SIGTERM/SIGINT into a stop request; a second one acts as usual."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(signum: int, frame: Any) -> None:
        # Only set the flag: logging from a signal handler can re-enter a stream mid-write.
        stop.signal_name = signal.Signals(signum).name
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)

    def restore() -> None:
        for sig, action in previous.items():
            signal.signal(sig, action)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    return restore


def _check_stop(stop: StopRequest) -> None:
    if stop.requested:
        raise StopRequested(stop.signal_name)


def _rewind_events(run_path: Path, checkpoint: Path | None) -> None:
    """Drop the events logged after the checkpoint's step (they are trained again)."""
    events, _ = read_jsonl(run_path / EVENTS_FILE)
    step = checkpoint_step(checkpoint) if checkpoint else 0
    write_jsonl_atomic(run_path / EVENTS_FILE, [e for e in events if isinstance(e.get("step"), int) and e["step"] <= step])


def mean_loss(events: list[dict[str, Any]]) -> float | None:
    """The mean loss over all steps, each logged loss weighted by the steps it covers."""
    total, steps, previous = 0.0, 0, 0
    for event in events:
        step, loss = event.get("step"), event.get("loss")
        if isinstance(step, int) and isinstance(loss, (int, float)) and step > previous:
            total += loss * (step - previous)
            steps += step - previous
            previous = step
    return total / steps if steps else None


def _save_adapter(model: Any, tokenizer: Any, run_path: Path) -> None:
    """Write the final adapter and tokenizer to adapter/ in one step."""
    staging = run_path / f".{ADAPTER_DIR}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(run_path / ADAPTER_DIR, ignore_errors=True)
    os.replace(staging, run_path / ADAPTER_DIR)


def _versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    found.update({name: version for name in VERSION_PACKAGES if (version := package_version(name))})
    return found


def _train(
    run_path: Path, config: RunConfig, checkpoint: Path | None, resume: bool, runtime_before: float, stop: StopRequest
) -> str:
    from core.train.data import load_conversations, tokenize_conversations
    from core.train.plan import detect_device, plan_training

    facts = detect_device()
    plan = plan_training(config, facts)
    log.info(
        "plan: backend %s on %s, optimizer %s, precision %s%s", plan.backend,
        facts.gpu_name or plan.device, plan.optimizer, plan.precision,
        "".join(f"; warning: {w}" for w in plan.warnings),
    )
    if resume:
        _rewind_events(run_path, checkpoint)
        log.info("resuming from %s" if checkpoint else "no checkpoint yet: starting over from step 0%s", checkpoint or "")
    log.info("loading data: %s [%s]", config.dataset, config.split)
    conversations, report = load_conversations(config.dataset, config.split)
    _check_stop(stop)
    log.info("loading model: %s (%s backend)", config.base_model, plan.backend)
    from core.train.backends import load_model

    model, tokenizer = load_model(config, plan)
    _check_stop(stop)
    rows = tokenize_conversations(tokenizer, conversations, config, report)
    log.info("data: %s", report.summary())

    import datasets
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from core.train.memory import MemoryMeter
    from core.train.plan import build_sft_config, sft_arguments
    from core.train.recorder import RunRecorder

    meter = MemoryMeter(plan.device)
    recorder = RunRecorder(run_path, meter, stop, runtime_before)
    arguments = sft_arguments(config, plan, run_path / CHECKPOINTS_DIR, progress_bar=sys.stderr.isatty())
    trainer = SFTTrainer(
        model=model,
        args=build_sft_config(arguments),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[recorder],
    )
    trainer.remove_callback(PrinterCallback)  # the recorder logs one line per step instead
    _check_stop(stop)
    meter.reset_peak()
    log.info("training: %d steps, memory at start %.2f GB (%s)", config.max_steps, meter.start_gb, meter.measure)
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if stop.requested and trainer.state.global_step < config.max_steps:
        update_status(run_path, step=trainer.state.global_step, training_s=round(recorder.elapsed_s(), 3))
        log.info("stopped at step %d; resume with --resume", trainer.state.global_step)
        return "stopped"

    log.info("saving the adapter")
    _save_adapter(model, tokenizer, run_path)
    events, _ = read_jsonl(run_path / EVENTS_FILE)
    runtime = recorder.elapsed_s()
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    peak = max([meter.peak_gb()] + [e["memory_gb"] for e in events if isinstance(e.get("memory_gb"), (int, float))])
    allocated = meter.peak_allocated_gb()
    metrics = {
        "train_loss": mean_loss(events),
        "trainer_train_loss": None if resume else output.training_loss,  # the trainer's covers one attempt
        "final_loss": events[-1]["loss"] if events else None,
        "train_runtime_s": round(runtime, 3),
        "steps": trainer.state.global_step,
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if runtime > 0 else None,
        "peak_memory_gb": round(peak, 3),
        "peak_allocated_gb": None if allocated is None else round(allocated, 3),
        "lora_memory_gb": round(meter.training_gb(), 3),
        "start_memory_gb": round(meter.start_gb, 3),
        "memory_measure": meter.measure,
        "device": facts.gpu_name or "cpu",
        "device_memory_gb": facts.gpu_memory_gb,
        "plan": plan.to_dict(),
        "data": report.to_dict(),
        "resumed": resume,
        "versions": _versions(),
    }
    write_json_atomic(run_path / METRICS_FILE, metrics)
    log.info(
        "completed: loss %.4f (last %.4f), %.1f s, %d tokens, peak %.2f GB, training %.2f GB (%s)",
        metrics["train_loss"] or float("nan"), metrics["final_loss"] or float("nan"), runtime, tokens, peak,
        metrics["lora_memory_gb"], meter.measure,
    )
    return "completed"


def _lock_run(run_path: Path) -> Any:
    """An exclusive lock on the run folder for this process's lifetime, or TrainingError."""
    try:
        handle = open(run_path / LOCK_FILE, "a")
    except FileNotFoundError:
        raise TrainingError(f"no run folder at {run_path}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise TrainingError(f"run {run_path.name} is being trained by another process") from None
    return handle


def train_run(run_path: Path, *, resume: bool = False) -> str:
    """Train (or resume) the run at `run_path`; return its final state.

    Raises TrainingError, before touching anything, when the run cannot be trained now
    (another process holds its lock, or its state does not allow it). Every other failure
    ends in state `failed` with the error and the log tail.
    """
    lock = _lock_run(run_path)
    try:
        run = read_run_folder(run_path)
        return _run_locked(run_path, trainable_config(run, resume=resume), run.status, resume)
    finally:
        lock.close()


def _run_locked(run_path: Path, config: RunConfig, previous: dict[str, Any], resume: bool) -> str:
    if not sys.stderr.isatty():  # progress bars would fill train.log with carriage returns
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    removed = remove_incomplete_checkpoints(run_path) if resume else []
    checkpoint = latest_checkpoint(run_path) if resume else None
    handlers, propagate = _start_logging(run_path), JOB_LOG.propagate
    if removed:
        log.info("removed checkpoints a crash left incomplete: %s", ", ".join(removed))
    stop = StopRequest()
    restore_signals = _install_stop_handlers(stop)
    update_status(
        run_path,
        state="running",
        **job_identity(),
        started_at=previous.get("started_at") or now_iso(),
        ended_at=None,
        error=None,
        log_tail=None,
        max_steps=config.max_steps,
        step=checkpoint_step(checkpoint) if checkpoint else 0 if resume else previous.get("step", 0),
        resumes=int(previous.get("resumes") or 0) + int(resume),
    )
    try:
        # Training time already spent counts, work lost to a crash included: it is what the run cost.
        spent = float(previous.get("training_s") or 0.0) if resume else 0.0
        state = _train(run_path, config, checkpoint, resume, spent, stop)
        update_status(run_path, state=state, ended_at=now_iso())
    except (StopRequested, KeyboardInterrupt) as exc:
        if isinstance(exc, StopRequested):
            log.info("%s received: stopped before training began", stop.signal_name)
        else:
            log.info("interrupted again: stopped without a new checkpoint")
        state = "stopped"
        update_status(run_path, state=state, ended_at=now_iso())
    except Exception as exc:
        log.exception("training failed")
        state = "failed"
        update_status(run_path, state=state, ended_at=now_iso(), error=one_line(exc), log_tail=tail_lines(run_path / TRAIN_LOG))
    finally:
        restore_signals()
        for handler in handlers:
            JOB_LOG.removeHandler(handler)
            handler.close()
        JOB_LOG.propagate = propagate
    return state
