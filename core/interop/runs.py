"""What every importer makes: a completed run folder, marked with where it came from, created whole.

An imported run fits the run folder contract: config.json (the RunConfig fields the source gave,
each checked as on creation, and `origin`), status.json (completed), events.jsonl (one training
event per logged step, one `{"step", "eval_loss", "epoch", "elapsed_s"}` line per evaluation),
metrics.json, and adapter/ when the source has a LoRA adapter in safetensors. Steps run from 0 to
MAX_STEP; a source logging more steps than events.jsonl may hold (MAX_RECORDS_BYTES, what the
readers read) is thinned evenly, its first and last step kept, and the report says so. An adapter
comes only when its config is a LoRA for a causal LM whose fields pass the RunConfig checks and
its weights' shapes match its rank; its adapter_config.json is written from those fields alone.
Its tokenizer files come all together or not at all, and a chat template only when it renders a
probe conversation within limits (core.interop.templates). `origin` says which
importer read what; unlike a CSV import (`imported_from`: metrics only) a run with an adapter is
evaluated and exported like a run trained here. No imported run can be trained: it is completed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.interop.templates import template_problem
from core.store.files import (
    MAX_RECORDS_BYTES,
    FileProblem,
    finite_number,
    json_document,
    open_regular,
    place_new_dir,
    read_capped,
    read_json_object,
    staging_dir,
    why_not_opened,
    write_json_atomic,
    write_jsonl_atomic,
)
from core.store.runs import (
    ADAPTER_DIR,
    CONFIG_FILE,
    EVENTS_FILE,
    METRICS_FILE,
    STATUS_FILE,
    initial_status,
    now_iso,
    taken_names,
    validate_run_name,
)
from core.train.config import field_problem, stored_text_problems
from core.train.training import mean_loss

ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS_FILE = "adapter_model.bin"
ADAPTER_CONFIG_FILE = "adapter_config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
"""What an adapter folder brings besides its config and weights: the tokenizer with its chat template."""
TOKENIZER_NEEDED = ("tokenizer.json", "tokenizer_config.json")
"""Without both the tokenizer cannot be loaded from the adapter folder: none of TOKENIZER_FILES is brought."""
MAX_TOKENIZER_BYTES = 64 << 20
MAX_SAFETENSORS_HEADER = 100 << 20
EVENT_KEYS = ("learning_rate", "grad_norm", "epoch")
MAX_STEP = 1_000_000_000
"""The highest step an importer takes: far beyond any fine-tuning run, and within every writer's int64."""
LORA_TARGET = {"peft_type": "LORA", "task_type": "CAUSAL_LM"}
"""What an imported adapter must be: the only kind this dashboard loads."""


class InteropError(ValueError):
    """A file or folder that cannot be imported or exported; the message names it and says why."""


@dataclass(frozen=True)
class ImportedRun:
    """A run folder to create from another tool's files."""

    name: str
    config: dict[str, Any]
    events: list[dict[str, Any]]
    metrics: dict[str, Any]
    adapter: Path | None = None
    """A checked adapter folder to copy (check_adapter_folder), or None."""


@dataclass
class ImportReport:
    """What an import did: runs created, names already taken (left alone), and what was left out
    or refused, each with the file and the reason."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a person."""
        parts = [
            f"imported {len(self.created)} run(s)" + (f" ({', '.join(self.created)})" if self.created else "")
        ]
        if self.existing:
            parts.append(
                f"{len(self.existing)} name(s) already taken, left unchanged ({', '.join(self.existing)})"
            )
        if self.problems:
            parts.append(f"{len(self.problems)} problem(s)")
        return "; ".join(parts)


