"""Presets: the lab's experiments as ready configs, plus a CPU smoke run of the tiny model.

A preset is a set of settings over the defaults of RunConfig (the lab notebook's); the lab's
write-up is the source of every number here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.train.config import default_config, format_setting
from core.train.tiny import TINY_MODEL_ID

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


def lab_settings(
    split: str, max_steps: int, rank: int = 16, base_model: str = LAB_1B, **extra: Any
) -> dict[str, Any]:
    """A lab experiment's settings: FineTome-100k, a 4-bit Llama 3.2, LoRA alpha equal to r."""
    return {
        "base_model": base_model,
        "dataset": LAB_DATASET,
        "split": split,
        "max_steps": max_steps,
        "lora_r": rank,
        "lora_alpha": rank,
        **extra,
    }


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
                "packing": True,  # the sample's short conversations, several to a sequence
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


DATA_ROWS = "dataset_rows"
"""A sweep axis that is no config field: the first N rows of the split (core.sweeps.definition)."""


@dataclass(frozen=True)
class SweepPreset:
    """A named sweep: a preset as its base and the values of each axis (a grid)."""

    name: str
    title: str
    description: str
    preset: str
    grid: dict[str, tuple[Any, ...]]


SWEEP_PRESETS: dict[str, SweepPreset] = {
    sweep.name: sweep
    for sweep in (
        SweepPreset(
            "task2",
            "Task 2: model-centric vs data-centric (8 runs)",
            "The lab's Task 2 as one grid from the T1 baseline (600 steps): LoRA r 16 or 64 (model-centric), "
            "10k or 30k rows of FineTome-100k (data-centric), the 1B or the 3B model. The lab ran four of "
            "these eight by hand (T1-T4; T4 with 400 steps).",
            "t1_baseline",
            {"lora_r": (16, 64), DATA_ROWS: (10000, 30000), "base_model": (LAB_1B, LAB_3B)},
        ),
    )
}


class PresetError(KeyError):
    """No preset of that name."""

    def __str__(self) -> str:
        return f"no preset named {self.args[0]!r}; presets: {', '.join(PRESETS)}"


class BaseConfigError(ValueError):
    """A new run's starting config that cannot be had: an unknown preset, an unreadable file."""


def base_config(preset: str | None, config_file: str | None) -> dict[str, Any]:
    """The config document a new run or sweep starts from: the preset's, else the JSON file's
    (before --set changes it); BaseConfigError saying why it cannot be had."""
    if preset:
        try:
            return get_preset(preset).config()
        except PresetError as exc:
            raise BaseConfigError(str(exc)) from None
    path = Path(str(config_file))
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BaseConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise BaseConfigError(f"{path} must hold a JSON object of config fields")
    return document


def get_preset(name: str) -> Preset:
    """The preset called `name`; PresetError if there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(name) from None


def overrides_from(config: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """The `key=value` assignments that turn `base` into `config`."""
    return [f"{key}={format_setting(value)}" for key, value in config.items() if base.get(key) != value]


NAME_PREFIXES = {
    "cpu_smoke": "smoke_cpu",
    "pipeline_test": "pipeline",
    "smoke": "smoke",
    "t1_baseline": "baseline",
    "t2_model_centric": "model_centric",
    "t3_data_centric": "data_centric",
    "t4_3b": "model2",
}
MODEL_SIZE = re.compile(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
SLICE_STOP = re.compile(r"\[[^:\]]*:(\d+)(%?)\]")


def size_label(base_model: str) -> str:
    """The model's size as run names say it (`1B`, `3B`, `tiny`), else a short form of its name."""
    if base_model == TINY_MODEL_ID:
        return "tiny"
    found = MODEL_SIZE.search(base_model.rsplit("/", 1)[-1])
    return (
        f"{found.group(1)}B" if found else re.sub(r"[^A-Za-z0-9]+", "-", base_model.rsplit("/", 1)[-1])[:16]
    )


def _data_label(split: str) -> str:
    found = SLICE_STOP.search(split)
    if not found:
        return "all"
    number, percent = int(found.group(1)), found.group(2)
    if percent:
        return f"{number}pct"
    return f"{number // 1000}k" if number >= 1000 and number % 1000 == 0 else str(number)


def propose_run_name(config: dict[str, Any], preset: str | None, taken: set[str] = frozenset()) -> str:
    """A run name that says what the run is, the lab's way (`baseline_1B_r16_10k_600steps`),
    with `_2`, `_3`, ... added when it is in `taken`."""
    prefix = NAME_PREFIXES.get(preset or "", "run")
    name = (
        f"{prefix}_{size_label(str(config.get('base_model', '')))}_r{config.get('lora_r')}_"
        f"{_data_label(str(config.get('split', '')))}_{config.get('max_steps')}steps"
    )
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name)[:60]
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    return candidate


def train_command(
    name: str,
    config: dict[str, Any] | None = None,
    *,
    preset: str | None = None,
    config_file: str | None = None,
    base: dict[str, Any] | None = None,
    runs_dir: str | None = None,
    resume: bool = False,
) -> list[str]:
    """The `python -m core train` command line for this run: with a config, the preset (or
    config file) plus a `--set` for every field that differs from it; without, the command
    that trains (or with `resume` continues) the existing run."""
    command = ["python", "-m", "core", *(["--runs-dir", runs_dir] if runs_dir else []), "train", name]
    if config is None:
        return command + (["--resume"] if resume else [])
    if preset:
        command += ["--preset", preset]
        base = get_preset(preset).config()
    elif config_file:
        command += ["--config", config_file]
    for assignment in overrides_from(config, {**default_config(), **(base or {})}):
        command += ["--set", assignment]
    return command


def closest_preset(config: dict[str, Any]) -> str:
    """The preset a config differs from in the fewest fields (the base of its command line)."""
    return min(PRESETS, key=lambda name: len(overrides_from(config, PRESETS[name].config())))
