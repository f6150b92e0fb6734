"""The training configuration of a run: typed, validated, with the lab notebook's defaults.

A RunConfig is what `config.json` holds. It is built only through `parse_config`, which
checks every field and reports every problem at once, keyed by field, so that the command
line can print them and the Train page can show each next to its field.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from core.store.paths import PROJECT_DIR
from core.train.tiny import TINY_MODEL_ID

PROJECTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BACKENDS = ("auto", "unsloth", "hf")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
OPTIMIZERS = ("auto", "adamw_torch", "adamw_8bit", "paged_adamw_8bit", "adamw_torch_fused", "adafactor", "sgd")
DATASET_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
MODEL_TEMPLATE = "model"

HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
SPLIT_PATTERN = re.compile(r"(?P<name>[A-Za-z_][\w-]*)(\[(?P<start>\d+%?)?:(?P<stop>\d+%?)?\])?")
MODULE_PATTERN = re.compile(r"[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a training run does. Defaults are the lab notebook's."""

    base_model: str = "unsloth/Llama-3.2-1B-Instruct-bnb-4bit"
    dataset: str = "mlabonne/FineTome-100k"
    split: str = "train[:10000]"
    max_seq_length: int = 1024
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = PROJECTION_MODULES
    use_rslora: bool = False
    load_in_4bit: bool = True
    batch_size: int = 2
    gradient_accumulation_steps: int = 4
    warmup_steps: int = 5
    max_steps: int = 60
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    lr_scheduler: str = "linear"
    optimizer: str = "auto"
    seed: int = 3407
    packing: bool = True
    save_steps: int = 100
    save_total_limit: int | None = 2
    logging_steps: int = 1
    train_on_responses_only: bool = True
    backend: str = "auto"
    chat_template: str = MODEL_TEMPLATE
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this config (lists instead of tuples)."""
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


FIELD_HELP: dict[str, str] = {
    "base_model": "Hub model id (owner/name), a local model folder, or 'tiny-llama' for the tiny CPU model",
    "dataset": "Hub dataset id (owner/name) or a local .jsonl/.json/.parquet/.csv file of conversations",
    "split": "split and optional slice, e.g. train, train[:10000], train[:10%]",
    "max_seq_length": "tokens per training sequence; longer conversations are truncated",
    "lora_r": "LoRA rank: the adapter's capacity",
    "lora_alpha": "LoRA scaling numerator (the update is scaled by alpha/r, or alpha/sqrt(r) with rsLoRA)",
    "lora_dropout": "dropout on the LoRA input, from 0 to below 1",
    "target_modules": "modules that get adapters, comma-separated, or all-linear",
    "use_rslora": "rank-stabilized LoRA scaling",
    "load_in_4bit": "load the base model in 4-bit (needs a CUDA GPU)",
    "batch_size": "sequences per device per step",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "warmup_steps": "steps of linear learning-rate warmup",
    "max_steps": "optimizer steps to train",
    "learning_rate": "peak learning rate",
    "weight_decay": "AdamW weight decay",
    "lr_scheduler": "learning-rate schedule: " + ", ".join(SCHEDULERS),
    "optimizer": "auto (adamw_8bit on GPU, adamw_torch on CPU) or one of " + ", ".join(OPTIMIZERS[1:]),
    "seed": "random seed for data order and adapter initialisation",
    "packing": "pack several conversations into each sequence",
    "save_steps": "save a resumable checkpoint every this many steps",
    "save_total_limit": "checkpoints kept (older ones are deleted); none keeps all",
    "logging_steps": "steps between loss records",
    "train_on_responses_only": "compute the loss on assistant answers only",
    "backend": "auto (Unsloth when a CUDA GPU and unsloth are present, else hf), unsloth or hf",
    "chat_template": "'model' (the base model's own), a .jinja file, or an Unsloth template name (unsloth backend)",
    "note": "free text shown with the run",
}


class ConfigError(ValueError):
    """A config with problems; `problems` maps each field (or 'config') to what is wrong."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems.items()))


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(RunConfig)}


def default_config() -> dict[str, Any]:
    """The defaults as a JSON document."""
    return RunConfig().to_dict()


def resolve_local_file(spec: str) -> Path | None:
    """The local file `spec` names (as given, else relative to the project), or None."""
    path = Path(spec).expanduser()
    for candidate in (path, PROJECT_DIR / path):
        if candidate.is_file():
            return candidate.resolve()
    return None


