"""How a config runs on this machine: backend, device, optimizer, precision, trainer settings.

Plain functions over plain facts, so the command line, the Train page and the tests can all
ask "can this run here, and how?" without importing torch: the facts (DeviceFacts) come from
core.machine.devices.detect_device, which imports torch (and unsloth where the run uses it),
and only `build_sft_config` and `keep_trainable_float32` import trl or torch, when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.machine.devices import GPU_HINT, DeviceFacts, PlanError
from core.machine.installed import package_version
from core.train.backends import named_template
from core.train.config import RunConfig
from core.train.tiny import TINY_MODEL_ID

EIGHT_BIT_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
UNSLOTH_DDP_VERSION = "2026.10.9"
"""The first Unsloth whose multi-GPU (DDP) support this project checked: under `accelerate launch`
FastLanguageModel.from_pretrained puts each process's model on its own GPU
(loader_utils.prepare_device_map) and its trainers turn off DDP's find_unused_parameters for a
LoRA adapter under gradient checkpointing (models/_ddp_defaults.py)."""


@dataclass(frozen=True)
class TrainingPlan:
    """The resolved way a config trains here."""

    backend: str
    device: str
    optimizer: str
    precision: str
    gradient_checkpointing: bool
    processes: int = 1
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON."""
        return {
            "backend": self.backend,
            "device": self.device,
            "optimizer": self.optimizer,
            "precision": self.precision,
            "gradient_checkpointing": self.gradient_checkpointing,
            "processes": self.processes,
            "warnings": list(self.warnings),
        }


def plan_training(config: RunConfig, facts: DeviceFacts) -> TrainingPlan:
    """The plan for `config` on a machine with `facts`; PlanError when it cannot run there."""
    if config.backend == "unsloth" and not facts.cuda:
        raise PlanError(
            f"the unsloth backend needs a CUDA GPU and there is none here; use backend=hf, or {GPU_HINT}"
        )
    if config.backend == "unsloth" and not facts.unsloth_installed:
        raise PlanError(f"the unsloth backend needs the unsloth package: {GPU_HINT}")
    if config.backend == "unsloth" and facts.unsloth_error:
        raise PlanError(f"unsloth is installed but does not import ({facts.unsloth_error}); use backend=hf")
    unsloth_usable = facts.cuda and facts.unsloth_installed and not facts.unsloth_error
    backend = (
        "unsloth" if config.backend == "unsloth" or (config.backend == "auto" and unsloth_usable) else "hf"
    )
    if backend == "hf" and named_template(config.chat_template):
        raise PlanError(
            f"chat_template {config.chat_template!r} is one of Unsloth's named templates; the hf backend takes "
            "'model' or a .jinja file"
        )
    if config.report_to != "none" and package_version(config.report_to) is None:
        raise PlanError(
            f"report_to={config.report_to} needs the {config.report_to} package, which is not installed here: "
            f"pip install {config.report_to}, or set report_to=none"
        )
    device = "cuda" if facts.cuda else "cpu"
    if device == "cpu":
        if config.load_in_4bit:
            raise PlanError(
                f"load_in_4bit needs a CUDA GPU and there is none here: set load_in_4bit=false to train on CPU, or {GPU_HINT}"
            )
        if "bnb-4bit" in config.base_model.lower():
            raise PlanError(
                f"{config.base_model} is stored in 4-bit and loads only on a CUDA GPU: train it where there is one "
                f"({GPU_HINT}), or pick a 16-bit model with load_in_4bit=false"
            )
        if config.optimizer in EIGHT_BIT_OPTIMIZERS:
            raise PlanError(
                f"the optimizer {config.optimizer} needs a CUDA GPU; use adamw_torch or auto on CPU"
            )
    optimizer = (
        config.optimizer
        if config.optimizer != "auto"
        else ("adamw_8bit" if device == "cuda" else "adamw_torch")
    )
    precision = "fp32" if device == "cpu" else ("bf16" if facts.bf16 else "fp16")
    warnings = []
    if config.backend == "auto" and facts.cuda and facts.unsloth_installed and facts.unsloth_error:
        warnings.append(f"unsloth does not import ({facts.unsloth_error}): training with hf instead")
    is_small = config.base_model == TINY_MODEL_ID or Path(config.base_model).expanduser().is_dir()
    if device == "cpu" and not is_small:
        warnings.append("no CUDA GPU here: a full-size model trains very slowly on CPU")
    warnings += _processes_problems(config.num_processes, backend, facts)
    return TrainingPlan(
        backend=backend,
        device=device,
        optimizer=optimizer,
        precision=precision,
        gradient_checkpointing=device == "cuda",
        processes=config.num_processes,
        warnings=tuple(warnings),
    )


def _processes_problems(processes: int, backend: str, facts: DeviceFacts) -> list[str]:
    """The warnings of a run with `processes` training processes; PlanError when it cannot run
    here: more processes than GPUs, or an Unsloth older than the DDP support checked."""
    if processes == 1:
        return []
    if facts.cuda and processes > facts.gpu_count:
        raise PlanError(
            f"num_processes={processes} needs {processes} GPUs, one per process, and this machine has "
            f"{facts.gpu_count}: set num_processes to at most {facts.gpu_count}"
        )
    if backend == "unsloth":
        from packaging.version import InvalidVersion, Version  # a dependency of transformers and streamlit

        version = package_version("unsloth") or "0"
        try:
            too_old = Version(version) < Version(UNSLOTH_DDP_VERSION)
        except InvalidVersion:
            too_old = True
        if too_old:
            raise PlanError(
                f"unsloth {version} trains on one GPU only here: multi-GPU (DDP) training needs "
                f"unsloth>={UNSLOTH_DDP_VERSION} (pip install -U 'unsloth>={UNSLOTH_DDP_VERSION}'), or set backend=hf"
            )
    if not facts.cuda:
        return [
            f"no CUDA GPU here: {processes} processes train on the CPU (gloo) and share its cores, "
            "which tests DDP but is slower than one process"
        ]
    return []