def valid_step(step: Any, max_steps: Any = None) -> bool:
    """Whether `step` is a step an importer keeps: an int (not a bool) from 0 to MAX_STEP, and
    not above `max_steps` when the source gives a valid one."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        return False
    known = isinstance(max_steps, int) and not isinstance(max_steps, bool) and 0 < max_steps <= MAX_STEP
    return not known or step <= max_steps


def thinned_steps(steps: list[int], keep: int) -> set[int]:
    """`keep` of the sorted distinct `steps`, evenly spread, the first and the last among them."""
    if keep >= len(steps):
        return set(steps)
    keep = max(keep, 2)
    return {steps[round(index * (len(steps) - 1) / (keep - 1))] for index in range(keep)}


def fit_events(events: list[dict[str, Any]], where: str, problems: list[str]) -> list[dict[str, Any]]:
    """`events` thinned evenly by step (the first and last step kept) so that events.jsonl stays
    within MAX_RECORDS_BYTES, the size the run readers read; the thinning is noted in `problems`."""
    size = sum(len(json_document(event)) + 1 for event in events)
    if size <= MAX_RECORDS_BYTES:
        return events
    steps = sorted({event["step"] for event in events})
    keep = int(len(steps) * MAX_RECORDS_BYTES * 0.95 / size)
    kept = thinned_steps(steps, keep)
    problems.append(
        f"{where}: {len(steps):,} logged steps would make events.jsonl {size:,} bytes, over the "
        f"{MAX_RECORDS_BYTES:,} a run may hold: {len(kept):,} kept, evenly spread (the first and the last)"
    )
    return [event for event in events if event["step"] in kept]


def training_event(step: int, loss: float, values: dict[str, Any], elapsed_s: float | None) -> dict[str, Any]:
    """An events.jsonl training line as the recorder writes it (what the source did not log is None)."""
    event: dict[str, Any] = {"step": step, "loss": loss}
    event.update({key: finite_number(values.get(key)) for key in EVENT_KEYS})
    event["elapsed_s"] = elapsed_s
    return event


def eval_event(step: int, eval_loss: float, epoch: Any, elapsed_s: float | None) -> dict[str, Any]:
    """An events.jsonl evaluation line as the recorder writes it."""
    return {"step": step, "eval_loss": eval_loss, "epoch": finite_number(epoch), "elapsed_s": elapsed_s}


def checked_fields(values: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """The RunConfig fields among `values` that pass their field's check (as a stored config's
    are: no file looked for); each one left out is noted in `problems` with the reason."""
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        problem = field_problem(key, value, check_files=False)
        if problem:
            problems.append(f"{where}: {key} left out ({problem})")
        else:
            kept[key] = value
    return kept


def run_metrics(events: list[dict[str, Any]], reported: dict[str, Any]) -> dict[str, Any]:
    """metrics.json of an imported run: the mean and last logged loss as a run trained here
    computes them, and what the source reported at the end (its own train loss, runtime)."""
    losses = [event["loss"] for event in events if "loss" in event]
    return {
        "train_loss": finite_number(mean_loss(events)),
        "final_loss": losses[-1] if losses else None,
        "trainer_train_loss": finite_number(reported.get("train_loss")),
        "train_runtime_s": finite_number(reported.get("train_runtime")),
        "steps": max((event["step"] for event in events), default=0),
        "device": None,
    }


def _safetensors_problem(path: Path, rank: int) -> str | None:
    """Why `path` is not a well-formed safetensors file of a LoRA adapter of rank `rank` (its
    header read and checked against its size and the lora_A/lora_B shapes against the rank; no
    tensor is loaded), or None."""
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                return "shorter than a safetensors header"
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_SAFETENSORS_HEADER, size - 8):
                return "its header length does not fit the file"
            header = json.loads(handle.read(length))
    except OSError as exc:
        return why_not_opened(exc)
    except (ValueError, RecursionError):
        return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            return f"tensor {name!r} lies outside the file"
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in shape
        ):
            return f"tensor {name!r} has no valid shape"
        side = 0 if ".lora_A." in name else -1 if ".lora_B." in name else None
        if side is not None and (len(shape) != 2 or shape[side] != rank):
            return f"tensor {name!r} of shape {shape} does not match r={rank}"
    if not any(".lora_A." in name for name in header):
        return "it holds no lora_A tensor"
    return None


def adapter_config_problem(adapter_config: dict[str, Any]) -> str | None:
    """Why an adapter_config.json is not one of a LoRA adapter for a causal LM whose fields pass
    the RunConfig checks, or None."""
    for key, wanted in LORA_TARGET.items():
        if adapter_config.get(key) != wanted:
            return f"{key} is {adapter_config.get(key)!r}, not {wanted}"
    for key, value in lora_fields(adapter_config).items():
        problem = field_problem(key, value, check_files=False) if key != "base_model" else None
        if value is None or problem:
            return f"{key} {problem or 'is missing'}"
    for key in ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform"):
        if adapter_config.get(key):
            return f"{key} is set; only a uniform LoRA is imported"
    if adapter_config.get("use_dora"):
        return "a DoRA adapter; only LoRA is imported"
    return None


def adapter_config_of(fields: dict[str, Any]) -> dict[str, Any]:
    """adapter_config.json of an imported adapter, written from its checked LoRA fields only."""
    return {
        **LORA_TARGET,
        "base_model_name_or_path": fields.get("base_model"),
        "r": fields["lora_r"],
        "lora_alpha": fields["lora_alpha"],
        "lora_dropout": fields["lora_dropout"],
        "target_modules": fields["target_modules"],
        "use_rslora": fields["use_rslora"],
        "bias": "none",
        "inference_mode": True,
    }


def check_adapter_folder(folder: Path, problems: list[str]) -> tuple[Path | None, dict[str, Any]]:
    """The folder if it holds a usable LoRA adapter (adapter_config.json and well-formed
    adapter_model.safetensors), and its config; else (None, {}) with the reason in `problems`
    when there is something that looked like one. A pickled adapter_model.bin is never loaded."""
    has_config = (folder / ADAPTER_CONFIG_FILE).exists()
    if not has_config and not (folder / PICKLED_WEIGHTS_FILE).exists():
        return None, {}
    try:
        adapter_config = read_json_object(folder / ADAPTER_CONFIG_FILE)
    except FileProblem as exc:
        problems.append(f"{folder.name}: adapter left out ({exc})")
        return None, {}
    if not (folder / ADAPTER_WEIGHTS_FILE).exists():
        reason = (
            f"{PICKLED_WEIGHTS_FILE} is a pickle, never loaded here; save the adapter as safetensors "
            "(peft's default) to bring it"
            if (folder / PICKLED_WEIGHTS_FILE).exists()
            else f"no {ADAPTER_WEIGHTS_FILE}"
        )
        problems.append(f"{folder.name}: adapter left out ({reason})")
        return None, adapter_config
    problem = adapter_config_problem(adapter_config)
    if problem:
        problems.append(f"{folder.name}/{ADAPTER_CONFIG_FILE}: adapter left out ({problem})")
        return None, adapter_config
    problem = _safetensors_problem(folder / ADAPTER_WEIGHTS_FILE, adapter_config["r"])
    if problem:
        problems.append(f"{folder.name}/{ADAPTER_WEIGHTS_FILE}: adapter left out ({problem})")
        return None, adapter_config
    return folder, adapter_config


def lora_fields(adapter_config: dict[str, Any]) -> dict[str, Any]:
    """The RunConfig fields an adapter_config.json gives."""
    modules = adapter_config.get("target_modules")
    return {
        "base_model": adapter_config.get("base_model_name_or_path"),
        "lora_r": adapter_config.get("r"),
        "lora_alpha": adapter_config.get("lora_alpha"),
        "lora_dropout": adapter_config.get("lora_dropout"),
        "target_modules": sorted(modules) if isinstance(modules, list) else modules,
        "use_rslora": adapter_config.get("use_rslora", False),
    }


def _copy_regular(source: Path, target: Path) -> None:
    """Copy the regular file `source` (opened as run files are: no link followed) to `target`."""
    with os.fdopen(open_regular(source), "rb") as reader, open(target, "xb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)


def _tokenizer_problem(source: Path) -> str | None:
    """Why the tokenizer files in `source` are not brought (each readable and within its cap, both
    TOKENIZER_NEEDED there, each chat template passing template_problem), or None."""
    missing = [name for name in TOKENIZER_NEEDED if not (source / name).exists()]
    if missing:
        return f"no {' or '.join(missing)}"
    for name in TOKENIZER_FILES:
        path = source / name
        if not path.exists():
            continue
        if name.endswith(".json"):
            data = read_json_object(path, MAX_TOKENIZER_BYTES)
            template = data.get("chat_template") if name == "tokenizer_config.json" else None
        else:
            template = read_capped(path, MAX_TOKENIZER_BYTES).decode("utf-8", errors="replace")
        problem = template_problem(template) if template is not None else None
        if problem:
            return f"{name}: {problem}"
    return None


def _copy_adapter(source: Path, target: Path, fields: dict[str, Any], problems: list[str]) -> None:
    """Copy the checked adapter in `source` to `target`: its weights, adapter_config.json written
    from the checked `fields`, and its tokenizer files all together, or none of them."""
    target.mkdir()
    write_json_atomic(target / ADAPTER_CONFIG_FILE, adapter_config_of(fields))
    _copy_regular(source / ADAPTER_WEIGHTS_FILE, target / ADAPTER_WEIGHTS_FILE)
    if not any((source / name).exists() for name in TOKENIZER_FILES):
        return
    try:
        problem = _tokenizer_problem(source)
        if problem is None:
            for name in TOKENIZER_FILES:
                if (source / name).exists():
                    _copy_regular(source / name, target / name)
            return
    except (FileProblem, OSError) as exc:
        problem = str(exc)
    for name in TOKENIZER_FILES:
        (target / name).unlink(missing_ok=True)
    problems.append(
        f"{source.name}: tokenizer files left out ({problem}); the base model's tokenizer is used"
    )


def create_imported_run(root: Path, run: ImportedRun, problems: list[str]) -> bool:
    """Create the run folder of `run` in `root`, all at once (built under a hidden name, renamed
    into place); False, with nothing written, when the name is taken. Files of the adapter that
    cannot be brought are noted in `problems`. InteropError when the config holds text no run
    folder may (a control character, say)."""
    name = validate_run_name(run.name)
    bad = stored_text_problems(run.config)
    if bad:
        raise InteropError(f"{name}: not imported ({'; '.join(bad)})")
    root.mkdir(parents=True, exist_ok=True)
    if name in taken_names(root):
        return False
    steps = [event["step"] for event in run.events]
    status = initial_status("completed", max_steps=run.config.get("max_steps") or max(steps, default=0))
    status.update(step=max(steps, default=0), ended_at=status["created_at"])
    with staging_dir(root / name) as staging:
        write_json_atomic(staging / CONFIG_FILE, run.config)
        write_json_atomic(staging / STATUS_FILE, status)
        write_json_atomic(staging / METRICS_FILE, run.metrics)
        write_jsonl_atomic(staging / EVENTS_FILE, run.events)
        if run.adapter is not None:
            _copy_adapter(run.adapter, staging / ADAPTER_DIR, run.config, problems)
        return place_new_dir(staging, root / name)


def origin(importer: str, source: str, **details: Any) -> dict[str, Any]:
    """config.json's `origin` of an imported run: which importer read what, and when."""
    return {"importer": importer, "source": source, **details, "imported_at": now_iso()}


def import_runs(root: Path, runs: list[ImportedRun], report: ImportReport) -> ImportReport:
    """Create each of `runs` in `root` (create_imported_run), noting in `report` what was made."""
    for run in runs:
        try:
            created = create_imported_run(root, run, report.problems)
        except (InteropError, OSError) as exc:
            report.problems.append(str(exc))
            continue
        (report.created if created else report.existing).append(run.name)
    return report
