"""The training job's work: run one run folder's config to the end, writing the run folder contract.

`train_run` is what `python -m core train` runs inside the job's lifecycle (core.jobs), which
records the job's state in status.json; training adds its progress there (step, max_steps,
training_s, resumes) and writes events.jsonl, checkpoints, adapter/ and metrics.json. A
completed run has its adapter and metrics; on a stop request (SIGTERM or SIGINT) the current
step ends with a checkpoint and JobStopped ends the job `stopped`. Heavy libraries are
imported only once training starts. With num_processes > 1 the job trains through
core.train.distributed (accelerate launch), each process running `train_process`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from core.jobs.processes import job_alive
from core.jobs.protocol import JobControl, JobStopped
from core.machine.devices import DeviceFacts
from core.machine.installed import package_version
from core.store.files import (
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from core.store.runs import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    EVENTS_FILE,
    METRICS_FILE,
    Run,
    checkpoint_step,
    latest_checkpoint,
    read_run_folder,
    remove_incomplete_checkpoints,
    update_status,
)
from core.train.config import ConfigError, RunConfig, parse_config
from core.train.memory import MemoryFigures, MemoryMeter
from core.train.plan import TrainingPlan, build_sft_config, keep_trainable_float32, sft_arguments

log = logging.getLogger(__name__)
VERSION_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "unsloth",
)


class TrainingError(RuntimeError):
    """The run cannot be trained as asked (wrong state, imported, broken); nothing was changed."""


def check_trainable(run_path: Path, *, resume: bool) -> RunConfig:
    """The run's config if it may be trained (or resumed) now; TrainingError saying why not."""
    return trainable_config(read_run_folder(run_path), resume=resume)


def trainable_config(run: Run, *, resume: bool) -> RunConfig:
    """`run`'s config if it may be trained (or resumed) now; TrainingError saying why not."""
    if run.broken:
        raise TrainingError(f"run {run.name} is broken: {'; '.join(run.problems)}")
    if run.imported:
        raise TrainingError(f"run {run.name} was imported with metrics only; it cannot be trained")
    state = run.state
    if state == "running" and job_alive(run.status, run.path, "train"):
        raise TrainingError(f"run {run.name} is already training (pid {run.status.get('pid')})")
    if state == "completed":
        raise TrainingError(f"run {run.name} is already completed; train a new run instead")
    if not resume and state != "queued":
        raise TrainingError(f"run {run.name} is {state}; continue it with --resume")
    try:
        return parse_config(run.config, check_files=False)
    except ConfigError as exc:
        raise TrainingError(f"run {run.name} has an invalid config.json: {exc}") from None


def _rewind_events(run_path: Path, checkpoint: Path | None) -> None:
    """Drop the events logged after the checkpoint's step (they are trained again)."""
    events, _ = read_jsonl(run_path / EVENTS_FILE)
    step = checkpoint_step(checkpoint) if checkpoint else 0
    write_jsonl_atomic(
        run_path / EVENTS_FILE, [e for e in events if isinstance(e.get("step"), int) and e["step"] <= step]
    )


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
    from core.store.files import replace_dir, staging_dir

    with staging_dir(run_path / ADAPTER_DIR) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        replace_dir(staging, run_path / ADAPTER_DIR)


def build_trainer(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    config: RunConfig,
    plan: TrainingPlan,
    output_dir: Path,
    callbacks: list[Any],
    validation_rows: list[dict[str, Any]] | None = None,
) -> Any:
    """trl's SFTTrainer for the tokenized `rows` (and `validation_rows`, evaluated as the plan
    says, with early stopping when configured), its trainable parameters in a dtype the plan's
    precision trains (see keep_trainable_float32) and without trl's per-step printing."""
    import datasets
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    evaluating = bool(validation_rows)
    arguments = sft_arguments(
        config, plan, output_dir, progress_bar=sys.stderr.isatty(), evaluating=evaluating
    )
    if evaluating and config.early_stopping_patience:
        callbacks = [
            *callbacks,
            EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience),
        ]
    trainer = SFTTrainer(
        model=model,
        args=build_sft_config(arguments),
        train_dataset=datasets.Dataset.from_list(rows),
        eval_dataset=datasets.Dataset.from_list(validation_rows) if evaluating else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # the run's recorder logs one line per step instead
    cast = keep_trainable_float32(trainer.model, plan.precision)
    if cast:
        log.info("fp16 training: %d trainable tensors cast back to float32", cast)
    return trainer


def run_conversations(
    run_path: Path, config: RunConfig
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]], Any]:
    """The run's training and validation conversations and its data report: the rows of its recipe
    (the copy in its folder, checked against the hash its config pins) or of its dataset and split."""
    from core.data.recipes import RECIPE_FILE, RecipeError, read_recipe, recipe_conversations
    from core.train.config import RECIPE_PATTERN
    from core.train.data import DataError, load_conversations

    if not config.recipe:
        conversations, report = load_conversations(config.dataset, config.split)
        return conversations, [], report
    try:
        document = read_recipe(run_path / RECIPE_FILE)
    except RecipeError as exc:
        raise DataError(
            f"the run names the recipe {config.recipe}, but its copy in the run folder: {exc}"
        ) from None
    pinned = RECIPE_PATTERN.fullmatch(config.recipe)
    if pinned is None or not pinned["hash"] or not str(document["hash"]).startswith(pinned["hash"]):
        raise DataError(f"the run's recipe.json is not the recipe its config pins ({config.recipe})")
    return recipe_conversations(document)