EVALUATIONS_PER_RUN = 10  # with a validation share and no eval_steps
TENSORBOARD_DIR = "tensorboard"  # a run's TensorBoard event files, with report_to=tensorboard
TRACKER_PROJECT = "peft-dashboard"  # the trackio project runs report to
TENSORBOARD_LOGGING_DIR = "TENSORBOARD_LOGGING_DIR"  # where transformers 5's TensorBoardCallback writes
TRACKER_SETTINGS = frozenset(
    {"TRACKIO_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_MODE", "WANDB_DIR", "MLFLOW_EXPERIMENT_NAME"}
)
"""The trackers' own settings a job is given by name: never a key or a URI that may hold one (W&B's
key stays in ~/.netrc, where `wandb login` puts it and the job reads it)."""


def evaluation_interval(config: RunConfig) -> int:
    """Steps between two evaluations of the validation loss."""
    return config.eval_steps or max(1, config.max_steps // EVALUATIONS_PER_RUN)


def sft_arguments(
    config: RunConfig, plan: TrainingPlan, output_dir: Path, *, progress_bar: bool, evaluating: bool = False
) -> dict[str, Any]:
    """Keyword arguments of trl's SFTConfig for this config and plan.

    The dataset arrives tokenized (input ids and, for responses-only loss, labels), so trl
    only packs. Gradient checkpointing stays on with Unsloth: its trainer passes the flag to
    the model's for_training, and off would undo get_peft_model's "unsloth" checkpointing.
    Under DDP every LoRA parameter gets a gradient at every step, so DDP need not look for
    unused ones (the Trainer would ask it to for a PEFT model, which reentrant gradient
    checkpointing breaks: "marked as ready twice").

    `output_dir` is the run's checkpoints/ folder: a tracker (report_to) names the run after the
    run folder, and TensorBoard writes into the run's tensorboard/ folder (logging_dir).

    With `evaluating` (a validation set), the loss on it is evaluated every evaluation_interval
    steps; with early stopping, a checkpoint is saved at each evaluation (the best one is loaded
    at the end, so it must exist) whatever save_steps says.
    """
    arguments = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": config.warmup_steps,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "lr_scheduler_type": config.lr_scheduler,
        "optim": plan.optimizer,
        "seed": config.seed,
        "data_seed": config.seed,
        "max_length": config.max_seq_length,
        "packing": config.packing,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "bf16": plan.precision == "bf16",
        "fp16": plan.precision == "fp16",
        "use_cpu": plan.device == "cpu",
        "gradient_checkpointing": plan.gradient_checkpointing,
        "include_num_input_tokens_seen": "non_padding",
        "ddp_find_unused_parameters": False,
        "report_to": config.report_to,
        "disable_tqdm": not progress_bar,
        "dataset_num_proc": None,
    }
    if config.report_to != "none":
        arguments.update(run_name=output_dir.parent.name, project=TRACKER_PROJECT)
    if config.report_to == "tensorboard":
        arguments["logging_dir"] = str(output_dir.parent / TENSORBOARD_DIR)
    if evaluating:
        every = evaluation_interval(config)
        arguments.update(
            eval_strategy="steps", eval_steps=every, per_device_eval_batch_size=config.batch_size
        )
        if config.early_stopping_patience:
            arguments.update(
                save_steps=every,
                load_best_model_at_end=True,
                metric_for_best_model="eval_loss",
                greater_is_better=False,
            )
    return arguments


def build_sft_config(arguments: dict[str, Any]) -> Any:
    """trl's SFTConfig from `sft_arguments`, under the names the installed transformers uses.

    transformers 5 has no logging_dir argument: its TensorBoardCallback, built with the trainer
    right after this, reads $TENSORBOARD_LOGGING_DIR instead, which is then set in this (the
    training job's) process."""
    import dataclasses

    from trl import SFTConfig

    arguments = dict(arguments)
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    if "logging_dir" in arguments and "logging_dir" not in names:
        os.environ[TENSORBOARD_LOGGING_DIR] = arguments.pop("logging_dir")
    if "activation_checkpointing" in names:
        arguments["activation_checkpointing"] = arguments.pop(
            "gradient_checkpointing"
        )  # renamed in transformers 5.2x
    return SFTConfig(**arguments)


def keep_trainable_float32(model: Any, precision: str) -> int:
    """When training in fp16, cast the trainable parameters back to float32; how many were cast.

    trl's SFTTrainer casts a quantized model's trainable (LoRA) parameters to bf16 when it is
    built (QLoRA's recipe). fp16 mixed precision cannot unscale bf16 gradients, so on a GPU
    without bf16 (a T4) the hf backend died at its first optimizer step; fp16 training keeps
    float32 master weights. Unsloth's trainer leaves the cast out: nothing to cast there.
    """
    if precision != "fp16":
        return 0
    import torch

    cast = 0
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
            cast += 1
    return cast
