"""Presets: the lab's experiments as ready configs, plus a CPU smoke run of the tiny model.

A preset is a set of settings over the defaults of RunConfig (the lab notebook's); the lab's
write-up is the source of every number here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.config import default_config
from core.tiny import TINY_MODEL_ID

LAB_1B = "unsloth/Llama-3.2-1B-Instruct-bnb-4bit"
LAB_3B = "unsloth/Llama-3.2-3B-Instruct-bnb-4bit"
LAB_DATASET = "mlabonne/FineTome-100k"
SAMPLE_DATASET = "data/sample_sharegpt.jsonl"


@dataclass(frozen=True)
class Preset:
    """A named starting point for a run."""

    name: str
    title: str
    description: str
    settings: dict[str, Any]

    def config(self) -> dict[str, Any]:
        """The full config document: defaults with this preset's settings."""
        return {**default_config(), **self.settings}


def lab_settings(split: str, max_steps: int, rank: int = 16, base_model: str = LAB_1B, **extra: Any) -> dict[str, Any]:
    """A lab experiment's settings: FineTome-100k, a 4-bit Llama 3.2, LoRA alpha equal to r."""
    return {"base_model": base_model, "dataset": LAB_DATASET, "split": split, "max_steps": max_steps,
            "lora_r": rank, "lora_alpha": rank, **extra}


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "cpu_smoke",
            "CPU smoke (tiny model)",
            "Trains the tiny local Llama on the bundled sample in under a minute on a CPU: "
            "checks the whole pipeline without a GPU or a download.",
            {
                "base_model": TINY_MODEL_ID,
                "dataset": SAMPLE_DATASET,
                "split": "train",
                "max_seq_length": 256,
                "load_in_4bit": False,
                "backend": "hf",
                "max_steps": 30,
                "learning_rate": 1e-2,
                "save_steps": 10,
            },
        ),
        Preset(
            "pipeline_test",
            "Experiment 1: pipeline test",
            "64 samples of FineTome-100k, one step: data loading, formatting, LoRA and saving work.",
            lab_settings("train[:64]", 1, warmup_steps=0),
        ),
        Preset(
            "smoke",
            "Experiment 2: smoke test",
            "10k samples, 50 steps, a checkpoint every 10 steps: the full pipeline on a realistic slice.",
            lab_settings("train[:10000]", 50, save_steps=10),
        ),
        Preset(
            "t1_baseline",
            "T1: fine-tuned baseline (1B, r=16, 10k, 600 steps)",
            "The lab's baseline_1B_r16_10k_600steps.",
            lab_settings("train[:10000]", 600),
        ),
        Preset(
            "t2_model_centric",
            "T2: model-centric (1B, r=64, 10k, 600 steps)",
            "The lab's model_centric_1B_r64_10k_600steps: a higher-rank adapter.",
            lab_settings("train[:10000]", 600, rank=64),
        ),
        Preset(
            "t3_data_centric",
            "T3: data-centric (1B, r=64, 30k, 600 steps)",
            "The lab's data_centric_1B_r64_30k_600steps: three times the data.",
            lab_settings("train[:30000]", 600, rank=64),
        ),
        Preset(
            "t4_3b",
            "T4: larger model (3B, r=64, 30k, 400 steps)",
            "The lab's model2_3B_r64_30k_400steps: the 3B base model.",
            lab_settings("train[:30000]", 400, rank=64, base_model=LAB_3B),
        ),
    )
}


class PresetError(KeyError):
    """No preset of that name."""

    def __str__(self) -> str:
        return f"no preset named {self.args[0]!r}; presets: {', '.join(PRESETS)}"


def get_preset(name: str) -> Preset:
    """The preset called `name`; PresetError if there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(name) from None


def format_setting(value: Any) -> str:
    """A config value as `--set` takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def overrides_from(config: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """The `key=value` assignments that turn `base` into `config`."""
    return [f"{key}={format_setting(value)}" for key, value in config.items() if base.get(key) != value]