def adapter_step(trainer: Any) -> int:
    """The step whose weights the adapter holds: the best checkpoint's where the trainer loaded it
    at the end (early stopping), else the last step's."""
    best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
    return (checkpoint_step(Path(best)) if best else None) or trainer.state.global_step


def evaluation_metrics(events: list[dict[str, Any]], validation: Any) -> dict[str, Any]:
    """The validation figures of a run's metrics: the last and the best eval loss and its step."""
    evaluated = [
        e for e in events if isinstance(e.get("eval_loss"), (int, float)) and isinstance(e.get("step"), int)
    ]
    if validation is None:
        return {}
    best = min(evaluated, key=lambda e: e["eval_loss"], default=None)
    return {
        "validation_rows": validation.rows_used,
        "eval_loss": evaluated[-1]["eval_loss"] if evaluated else None,
        "best_eval_loss": best["eval_loss"] if best else None,
        "best_eval_step": best["step"] if best else None,
        "evaluations": len(evaluated),
    }


def _versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    found.update({name: version for name in VERSION_PACKAGES if (version := package_version(name))})
    return found


def plan_here(config: RunConfig) -> tuple[DeviceFacts, TrainingPlan]:
    """What this process trains on and how (detect_device comes first: it decides the backend
    and imports unsloth before anything else); PlanError when the config cannot run here."""
    from core.machine.devices import detect_device
    from core.train.plan import plan_training

    facts = detect_device(config.backend)
    return facts, plan_training(config, facts)


def _process_memory(
    meter: MemoryMeter, seen_gb: list[float]
) -> tuple[MemoryFigures, list[float], float | None]:
    """The memory figures of the process with the highest peak, every process's peak, and the
    highest peak allocated (CUDA); one process's own in a run of one process."""
    from core.train.distributed import gathered

    every = gathered((meter.figures(seen_gb), meter.peak_allocated_gb()))
    figures = max((figures for figures, _ in every), key=lambda figures: figures.peak_gb)
    allocated = [value for _, value in every if value is not None]
    return figures, [f.peak_gb for f, _ in every], max(allocated) if allocated else None