def with_resolved_paths(config: RunConfig) -> RunConfig:
    """`config` with local files named so that they are found from anywhere: files of this
    project relative to it (so run folders move between checkouts), others absolute."""

    def stable(spec: str) -> str:
        path = resolve_local_file(spec) or (Path(spec).expanduser().resolve() if is_local_model(spec) else None)
        if path is None:
            return spec
        return str(path.relative_to(PROJECT_DIR)) if path.is_relative_to(PROJECT_DIR) else str(path)

    return dataclasses.replace(
        config,
        dataset=stable(config.dataset),
        base_model=stable(config.base_model),
        chat_template=stable(config.chat_template) if config.chat_template.endswith(".jinja") else config.chat_template,
    )


def is_local_model(spec: str) -> bool:
    """Whether `spec` names a local model folder (one holding a config.json)."""
    return (Path(spec).expanduser() / "config.json").is_file()


def _whole(value: Any, low: int, high: int | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number (got {value!r})"
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        return f"must be {bound} (got {value})"
    return None


def _number(value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return f"must be a number (got {value!r})"
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        left = "above" if low_open else "from"
        right = "below" if high_open else "to"
        return f"must be {left} {low:g} {right} {high:g} (got {value:g})"
    return None


def _choice(value: Any, choices: tuple[str, ...]) -> str | None:
    if value not in choices:
        return f"must be one of {', '.join(choices)} (got {value!r})"
    return None


def _text(value: Any, *, required: bool = True, limit: int = 500) -> str | None:
    if not isinstance(value, str):
        return f"must be text (got {value!r})"
    if required and not value.strip():
        return "is required"
    if len(value) > limit:
        return f"is {len(value)} characters long (at most {limit})"
    return None


def _check_base_model(value: Any, check_files: bool) -> str | None:
    problem = _text(value)
    if problem:
        return problem
    if value == TINY_MODEL_ID or HUB_ID_PATTERN.fullmatch(value) or not check_files or is_local_model(value):
        return None
    return f"{value!r} is not a Hub model id (owner/name), a local model folder with config.json, or {TINY_MODEL_ID!r}"


def _check_dataset(value: Any, check_files: bool) -> str | None:
    problem = _text(value)
    if problem:
        return problem
    suffix = Path(value).suffix.lower()
    if suffix in DATASET_SUFFIXES:
        return None if not check_files or resolve_local_file(value) else f"no such file: {value}"
    if HUB_ID_PATTERN.fullmatch(value) and not Path(value).exists():
        return None
    return (
        f"{value!r} is neither a Hub dataset id (owner/name) nor a local file ending in "
        + ", ".join(DATASET_SUFFIXES)
    )


def _check_split(value: Any) -> str | None:
    problem = _text(value, limit=100)
    if problem:
        return problem
    match = SPLIT_PATTERN.fullmatch(value)
    if not match:
        return f"{value!r} is not a split such as train, train[:10000], train[100:200] or train[:10%]"
    for bound in (match["start"], match["stop"]):
        if bound and bound.endswith("%") and int(bound[:-1]) > 100:
            return f"{bound} is more than 100%"
    return None


def _check_modules(value: Any) -> str | None:
    if value == "all-linear":
        return None
    if not isinstance(value, (list, tuple)) or not value:
        return "must be a non-empty list of module names, or all-linear"
    bad = [m for m in value if not isinstance(m, str) or not MODULE_PATTERN.fullmatch(m)]
    if bad:
        return f"not module names: {', '.join(map(repr, bad))}"
    if len(set(value)) != len(value):
        return "lists a module twice"
    return None


def _check_template(value: Any, check_files: bool) -> str | None:
    problem = _text(value)
    if problem or not value.endswith(".jinja") or not check_files:
        return problem
    return None if resolve_local_file(value) else f"no such file: {value}"


def _check_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false (got {value!r})"


FILE_CHECKS: dict[str, Any] = {
    "base_model": _check_base_model,
    "dataset": _check_dataset,
    "chat_template": _check_template,
}
WHOLE_BOUNDS: dict[str, tuple[int, int | None]] = {
    "max_seq_length": (16, 131072),
    "lora_r": (1, 1024),
    "lora_alpha": (1, 4096),
    "batch_size": (1, 1024),
    "gradient_accumulation_steps": (1, 1024),
    "warmup_steps": (0, None),
    "max_steps": (1, 1_000_000),
    "seed": (0, 2**32 - 1),
    "save_steps": (1, None),
    "save_total_limit": (1, 1000),
    "logging_steps": (1, None),
}
"""Bounds of the whole-number fields (None: unbounded); save_total_limit may also be None."""
NUMBER_BOUNDS: dict[str, tuple[float, float, dict[str, bool]]] = {
    "lora_dropout": (0.0, 1.0, {"high_open": True}),
    "learning_rate": (0.0, 1.0, {"low_open": True}),
    "weight_decay": (0.0, 1.0, {}),
}
"""Bounds of the real-number fields, and which ends are open."""
CHECKS: dict[str, Any] = {
    **{key: (lambda v, low=low, high=high: _whole(v, low, high)) for key, (low, high) in WHOLE_BOUNDS.items()},
    **{key: (lambda v, low=low, high=high, open_ends=open_ends: _number(v, low, high, **open_ends))
       for key, (low, high, open_ends) in NUMBER_BOUNDS.items()},
    "save_total_limit": lambda v: None if v is None else _whole(v, *WHOLE_BOUNDS["save_total_limit"]),
    "split": _check_split,
    "target_modules": _check_modules,
    "use_rslora": _check_bool,
    "load_in_4bit": _check_bool,
    "lr_scheduler": lambda v: _choice(v, SCHEDULERS),
    "optimizer": lambda v: _choice(v, OPTIMIZERS),
    "packing": _check_bool,
    "train_on_responses_only": _check_bool,
    "backend": lambda v: _choice(v, BACKENDS),
    "note": lambda v: _text(v, required=False, limit=2000),
}


def unknown_key_problem(key: str) -> str:
    """The message for a key that is not a config field, with the closest field suggested."""
    close = difflib.get_close_matches(key, list(_fields()), n=1)
    return "is not a config field" + (f" (did you mean {close[0]}?)" if close else "")


def parse_config(data: Mapping[str, Any], *, check_files: bool = True) -> RunConfig:
    """A RunConfig from a JSON document; missing fields take their defaults.

    With `check_files`, local datasets, model folders and template files must exist here;
    a stored config (possibly from another machine) is read with check_files=False and its
    files are looked for when the job uses them. Raises ConfigError listing every problem.
    """
    if not isinstance(data, Mapping):
        raise ConfigError({"config": f"must be a JSON object (got {type(data).__name__})"})
    fields = _fields()
    problems = {key: unknown_key_problem(key) for key in data if key not in fields}
    values = {**RunConfig().to_dict(), **{k: v for k, v in data.items() if k in fields}}
    for key, check in CHECKS.items():
        problem = check(values[key])
        if problem:
            problems[key] = problem
    for key, check in FILE_CHECKS.items():
        problem = check(values[key], check_files)
        if problem:
            problems[key] = problem
    if "warmup_steps" not in problems and "max_steps" not in problems and values["warmup_steps"] > values["max_steps"]:
        problems["warmup_steps"] = f"is more than max_steps ({values['warmup_steps']} > {values['max_steps']})"
    if problems:
        raise ConfigError(problems)
    if isinstance(values["target_modules"], (list, tuple)):
        values["target_modules"] = tuple(values["target_modules"])
    if isinstance(values["learning_rate"], int):
        values["learning_rate"] = float(values["learning_rate"])
    for key in ("lora_dropout", "weight_decay"):
        values[key] = float(values[key])
    return RunConfig(**values)


def _parse_value(key: str, text: str) -> Any:
    """The typed value of a `--set key=value` assignment; ConfigError if it does not parse."""
    default = getattr(RunConfig(), key)
    lowered = text.strip().lower()
    if key == "save_total_limit" and lowered in ("none", "null", "all"):
        return None
    if isinstance(default, bool):
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ConfigError({key: f"must be true or false (got {text!r})"})
    if isinstance(default, int):
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError({key: f"must be a whole number (got {text!r})"}) from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError({key: f"must be a number (got {text!r})"}) from None
    if key == "target_modules":
        return text.strip() if lowered == "all-linear" else [m.strip() for m in text.split(",") if m.strip()]
    return text


def apply_overrides(config: Mapping[str, Any], assignments: list[str]) -> dict[str, Any]:
    """`config` with `key=value` assignments applied, values typed by their field.

    Raises ConfigError for a malformed assignment, an unknown key or an unparsable value.
    """
    result = dict(config)
    problems: dict[str, str] = {}
    fields = _fields()
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            problems[assignment or "--set"] = "must look like key=value"
        elif key not in fields:
            problems[key] = unknown_key_problem(key)
        else:
            try:
                result[key] = _parse_value(key, text)
            except ConfigError as exc:
                problems.update(exc.problems)
    if problems:
        raise ConfigError(problems)
    return result
