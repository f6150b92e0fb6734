"""What every importer makes: a completed run folder, marked with where it came from, created whole.

An imported run fits the run folder contract: config.json (the RunConfig fields the source gave,
each checked as on creation, and `origin`), status.json (completed), events.jsonl (one training
event per logged step, one `{"step", "eval_loss", "epoch", "elapsed_s"}` line per evaluation),
metrics.json, and adapter/ when the source has a LoRA adapter in safetensors. `origin` says which
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

from core.store.files import (
    FileProblem,
    finite_number,
    open_regular,
    place_new_dir,
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
MAX_TOKENIZER_BYTES = 64 << 20
MAX_SAFETENSORS_HEADER = 100 << 20
EVENT_KEYS = ("learning_rate", "grad_norm", "epoch")


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
        "train_loss": mean_loss(events),
        "final_loss": losses[-1] if losses else None,
        "trainer_train_loss": finite_number(reported.get("train_loss")),
        "train_runtime_s": finite_number(reported.get("train_runtime")),
        "steps": max((event["step"] for event in events), default=0),
        "device": None,
    }


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a well-formed safetensors file (its header read and checked against its
    size; no tensor is loaded), or None."""
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
    return None


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
    problem = _safetensors_problem(folder / ADAPTER_WEIGHTS_FILE)
    if problem:
        problems.append(f"{folder.name}/{ADAPTER_WEIGHTS_FILE}: adapter left out ({problem})")
        return None, adapter_config
    peft_type = adapter_config.get("peft_type", "LORA")
    if peft_type != "LORA":
        problems.append(f"{folder.name}: adapter left out (a {peft_type} adapter, not LoRA)")
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
    }


def _copy_regular(source: Path, target: Path) -> None:
    """Copy the regular file `source` (opened as run files are: no link followed) to `target`."""
    with os.fdopen(open_regular(source), "rb") as reader, open(target, "xb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)


def _copy_adapter(source: Path, target: Path, problems: list[str]) -> None:
    target.mkdir()
    for name in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
        _copy_regular(source / name, target / name)
    for name in TOKENIZER_FILES:
        path = source / name
        if not path.exists():
            continue
        try:
            if name.endswith(".json"):
                read_json_object(path, MAX_TOKENIZER_BYTES)
            elif path.lstat().st_size > MAX_TOKENIZER_BYTES:
                raise FileProblem(f"{name} is larger than {MAX_TOKENIZER_BYTES:,} bytes")
            _copy_regular(path, target / name)
        except (FileProblem, OSError) as exc:
            problems.append(f"{source.name}/{name}: left out ({exc}); the base model's tokenizer is used")


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
            _copy_adapter(run.adapter, staging / ADAPTER_DIR, problems)
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
