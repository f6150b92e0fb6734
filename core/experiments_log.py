"""The lab's `experiments_log.csv`: imported as metrics-only runs, exported from run folders.

The CSV is an exchange format derived from run folders, never the source of truth. Its
columns are the lab's schema, LOG_COLUMNS. Reading is row by row: a malformed row is
reported with its line number and skipped, the other rows still import.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.runs import Run, RunExistsError, RunNameError, create_run, initial_status, validate_run_name

LOG_COLUMNS = (
    "run_name",
    "model_name",
    "dataset_split",
    "lora_r",
    "max_steps",
    "train_loss",
    "train_runtime_sec",
    "peak_gpu_GB",
    "lora_gpu_GB",
)
_WHOLE_NUMBER_COLUMNS = ("lora_r", "max_steps")
_DECIMAL_COLUMNS = ("train_loss", "train_runtime_sec", "peak_gpu_GB", "lora_gpu_GB")
_MISSING_MARKERS = {"", "nan", "none", "null", "n/a", "na", "-"}
# Extra facts a run can carry beyond the schema (the seed's details file supplies them).
DETAIL_KEYS = ("dataset", "lora_alpha", "device", "note")


class LogFormatError(ValueError):
    """The file as a whole is not an experiments_log.csv (no header, missing columns)."""


@dataclass(frozen=True)
class LogRow:
    """One parsed data row: its first line number in the file and its typed values."""

    line: int
    values: dict[str, Any]


@dataclass
class ImportReport:
    """What an import did: runs created, runs that already existed, rows skipped and why."""

    imported: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a person."""
        parts = [f"imported {len(self.imported)} run(s)"]
        if self.existing:
            parts.append(f"{len(self.existing)} already present (left unchanged)")
        if self.problems:
            parts.append(f"{len(self.problems)} malformed row(s) skipped")
        return ", ".join(parts)


def _parse_cell(column: str, raw: str) -> Any:
    text = raw.strip()
    if text.lower() in _MISSING_MARKERS:
        return None
    if column in _WHOLE_NUMBER_COLUMNS:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{column} {raw!r} is not a number") from None
        if not number.is_integer() or number <= 0:
            raise ValueError(f"{column} {raw!r} is not a positive whole number")
        return int(number)
    if column in _DECIMAL_COLUMNS:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{column} {raw!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{column} {raw!r} is not a finite, non-negative number")
        return number
    return text


def parse_log(text: str) -> tuple[list[LogRow], list[str]]:
    """Parse the CSV text; return the good rows and one message per skipped row.

    Raises LogFormatError when the header is missing or lacks a schema column.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header: list[str] | None = None
    rows: list[LogRow] = []
    problems: list[str] = []
    first_line_of: dict[str, int] = {}
    previous_end = 0
    try:
        for cells in reader:
            line, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip() for cell in cells]
                missing = [c for c in LOG_COLUMNS if c not in header]
                if missing:
                    raise LogFormatError(
                        f"Not an experiments_log.csv: line {line} lacks the column(s) "
                        f"{', '.join(missing)}. Expected: {','.join(LOG_COLUMNS)}"
                    )
                continue
            if len(cells) != len(header):
                problems.append(f"line {line}: {len(cells)} fields where the header has {len(header)}")
                continue
            cell_of = dict(zip(header, cells))
            try:
                values = {column: _parse_cell(column, cell_of[column]) for column in LOG_COLUMNS}
                validate_run_name(values["run_name"])
            except (ValueError, RunNameError) as exc:
                problems.append(f"line {line}: {exc}")
                continue
            name = values["run_name"]
            if name in first_line_of:
                problems.append(f"line {line}: run {name!r} repeats line {first_line_of[name]}")
                continue
            first_line_of[name] = line
            rows.append(LogRow(line=line, values=values))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: unreadable CSV ({exc}); the rest of the file was not read")
    if header is None:
        raise LogFormatError("The file is empty: an experiments_log.csv needs a header row.")
    return rows, problems


def run_documents(
    row: LogRow, source: str, details: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The config, status and metrics documents of the metrics-only run for `row`."""
    values, details = row.values, details or {}
    config = {
        "base_model": values["model_name"],
        "dataset": details.get("dataset"),
        "split": values["dataset_split"],
        "lora_r": values["lora_r"],
        "lora_alpha": details.get("lora_alpha"),
        "max_steps": values["max_steps"],
        "imported_from": {"file": source, "line": row.line},
    }
    if details.get("note"):
        config["note"] = details["note"]
    status = initial_status("completed", max_steps=values["max_steps"])
    status["step"] = values["max_steps"]
    metrics = {
        "train_loss": values["train_loss"],
        "train_runtime_s": values["train_runtime_sec"],
        "peak_memory_gb": values["peak_gpu_GB"],
        "lora_memory_gb": values["lora_gpu_GB"],
        "memory_measure": "cuda_reserved",
        "device": details.get("device"),
    }
    return config, status, metrics


def import_log(
    root: Path,
    text: str,
    *,
    source: str,
    details: dict[str, dict[str, Any]] | None = None,
) -> ImportReport:
    """Import every good row of `text` into `root` as a metrics-only run.

    `details` maps run names to extra facts (DETAIL_KEYS). Existing runs are left unchanged.
    Raises LogFormatError if the file as a whole is unusable; creates nothing then.
    """
    rows, problems = parse_log(text)
    report = ImportReport(problems=problems)
    for row in rows:
        name = row.values["run_name"]
        config, status, metrics = run_documents(row, source, (details or {}).get(name))
        try:
            create_run(root, name, config, status=status, metrics=metrics)
        except RunExistsError:
            report.existing.append(name)
        else:
            report.imported.append(name)
    return report


def log_row(run: Run) -> dict[str, Any] | None:
    """The experiments_log row of a completed run, or None for any other run."""
    if run.broken or run.state != "completed":
        return None
    config, metrics = run.config, run.metrics
    on_gpu = metrics.get("memory_measure") == "cuda_reserved"
    return {
        "run_name": run.name,
        "model_name": config.get("base_model"),
        "dataset_split": config.get("split"),
        "lora_r": config.get("lora_r"),
        "max_steps": config.get("max_steps"),
        "train_loss": metrics.get("train_loss"),
        "train_runtime_sec": metrics.get("train_runtime_s"),
        "peak_gpu_GB": metrics.get("peak_memory_gb") if on_gpu else None,
        "lora_gpu_GB": metrics.get("lora_memory_gb") if on_gpu else None,
    }


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def export_log(runs: Iterable[Run]) -> tuple[str, list[str]]:
    """The CSV text for all completed runs, and the names of the runs left out."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    left_out: list[str] = []
    for run in runs:
        row = log_row(run)
        if row is None:
            left_out.append(run.name)
            continue
        writer.writerow([_format_cell(row[column]) for column in LOG_COLUMNS])
    return buffer.getvalue(), left_out
