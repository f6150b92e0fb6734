"""The training configuration of a run: typed, validated, with the lab notebook's defaults.

A RunConfig is what `config.json` holds. Each of its fields is declared once, with
`dataclasses.field(metadata=...)` carrying everything known about it: a label, help text, the
form group it belongs to, its kind, bounds, choices, whether None is allowed, and any further
check. `field_specs()` reads those facts back as FieldSpec objects, in form order, and drives
`parse_config` (every field checked, every problem reported at once, keyed by field),
`apply_overrides` (the command line's `--set key=value`), the command line's help
(`set_help`) and the Train page's form.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.store.paths import PROJECT_DIR
from core.train.tiny import TINY_MODEL_ID

PROJECTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BACKENDS = ("auto", "unsloth", "hf")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
OPTIMIZERS = (
    "auto",
    "adamw_torch",
    "adamw_8bit",
    "paged_adamw_8bit",
    "adamw_torch_fused",
    "adafactor",
    "sgd",
)
TRACKERS = ("none", "tensorboard", "trackio", "wandb", "mlflow")
"""Where a run's Trainer also reports (transformers' report_to); the run folder stays the record."""
DATASET_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
MODEL_TEMPLATE = "model"

HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
SPLIT_PATTERN = re.compile(r"(?P<name>[A-Za-z_][\w-]*)(\[(?P<start>\d+%?)?:(?P<stop>\d+%?)?\])?")
MODULE_PATTERN = re.compile(r"[A-Za-z_][\w.]*")
RECIPE_PATTERN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,63})(@(?P<hash>[0-9a-f]{8,64}))?")
"""A run's recipe: a saved recipe's name, pinned to its content hash (NAME@HASH) when the run is created."""

MODEL_AND_DATA, LORA, TRAINING, CHECKPOINTS = "Model and data", "LoRA", "Training", "Checkpoints and logging"
FORM_GROUPS: tuple[str, ...] = (MODEL_AND_DATA, LORA, TRAINING, CHECKPOINTS)
"""The Train form's groups, in order; every field belongs to exactly one."""
KINDS = ("text", "long_text", "whole", "number", "bool", "choice", "modules")
"""text: one line, required; long_text: free text that may be empty and hold line breaks and
tabs; whole: an int; number: a float; bool; choice: one of `choices`; modules: a list of
module names or 'all-linear'."""

Check = Callable[[Any, bool], "str | None"]


@dataclass(frozen=True)
class FieldSpec:
    """What is known about one RunConfig field, from its declaration."""

    name: str
    label: str
    help: str
    group: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    """None is allowed (save_total_limit: keep every checkpoint)."""
    none_means: str = ""
    """What None stands for, for optional fields (a placeholder, and the --set help)."""
    max_length: int | None = None
    """The longest text allowed (text kinds)."""
    checks_files: bool = False
    """Whether the field's check looks at the file system (local datasets, models, templates)."""
    check: Check | None = field(default=None, compare=False, repr=False)
    """A further check `(value, check_files) -> problem or None`, run after the kind's own."""

    def bounds_text(self) -> str:
        """The bounds as the messages word them: 'from 1 to 1024', 'above 0 to 1', 'at least 0'."""
        show = (lambda x: str(int(x))) if self.kind == "whole" else (lambda x: f"{x:g}")
        low = f"{'above' if self.low_open else 'from'} {show(self.low)}" if self.low is not None else ""
        high = f"{'below' if self.high_open else 'to'} {show(self.high)}" if self.high is not None else ""
        if low and high:
            return f"{low} {high}"
        if low:
            return f"above {show(self.low)}" if self.low_open else f"at least {show(self.low)}"
        if high:
            return f"below {show(self.high)}" if self.high_open else f"at most {show(self.high)}"
        return ""

    def accepts(self) -> str:
        """The values the field takes, in words: 'a whole number from 1 to 1024', 'true or false'."""
        if self.kind in ("whole", "number"):
            text = "a whole number" if self.kind == "whole" else "a number"
            text += f" {self.bounds_text()}" if self.bounds_text() else ""
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        elif self.kind == "modules":
            text = "module names, comma-separated, or all-linear"
        elif self.kind == "long_text":
            text = "text, may be empty, line breaks allowed"
        else:
            text = "text"
        if self.kind in ("text", "long_text") and self.max_length:
            text += f", at most {self.max_length} characters"
        if self.optional:
            text += f", or none ({self.none_means})" if self.none_means else ", or none"
        return text


