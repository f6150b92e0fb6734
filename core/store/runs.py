"""The run folder contract of DESIGN.md: one folder per run under the runs root.

Nothing but a validated run name reaches the file system. A run folder appears whole or
not at all: it is assembled under a hidden staging name and renamed into place. Reading is
tolerant: a missing or corrupt file gives a run marked broken with the reason, never an
exception for the caller to handle.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.store.files import (
    FileMissing,
    FileProblem,
    finite_number,
    is_real_dir,
    place_new_dir,
    read_json_object,
    staging_dir,
    write_json_atomic,
)
from core.train.config import stored_text_problems

RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STATES = ("queued", "running", "completed", "failed", "stopped")

CONFIG_FILE = "config.json"
RECIPE_FILE = "recipe.json"  # the data recipe a run trains on, copied in when it is created
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
EVENTS_FILE = "events.jsonl"
TRAIN_LOG = "train.log"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
EVAL_DIR = "eval"
RATINGS_FILE = "ratings.json"
MERGED_DIR = "merged"
GGUF_DIR = "gguf"
EXPORT_FILE = "export.json"
CHECKPOINT_PREFIX = "checkpoint-"


class RunNameError(ValueError):
    """A run name that may not be used as a folder name."""


class RunExistsError(FileExistsError):
    """A run of that name is already in the runs root."""


class RunNotFoundError(FileNotFoundError):
    """No run of that name is in the runs root."""


def validate_run_name(name: object) -> str:
    """Return `name` if it is a valid run name, else raise RunNameError saying why."""
    if not isinstance(name, str) or not name.strip():
        raise RunNameError("A run name is required.")
    if RUN_NAME_PATTERN.fullmatch(name):
        return name
    if "/" in name or "\\" in name:
        reason = "it contains a slash"
    elif len(name) > 64:
        reason = f"it is {len(name)} characters long (at most 64)"
    elif not name[0].isascii() or not name[0].isalnum():
        reason = "it must start with a letter or a digit"
    else:
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        reason = "it contains " + ", ".join(repr(c) for c in bad)
    raise RunNameError(
        f"Invalid run name {name!r}: {reason}. Use 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit."
    )


def now_iso() -> str:
    """The current time as an ISO 8601 UTC timestamp (seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def initial_status(state: str = "queued", max_steps: int | None = None) -> dict[str, Any]:
    """A fresh status.json document."""
    now = now_iso()
    return {
        "state": state,
        "pid": None,
        "created_at": now,
        "started_at": None,
        "updated_at": now,
        "ended_at": None,
        "step": 0,
        "max_steps": max_steps,
        "error": None,
    }


def create_run(
    root: Path,
    name: str,
    config: dict[str, Any],
    *,
    status: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    documents: Mapping[str, dict[str, Any]] | None = None,
) -> Path:
    """Create the run folder `root/name` with its files, all at once; return its path.
    `documents` are further JSON files by name (recipe.json: the data the run trains on).

    Raises RunNameError for an invalid name and RunExistsError if the run exists.
    """
    name = validate_run_name(name)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if final.exists():
        raise RunExistsError(f"A run named {name!r} already exists in {root}.")
    with staging_dir(final) as staging:
        write_json_atomic(staging / CONFIG_FILE, config)
        write_json_atomic(staging / STATUS_FILE, status or initial_status())
        if metrics is not None:
            write_json_atomic(staging / METRICS_FILE, metrics)
        for file_name, document in (documents or {}).items():
            write_json_atomic(staging / file_name, document)
        if not place_new_dir(staging, final):
            raise RunExistsError(f"A run named {name!r} already exists in {root}.")
    return final


def merge_document(path: Path, fallback: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Merge `changes` into the JSON object at `path` (or into `fallback` when it is missing or
    unreadable), stamp updated_at, write it atomically and return it."""
    try:
        document = read_json_object(path)
    except FileProblem:
        document = dict(fallback)
    document.update(changes)
    document["updated_at"] = now_iso()
    write_json_atomic(path, document)
    return document


def update_status(path: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into the run's status.json; return the new status.

    The job writes its status while it lives; a launcher writes it only before the job
    starts, and core.jobs records a job found dead under its control lock.
    """
    return merge_document(path / STATUS_FILE, initial_status(), **changes)


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _is_checkpoint_name(path: Path) -> bool:
    name = path.name
    return name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit()


def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint folder `checkpoint-N`, or None if it is not one.

    Complete means its adapter weights are there and its trainer state (written last, and
    not atomically) reads as JSON: a kill mid-save leaves a folder that is not resumable.
    """
    if not _is_checkpoint_name(path) or not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
        return None
    try:
        read_json_object(path / "trainer_state.json")
    except FileProblem:
        return None
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def latest_checkpoint(path: Path) -> Path | None:
    """The run's newest complete checkpoint, or None."""
    folder = path / CHECKPOINTS_DIR
    if not is_real_dir(folder):
        return None
    found = [
        (step, entry)
        for entry in folder.iterdir()
        if is_real_dir(entry) and (step := checkpoint_step(entry)) is not None
    ]
    return max(found)[1] if found else None


def run_gguf_files(path: Path) -> list[Path]:
    """The GGUF files in the run's gguf/ folder, by name: regular files only, no link followed
    (a run folder from elsewhere may point anywhere)."""
    folder = path / GGUF_DIR
    if not is_real_dir(folder):
        return []
    return sorted(entry for entry in folder.glob("*.gguf") if entry.is_file() and not entry.is_symlink())


def remove_incomplete_checkpoints(path: Path) -> list[str]:
    """Delete checkpoint folders a crash left half-written; return their names."""
    folder = path / CHECKPOINTS_DIR
    if not is_real_dir(folder):
        return []
    broken = [
        entry for entry in folder.iterdir() if _is_checkpoint_name(entry) and checkpoint_step(entry) is None
    ]
    for entry in broken:
        if is_real_dir(entry):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)  # a link or a file: removed itself, never what it points at
    return sorted(entry.name for entry in broken)


@dataclass(frozen=True)
class Run:
    """One run folder as read from disk; `problems` lists why it is broken, if it is."""

    name: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def broken(self) -> bool:
        """True when a file of the run is missing or unreadable."""
        return bool(self.problems)

    @property
    def state(self) -> str:
        """The run's state from status.json, or "broken"."""
        return "broken" if self.broken else str(self.status.get("state"))

    @property
    def imported(self) -> bool:
        """True for a metrics-only run imported from an experiments_log.csv."""
        return "imported_from" in self.config


def read_run_folder(path: Path) -> Run:
    """Read the run folder at `path`, never raising for bad content (see open_regular: no
    symbolic link is followed, no file read beyond its cap); text in config.json is checked
    as on creation."""
    problems: list[str] = []
    try:
        validate_run_name(path.name)
    except RunNameError as exc:
        problems.append(f"folder name is not a valid run name ({exc})")
    if path.is_symlink():
        return Run(
            name=path.name, path=path, problems=(*problems, "the run folder is a symbolic link: not followed")
        )
    documents: dict[str, dict[str, Any]] = {}
    unreadable: set[str] = set()
    for filename in (CONFIG_FILE, STATUS_FILE, METRICS_FILE):
        try:
            documents[filename] = read_json_object(path / filename)
        except FileProblem as exc:
            documents[filename] = {}
            unreadable.add(filename)
            missing_metrics_ok = filename == METRICS_FILE and isinstance(exc, FileMissing)
            if not missing_metrics_ok:
                problems.append(str(exc))
    problems += [f"config.json: {problem}" for problem in stored_text_problems(documents[CONFIG_FILE])]
    status = documents[STATUS_FILE]
    state = status.get("state")
    if STATUS_FILE not in unreadable and state not in STATES:
        problems.append(
            "status.json has no state" if state is None else f"status.json has an unknown state {state!r}"
        )
    return Run(
        name=path.name,
        path=path,
        config=documents[CONFIG_FILE],
        status=status,
        metrics=documents[METRICS_FILE],
        problems=tuple(problems),
    )


def load_run(root: Path, name: str) -> Run:
    """Read one run by name; raise RunNotFoundError if there is no such folder."""
    path = root / validate_run_name(name)
    if not path.is_dir():
        raise RunNotFoundError(f"No run named {name!r} in {root}.")
    return read_run_folder(path)


def taken_names(root: Path) -> set[str]:
    """Every name in the runs root a new run may not take (runs, and folders that are not runs)."""
    return {entry.name for entry in root.iterdir()} if root.is_dir() else set()


def list_runs(root: Path) -> list[Run]:
    """All runs under `root`, newest first; hidden and staging folders are left out."""
    if not root.is_dir():
        return []
    runs = [
        read_run_folder(entry)
        for entry in sorted(root.iterdir(), key=lambda p: p.name)
        if entry.is_dir() and not entry.name.startswith(".")
    ]
    runs.sort(key=lambda run: str(run.status.get("created_at") or ""), reverse=True)
    return runs


RUN_TABLE_COLUMNS = {
    "name": "Run",
    "state": "State",
    "base_model": "Base model",
    "dataset": "Dataset slice",
    "lora": "LoRA r/alpha",
    "steps": "Steps",
    "train_loss": "Train loss",
    "runtime_s": "Runtime (s)",
    "peak_memory_gb": "Peak memory (GB)",
    "lora_memory_gb": "LoRA memory (GB)",
    "device": "Device",
    "note": "Note",
}


def _lora_label(config: dict[str, Any]) -> str | None:
    r, alpha = config.get("lora_r"), config.get("lora_alpha")
    if r is None and alpha is None:
        return None
    return f"{'?' if r is None else r}/{'?' if alpha is None else alpha}"


def _dataset_label(config: dict[str, Any]) -> str | None:
    dataset, split = config.get("dataset"), config.get("split")
    parts = [str(dataset).rstrip("/").rsplit("/", 1)[-1] if dataset else None, split]
    return " ".join(str(p) for p in parts if p) or None


def _steps_label(run: Run) -> str | None:
    max_steps = run.status.get("max_steps") or run.config.get("max_steps")
    if run.state == "completed" or run.broken:
        return None if max_steps is None else str(max_steps)
    step = run.status.get("step") or 0
    return f"{step}/{max_steps if max_steps is not None else '?'}"


def _device_label(metrics: dict[str, Any]) -> str | None:
    device = metrics.get("device")
    if device and metrics.get("memory_measure") == "process_rss":
        return f"{device} (process RSS)"
    return device


def _text(value: Any) -> str | None:
    """A value from a run's files as table text: files from elsewhere may hold any JSON there."""
    return None if value is None else str(value)


def run_summary(run: Run) -> dict[str, Any]:
    """One row of the runs table (keys of RUN_TABLE_COLUMNS), shared by the UI and the CLI: text
    columns hold text and number columns finite numbers, whatever the files hold."""
    config, metrics = run.config, run.metrics
    if run.broken:
        note = "; ".join(run.problems)
    elif run.status.get("error"):
        note = str(run.status["error"])
    else:
        note = config.get("note") or ("imported" if run.imported or "origin" in config else None)
    return {
        "name": run.name,
        "state": run.state,
        "base_model": _text(config.get("base_model")),
        "dataset": _dataset_label(config),
        "lora": _lora_label(config),
        "steps": _steps_label(run),
        "train_loss": finite_number(metrics.get("train_loss")),
        "runtime_s": finite_number(metrics.get("train_runtime_s")),
        "peak_memory_gb": finite_number(metrics.get("peak_memory_gb")),
        "lora_memory_gb": finite_number(metrics.get("lora_memory_gb")),
        "device": _text(_device_label(metrics)),
        "note": _text(note),
    }
