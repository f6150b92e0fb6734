"""A rough estimate of a run's peak GPU memory, from the model's size and the lab's measurements.

Only the Llama 3.2 models the lab trained can be estimated: their shapes are known here and
the lab measured them on a T4 (Unsloth, 4-bit, batch 2 x 1024 tokens): 1B r16 peaked at
2.56 GB, 1B r64 at 2.96 GB, 3B r64 at 4.43 GB. The estimate scales the training share
(activations, LoRA weights, optimizer state) by tokens per step and rank. Every figure is in
GiB, written GB as the lab wrote it, like core.train.memory's.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.train.config import RunConfig
from core.train.memory import GB

BYTES_16BIT = 2  # bytes per weight of a 16-bit model


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know of a model."""

    parameters: float
    weights_4bit_gb: float  # measured: reserved memory after loading in 4-bit with Unsloth
    training_gb_r16: float  # measured: peak minus load at r=16, batch 2 x 1024 tokens
    training_gb_per_rank: float
    t4_step_s: float  # measured: seconds per step on a T4, batch 2 x 4 x 1024 tokens (the lab's runtimes)


LAB_PER_RANK_GB = (1.75 - 1.36) / (64 - 16)  # 1B: r16 -> r64 added 0.39 GB
KNOWN_SHAPES = {
    # T1 2594 s and T2 2650 s for 600 steps; T4 (3B) 3515 s for 400 steps
    "llama-3.2-1b": ModelShape(1.24e9, 1.20, 1.36, LAB_PER_RANK_GB, (2594.04 + 2649.69) / 2 / 600),
    "llama-3.2-3b": ModelShape(3.21e9, 3.07, 1.36 - 48 * LAB_PER_RANK_GB, LAB_PER_RANK_GB, 3515.17 / 400),
}
LAB_TOKENS_PER_STEP = 2 * 1024
LAB_TOKENS_PER_OPTIMIZER_STEP = 2 * 4 * 1024


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak GPU memory and its parts, in GB."""

    weights_gb: float
    training_gb: float

    @property
    def peak_gb(self) -> float:
        """Weights plus training."""
        return self.weights_gb + self.training_gb


def model_shape(base_model: str) -> ModelShape | None:
    """The known shape of `base_model`, or None when it is not one the lab measured."""
    name = base_model.lower().rsplit("/", 1)[-1]
    return next((shape for key, shape in KNOWN_SHAPES.items() if name.startswith(key)), None)


def estimate_memory(config: RunConfig) -> MemoryEstimate | None:
    """Peak GPU memory for `config`, or None when the model is not one the estimate knows."""
    shape = model_shape(config.base_model)
    if shape is None:
        return None
    if config.load_in_4bit:
        weights = shape.weights_4bit_gb
    else:  # 16-bit weights, plus what the measured 4-bit load holds beyond its 4-bit weights
        weights = shape.parameters * BYTES_16BIT / GB + 0.3
    tokens = config.batch_size * config.max_seq_length / LAB_TOKENS_PER_STEP
    training = (shape.training_gb_r16 + shape.training_gb_per_rank * (config.lora_r - 16)) * tokens
    return MemoryEstimate(round(weights, 2), round(max(training, 0.1), 2))


def estimate_t4_step_s(config: RunConfig) -> float | None:
    """Seconds per optimizer step on a T4 for `config`: the lab's runtimes scaled by the tokens a
    step may hold (batch x accumulation x max length), a rough figure; None for a model the lab
    did not train."""
    shape = model_shape(config.base_model)
    if shape is None:
        return None
    tokens = config.batch_size * config.gradient_accumulation_steps * config.max_seq_length
    return shape.t4_step_s * tokens / LAB_TOKENS_PER_OPTIMIZER_STEP