def _meta(label: str, help: str, group: str, kind: str, **facts: Any) -> dict[str, Any]:
    """The metadata of a RunConfig field: the FieldSpec facts besides its name and default."""
    return {"label": label, "help": help, "group": group, "kind": kind, **facts}


# --- the checks of each kind of value; a message completes "<field>: ..." ---------------------


def _whole(spec: FieldSpec, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number (got {value!r})"
    if _out_of_bounds(spec, value):
        return f"must be {spec.bounds_text()} (got {value})"
    return None


def _number(spec: FieldSpec, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return f"must be a number (got {value!r})"
    if _out_of_bounds(spec, value):
        return f"must be {spec.bounds_text()} (got {value:g})"
    return None


def _out_of_bounds(spec: FieldSpec, value: float) -> bool:
    low, high = spec.low, spec.high
    return (low is not None and (value < low or (spec.low_open and value == low))) or (
        high is not None and (value > high or (spec.high_open and value == high))
    )


def _choice(spec: FieldSpec, value: Any) -> str | None:
    if value not in spec.choices:
        return f"must be one of {', '.join(spec.choices)} (got {value!r})"
    return None


def _check_bool(spec: FieldSpec, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false (got {value!r})"


LINE_BREAKS_AND_TABS = frozenset("\n\t")


def _control_character(text: str, allowed: frozenset[str] = frozenset()) -> tuple[int, str] | None:
    """The first control character (or Unicode line/paragraph separator) in `text` not in `allowed`."""
    for index, char in enumerate(text):
        if char not in allowed and unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return index, char
    return None


def _text(spec: FieldSpec, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be text (got {value!r})"
    multiline = spec.kind == "long_text"
    if not multiline and not value.strip():
        return None if spec.optional else "is required"
    if spec.max_length is not None and len(value) > spec.max_length:
        return f"is {len(value)} characters long (at most {spec.max_length})"
    found = _control_character(value, LINE_BREAKS_AND_TABS if multiline else frozenset())
    if found:
        index, char = found
        what = (
            "must not hold control characters other than line breaks and tabs"
            if multiline
            else "must be one line without control characters"
        )
        return f"{what} (found {char!r} at character {index + 1})"
    return None


def _check_modules(spec: FieldSpec, value: Any) -> str | None:
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


KIND_CHECKS: dict[str, Callable[[FieldSpec, Any], str | None]] = {
    "text": _text,
    "long_text": _text,
    "whole": _whole,
    "number": _number,
    "bool": _check_bool,
    "choice": _choice,
    "modules": _check_modules,
}


# --- further checks of single fields, run once the value is text -------------------------------


def _check_base_model(value: str, check_files: bool) -> str | None:
    if value == TINY_MODEL_ID or HUB_ID_PATTERN.fullmatch(value) or not check_files or is_local_model(value):
        return None
    return (
        f"{value!r} is not a Hub model id (owner/name), a local model folder with config.json, "
        f"or {TINY_MODEL_ID!r}"
    )


def is_hub_id(value: object) -> bool:
    """Whether `value` names a Hub repo (owner/name), not a local data file or an existing path."""
    return (
        isinstance(value, str)
        and HUB_ID_PATTERN.fullmatch(value) is not None
        and Path(value).suffix.lower() not in DATASET_SUFFIXES
        and not Path(value).expanduser().exists()
    )


def _check_dataset(value: str, check_files: bool) -> str | None:
    if Path(value).suffix.lower() in DATASET_SUFFIXES:
        return None if not check_files or resolve_local_file(value) else f"no such file: {value}"
    if is_hub_id(value):
        return None
    return f"{value!r} is neither a Hub dataset id (owner/name) nor a local file ending in " + ", ".join(
        DATASET_SUFFIXES
    )


def _check_split(value: str, check_files: bool) -> str | None:
    match = SPLIT_PATTERN.fullmatch(value)
    if not match:
        return f"{value!r} is not a split such as train, train[:10000], train[100:200] or train[:10%]"
    for bound in (match["start"], match["stop"]):
        if bound and bound.endswith("%") and int(bound[:-1]) > 100:
            return f"{bound} is more than 100%"
    return None


def _check_recipe(value: str, check_files: bool) -> str | None:
    if not value.strip() or RECIPE_PATTERN.fullmatch(value):
        return None
    return f"{value!r} is not a recipe name (letters, digits, '.', '_', '-'), optionally pinned as NAME@HASH"


def _check_template(value: str, check_files: bool) -> str | None:
    if not value.endswith(".jinja") or not check_files:
        return None
    return None if resolve_local_file(value) else f"no such file: {value}"


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a training run does. Defaults are the lab notebook's;
    fields are declared in the Train form's order, each with its FieldSpec facts."""

    # Model and data
    base_model: str = field(
        default="unsloth/Llama-3.2-1B-Instruct-bnb-4bit",
        metadata=_meta(
            "Base model",
            f"Hub model id (owner/name), a local model folder, or '{TINY_MODEL_ID}' for the tiny CPU model",
            MODEL_AND_DATA,
            "text",
            max_length=500,
            checks_files=True,
            check=_check_base_model,
        ),
    )
    dataset: str = field(
        default="mlabonne/FineTome-100k",
        metadata=_meta(
            "Dataset",
            "Hub dataset id (owner/name) or a local .jsonl/.json/.parquet/.csv file of conversations",
            MODEL_AND_DATA,
            "text",
            max_length=500,
            checks_files=True,
            check=_check_dataset,
        ),
    )
    split: str = field(
        default="train[:10000]",
        metadata=_meta(
            "Split",
            "split and optional slice, e.g. train, train[:10000], train[:10%]",
            MODEL_AND_DATA,
            "text",
            max_length=100,
            check=_check_split,
        ),
    )
    recipe: str = field(
        default="",
        metadata=_meta(
            "Data recipe",
            "a recipe saved on the Data page (filters, mix, sample, validation share): the run trains on "
            "its rows and takes dataset and split from it; pinned to its content as NAME@HASH when the "
            "run is created",
            MODEL_AND_DATA,
            "text",
            max_length=100,
            optional=True,
            none_means="no recipe: the dataset and split as given",
            check=_check_recipe,
        ),
    )
    max_seq_length: int = field(
        default=1024,
        metadata=_meta(
            "Max sequence length",
            "tokens per training sequence; longer conversations are truncated",
            MODEL_AND_DATA,
            "whole",
            low=16,
            high=131072,
        ),
    )
    chat_template: str = field(
        default=MODEL_TEMPLATE,
        metadata=_meta(
            "Chat template",
            f"'{MODEL_TEMPLATE}' (the base model's own), a .jinja file, "
            "or an Unsloth template name (unsloth backend)",
            MODEL_AND_DATA,
            "text",
            max_length=500,
            checks_files=True,
            check=_check_template,
        ),
    )
    load_in_4bit: bool = field(
        default=True,
        metadata=_meta(
            "Load the base model in 4-bit",
            "quantize the base model's weights to 4 bits while training (QLoRA); needs a CUDA GPU",
            MODEL_AND_DATA,
            "bool",
        ),
    )
    backend: str = field(
        default="auto",
        metadata=_meta(
            "Backend",
            "auto (Unsloth when a CUDA GPU and unsloth are present, else hf), unsloth or hf",
            MODEL_AND_DATA,
            "choice",
            choices=BACKENDS,
        ),
    )
    # LoRA
    lora_r: int = field(
        default=16,
        metadata=_meta(
            "LoRA rank (r)",
            "the rank of the adapter's matrices: its capacity",
            LORA,
            "whole",
            low=1,
            high=1024,
        ),
    )
    lora_alpha: int = field(
        default=16,
        metadata=_meta(
            "LoRA alpha",
            "scaling numerator: the update is scaled by alpha/r, or alpha/sqrt(r) with rsLoRA",
            LORA,
            "whole",
            low=1,
            high=4096,
        ),
    )
    lora_dropout: float = field(
        default=0.0,
        metadata=_meta(
            "LoRA dropout",
            "dropout on the adapter's input",
            LORA,
            "number",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
    )
    target_modules: tuple[str, ...] = field(
        default=PROJECTION_MODULES,
        metadata=_meta(
            "Target modules", "modules that get adapters, comma-separated, or all-linear", LORA, "modules"
        ),
    )
    use_rslora: bool = field(
        default=False,
        metadata=_meta(
            "rsLoRA scaling",
            "rank-stabilized LoRA: scale the update by alpha/sqrt(r) instead of alpha/r",
            LORA,
            "bool",
        ),
    )
    # Training
    max_steps: int = field(
        default=60,
        metadata=_meta("Max steps", "optimizer steps to train", TRAINING, "whole", low=1, high=1_000_000),
    )
    batch_size: int = field(
        default=2,
        metadata=_meta("Batch size", "sequences per device per step", TRAINING, "whole", low=1, high=1024),
    )
    gradient_accumulation_steps: int = field(
        default=4,
        metadata=_meta(
            "Gradient accumulation steps",
            "micro-batches per optimizer step",
            TRAINING,
            "whole",
            low=1,
            high=1024,
        ),
    )
    num_processes: int = field(
        default=1,
        metadata=_meta(
            "Processes (GPUs)",
            "training processes, one per GPU: above 1 the job runs them under accelerate launch "
            "(data-parallel, DDP); the global batch is batch size x accumulation x processes",
            TRAINING,
            "whole",
            low=1,
            high=64,
        ),
    )
    learning_rate: float = field(
        default=2e-4,
        metadata=_meta(
            "Learning rate",
            "peak learning rate, reached after warmup",
            TRAINING,
            "number",
            low=0.0,
            high=1.0,
            low_open=True,
        ),
    )
    warmup_steps: int = field(
        default=5,
        metadata=_meta(
            "Warmup steps",
            "steps of linear learning-rate warmup (at most max_steps)",
            TRAINING,
            "whole",
            low=0,
            high=1_000_000,
        ),
    )
    lr_scheduler: str = field(
        default="linear",
        metadata=_meta(
            "Learning-rate schedule",
            "how the learning rate changes after warmup",
            TRAINING,
            "choice",
            choices=SCHEDULERS,
        ),
    )
    optimizer: str = field(
        default="auto",
        metadata=_meta(
            "Optimizer",
            "auto picks adamw_8bit on a GPU and adamw_torch on a CPU",
            TRAINING,
            "choice",
            choices=OPTIMIZERS,
        ),
    )
    weight_decay: float = field(
        default=0.01,
        metadata=_meta("Weight decay", "AdamW weight decay", TRAINING, "number", low=0.0, high=1.0),
    )
    seed: int = field(
        default=3407,
        metadata=_meta(
            "Seed",
            "random seed for data order and adapter initialisation",
            TRAINING,
            "whole",
            low=0,
            high=2**32 - 1,
        ),
    )
    # The lab's notebook passed packing=True, but Unsloth then had no packing (it came on
    # 2025-12-09, after the lab's runs) and dropped the option: the lab trained unpacked.
    packing: bool = field(
        default=False,
        metadata=_meta(
            "Pack sequences",
            "pack several conversations into each sequence (trl's packing): fewer padding tokens, "
            "other losses; the lab's runs were not packed",
            TRAINING,
            "bool",
        ),
    )
    train_on_responses_only: bool = field(
        default=True,
        metadata=_meta(
            "Train on responses only", "compute the loss on assistant answers only", TRAINING, "bool"
        ),
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata=_meta(
            "Early stopping patience",
            "with a recipe's validation share: stop after this many evaluations without a lower eval "
            "loss, and keep the best checkpoint as the adapter",
            TRAINING,
            "whole",
            low=1,
            high=1000,
            optional=True,
            none_means="never stop early",
        ),
    )
    # Checkpoints and logging
    save_steps: int = field(
        default=100,
        metadata=_meta(
            "Checkpoint every (steps)",
            "save a resumable checkpoint every this many steps",
            CHECKPOINTS,
            "whole",
            low=1,
            high=1_000_000,
        ),
    )
    save_total_limit: int | None = field(
        default=2,
        metadata=_meta(
            "Checkpoints kept",
            "checkpoints kept on disk (older ones are deleted)",
            CHECKPOINTS,
            "whole",
            low=1,
            high=1000,
            optional=True,
            none_means="keep all",
        ),
    )
    logging_steps: int = field(
        default=1,
        metadata=_meta(
            "Log every (steps)", "steps between loss records", CHECKPOINTS, "whole", low=1, high=1_000_000
        ),
    )
    eval_steps: int | None = field(
        default=None,
        metadata=_meta(
            "Evaluate every (steps)",
            "with a recipe's validation share: steps between evaluations of the validation loss",
            CHECKPOINTS,
            "whole",
            low=1,
            high=1_000_000,
            optional=True,
            none_means="10 evaluations per run",
        ),
    )
    report_to: str = field(
        default="none",
        metadata=_meta(
            "Also report to",
            "a tracker the Trainer also logs to: tensorboard (event files in the run's tensorboard/ "
            "folder), trackio (its local store), wandb or mlflow (their credentials and server from "
            "the environment); the run folder stays the record",
            CHECKPOINTS,
            "choice",
            choices=TRACKERS,
        ),
    )
    note: str = field(
        default="",
        metadata=_meta("Note", "free text shown with the run", CHECKPOINTS, "long_text", max_length=2000),
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this config (lists instead of tuples)."""
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


def _build_specs() -> dict[str, FieldSpec]:
    specs = {
        f.name: FieldSpec(name=f.name, default=f.default, **f.metadata) for f in dataclasses.fields(RunConfig)
    }
    groups = [spec.group for spec in specs.values()]
    for spec in specs.values():
        if spec.group not in FORM_GROUPS or spec.kind not in KINDS:
            raise TypeError(f"RunConfig.{spec.name}: unknown group {spec.group!r} or kind {spec.kind!r}")
        if spec.kind == "choice" and spec.default not in spec.choices:
            raise TypeError(f"RunConfig.{spec.name}: default {spec.default!r} is not a choice")
    if sorted(groups, key=FORM_GROUPS.index) != groups:
        raise TypeError("RunConfig's fields must be declared group by group, in FORM_GROUPS order")
    return specs


_SPECS = _build_specs()


def field_specs() -> dict[str, FieldSpec]:
    """Every RunConfig field's facts, by name, in form order (group by group)."""
    return dict(_SPECS)


def field_problem(name: str, value: Any, *, check_files: bool = True) -> str | None:
    """What is wrong with `value` for the field `name`, as parse_config reports it, or None.

    Only the field itself is checked; parse_config (and config_problems) also check fields
    against each other (warmup_steps at most max_steps)."""
    spec = _SPECS.get(name)
    if spec is None:
        return unknown_key_problem(name)
    if value is None:
        return None if spec.optional else "is required"
    problem = KIND_CHECKS[spec.kind](spec, value)
    if problem is None and spec.check is not None:
        problem = spec.check(value, check_files)
    return problem


def format_setting(value: Any) -> str:
    """A config value as `--set` takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def set_help() -> str:
    """The config fields, group by group, with the values each takes and its default: the
    help of the command line's `--set KEY=VALUE`."""
    lines = [
        (
            "config fields for --set KEY=VALUE (each field takes its default unless a preset, "
            "--config or --set gives it):"
        )
    ]
    for group in FORM_GROUPS:
        lines += ["", f"{group}:"]
        for spec in _SPECS.values():
            if spec.group == group:
                lines.append(
                    f"  {spec.name}: {spec.accepts()}; default {format_setting(spec.default) or 'empty'}"
                )
                lines.append(f"      {spec.help}")
    return "\n".join(lines)


class ConfigError(ValueError):
    """A config with problems; `problems` maps each field (or 'config') to what is wrong."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems.items()))


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
        path = resolve_local_file(spec)
        if path is None and is_local_model(spec):
            path = Path(spec).expanduser().resolve()
        if path is None:
            return spec
        return str(path.relative_to(PROJECT_DIR)) if path.is_relative_to(PROJECT_DIR) else str(path)

    return dataclasses.replace(
        config,
        dataset=stable(config.dataset),
        base_model=stable(config.base_model),
        chat_template=(
            stable(config.chat_template) if config.chat_template.endswith(".jinja") else config.chat_template
        ),
    )


def is_local_model(spec: str) -> bool:
    """Whether `spec` names a local model folder (one holding a config.json)."""
    return (Path(spec).expanduser() / "config.json").is_file()


def unknown_key_problem(key: str) -> str:
    """The message for a key that is not a config field, with the closest field suggested."""
    close = difflib.get_close_matches(key, list(_SPECS), n=1)
    return "is not a config field" + (f" (did you mean {close[0]}?)" if close else "")


def stored_text_problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with the text in a stored config.json (one from another machine, an
    import, a planted folder): every text field is checked as on creation, and text under
    other keys (an import's source, say) must be one line without control characters.
    Values of other types are left to parse_config, which checks them when a job uses them."""
    problems: list[str] = []

    def walk(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for inner, item in value.items():
                walk(f"{key}.{inner}", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{key}[{index}]", item)
        elif isinstance(value, str):
            spec = _SPECS.get(key)
            if spec is not None and spec.kind in ("text", "long_text"):
                problem = _text(spec, value)
            else:
                found = _control_character(value)
                problem = (
                    f"must be one line without control characters (found {found[1]!r})" if found else None
                )
            if problem:
                problems.append(f"{key} {problem}")

    for key, value in data.items():
        walk(str(key), value)
    return problems


def config_problems(data: Mapping[str, Any], *, check_files: bool = True) -> dict[str, str]:
    """Every problem of a config document, keyed by field ('config' for the document itself);
    missing fields take their defaults. Empty when parse_config would accept `data`."""
    if not isinstance(data, Mapping):
        return {"config": f"must be a JSON object (got {type(data).__name__})"}
    problems = {key: unknown_key_problem(key) for key in data if key not in _SPECS}
    values = {**default_config(), **{k: v for k, v in data.items() if k in _SPECS}}
    for name in _SPECS:
        problem = field_problem(name, values[name], check_files=check_files)
        if problem:
            problems[name] = problem
    warmup, steps = values["warmup_steps"], values["max_steps"]
    if "warmup_steps" not in problems and "max_steps" not in problems and warmup > steps:
        problems["warmup_steps"] = f"is more than max_steps ({warmup} > {steps})"
    return problems


def parse_config(data: Mapping[str, Any], *, check_files: bool = True) -> RunConfig:
    """A RunConfig from a JSON document; missing fields take their defaults.

    With `check_files`, local datasets, model folders and template files must exist here;
    a stored config (possibly from another machine) is read with check_files=False and its
    files are looked for when the job uses them. Raises ConfigError listing every problem.
    """
    problems = config_problems(data, check_files=check_files)
    if problems:
        raise ConfigError(problems)
    values = {**default_config(), **{k: v for k, v in data.items() if k in _SPECS}}
    for name, spec in _SPECS.items():
        value = values[name]
        if spec.kind == "modules" and isinstance(value, (list, tuple)):
            values[name] = tuple(value)
        elif spec.kind == "number":
            values[name] = float(value)
    return RunConfig(**values)


def _parse_value(key: str, text: str) -> Any:
    """The typed value of a `--set key=value` assignment; ConfigError if it does not parse."""
    spec = _SPECS[key]
    lowered = text.strip().lower()
    if spec.optional and lowered in ("none", "null", "all"):
        return None
    if spec.kind == "bool":
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ConfigError({key: f"must be true or false (got {text!r})"})
    if spec.kind == "whole":
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError({key: f"must be a whole number (got {text!r})"}) from None
    if spec.kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ConfigError({key: f"must be a number (got {text!r})"}) from None
    if spec.kind == "modules":
        return text.strip() if lowered == "all-linear" else [m.strip() for m in text.split(",") if m.strip()]
    return text


def apply_overrides(config: Mapping[str, Any], assignments: list[str]) -> dict[str, Any]:
    """`config` with `key=value` assignments applied, values typed by their field.

    Raises ConfigError for a malformed assignment, an unknown key or an unparsable value.
    """
    result = dict(config)
    problems: dict[str, str] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            problems[assignment or "--set"] = "must look like key=value"
        elif key not in _SPECS:
            problems[key] = unknown_key_problem(key)
        else:
            try:
                result[key] = _parse_value(key, text)
            except ConfigError as exc:
                problems.update(exc.problems)
    if problems:
        raise ConfigError(problems)
    return result