def train_process(
    run_path: Path,
    config: RunConfig,
    facts: DeviceFacts,
    plan: TrainingPlan,
    checkpoint: Path | None,
    resume: bool,
    runtime_before: float,
    job: JobControl,
) -> None:
    """Train the run in this process: the whole of it, or one rank's share of a distributed run
    (core.train.rank), where rank 0 alone writes the run folder. Raises JobStopped after the
    checkpoint of a stop request."""
    from core.train.data import DataReport, tokenize_conversations

    # Where this attempt starts; read now: the trainer may rotate that checkpoint away later.
    first_step = (checkpoint_step(checkpoint) or 0) if checkpoint else 0
    job.stage(
        f"loading data: {config.dataset} [{config.split}]"
        + (f", recipe {config.recipe}" if config.recipe else "")
    )
    conversations, validation, report = run_conversations(run_path, config)
    job.stage(f"loading model: {config.base_model} ({plan.backend} backend)")
    from core.train.backends import load_model

    model, tokenizer = load_model(config, plan)
    job.check_stop()
    rows = tokenize_conversations(tokenizer, conversations, config, report)
    log.info("data: %s", report.summary())
    validation_report = DataReport(source="validation", rows_read=len(validation), rows_used=len(validation))
    validation_rows = (
        tokenize_conversations(tokenizer, validation, config, validation_report) if validation else None
    )
    if validation_rows:
        log.info("validation: %s", validation_report.summary())

    from core.train.recorder import RunRecorder

    meter = MemoryMeter(plan.device)
    recorder = RunRecorder(run_path, meter, job, runtime_before)
    trainer = build_trainer(
        model, tokenizer, rows, config, plan, run_path / CHECKPOINTS_DIR, [recorder], validation_rows
    )
    main = trainer.is_world_process_zero()
    meter.start_training()
    job.stage(
        f"training: {config.max_steps} steps, memory at start {meter.start_gb:.2f} GB ({meter.measure})"
    )
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if recorder.stopping and trainer.state.global_step < config.max_steps:
        if main:
            update_status(run_path, step=trainer.state.global_step, training_s=round(recorder.elapsed_s(), 3))
        log.info("stopped at step %d; resume with --resume", trainer.state.global_step)
        raise JobStopped(f"stopped by {job.stop_signal or 'a stop request to another process'}")

    events, _ = read_jsonl(run_path / EVENTS_FILE)
    memory, peaks, allocated = _process_memory(
        meter,
        [
            e["memory_gb"]
            for e in events
            if isinstance(e.get("memory_gb"), (int, float))
            and isinstance(e.get("step"), int)
            and e["step"] > first_step
        ],
    )
    if not main:
        return
    log.info("saving the adapter")
    _save_adapter(model, tokenizer, run_path)
    runtime = recorder.elapsed_s()
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    metrics = {
        "train_loss": mean_loss(events),
        "trainer_train_loss": None if resume else output.training_loss,  # the trainer's covers one attempt
        "final_loss": next((e["loss"] for e in reversed(events) if "loss" in e), None),
        "train_runtime_s": round(runtime, 3),
        "steps": trainer.state.global_step,
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if runtime > 0 else None,
        **memory.to_metrics(),
        "peak_allocated_gb": None if allocated is None else round(allocated, 3),
        "memory_measure": meter.measure,
        "processes": plan.processes,
        "process_peak_memory_gb": [round(peak, 3) for peak in peaks],
        "device": facts.gpu_name or "cpu",
        "device_memory_gb": facts.gpu_memory_gb,
        "plan": plan.to_dict(),
        "data": report.to_dict(),
        **evaluation_metrics(events, validation_report if validation_rows else None),
        "stopped_early": trainer.state.global_step < config.max_steps,
        "adapter_step": adapter_step(trainer),
        "evaluation_s": round(recorder.evaluation_s, 3),
        "resumed": resume,
        "versions": _versions(),
    }
    write_json_atomic(run_path / METRICS_FILE, metrics)
    if metrics["stopped_early"]:
        log.info(
            "stopped early at step %d: no lower eval loss in %s evaluations",
            metrics["steps"],
            config.early_stopping_patience,
        )
    if metrics["adapter_step"] != metrics["steps"]:
        log.info(
            "the adapter is the best checkpoint's: step %s, eval loss %.4f",
            metrics["adapter_step"],
            metrics.get("best_eval_loss") or float("nan"),
        )
    log.info(
        "completed: loss %.4f (last %.4f), %.1f s, %d tokens, peak %.2f GB, LoRA %.2f GB "
        "(since training started: peak %.2f GB, training %.2f GB; %s)",
        metrics["train_loss"] or float("nan"),
        metrics["final_loss"] or float("nan"),
        runtime,
        tokens,
        memory.peak_gb,
        memory.lora_gb,
        memory.training_peak_gb,
        memory.training_gb,
        meter.measure,
    )


def train_run(run_path: Path, job: JobControl, *, resume: bool = False) -> None:
    """Train (or resume) the run at `run_path` as the work of its training job (the job's
    lifecycle records its state); return when the run is completed.

    Raises JobStopped after saving a checkpoint when `job` was asked to stop, and any error
    that ends the run `failed`.
    """
    run = read_run_folder(run_path)
    try:
        config = parse_config(run.config, check_files=False)
    except ConfigError as exc:
        raise TrainingError(f"run {run.name} has an invalid config.json: {exc}") from None
    previous = run.status
    removed = remove_incomplete_checkpoints(run_path) if resume else []
    checkpoint = latest_checkpoint(run_path) if resume else None
    if removed:
        log.info("removed checkpoints a crash left incomplete: %s", ", ".join(removed))
    update_status(
        run_path,
        max_steps=config.max_steps,
        step=checkpoint_step(checkpoint) if checkpoint else 0 if resume else previous.get("step", 0),
        resumes=int(previous.get("resumes") or 0) + int(resume),
    )
    # Training time already spent counts, work lost to a crash included: it is what the run cost.
    spent = float(previous.get("training_s") or 0.0) if resume else 0.0
    facts, plan = plan_here(config)
    log.info(
        "plan: backend %s on %s, optimizer %s, precision %s%s%s",
        plan.backend,
        facts.gpu_name or plan.device,
        plan.optimizer,
        plan.precision,
        f", {plan.processes} processes" if plan.processes > 1 else "",
        "".join(f"; warning: {w}" for w in plan.warnings),
    )
    if resume:
        _rewind_events(run_path, checkpoint)
        log.info(
            "resuming from %s" if checkpoint else "no checkpoint yet: starting over from step 0%s",
            checkpoint or "",
        )
    if plan.processes > 1:
        from core.train.distributed import train_processes

        train_processes(run_path, config, plan, checkpoint, resume, spent, job)
    else:
        train_process(run_path, config, facts, plan, checkpoint, resume, spent, job)
