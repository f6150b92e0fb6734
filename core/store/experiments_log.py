"""The lab's `experiments_log.csv`: imported as metrics-only runs, exported from run folders.

The CSV is an exchange format derived from run folders, never the source of truth. Its
columns are the lab's schema, LOG_COLUMNS. Reading is row by row: a malformed row is
reported with its line number and skipped, the other rows still import. A file is imported
only up to MAX_IMPORT_BYTES and MAX_IMPORT_ROWS, its runs created together (bulk_runs). Text
cells are written so that no spreadsheet takes them for a formula, and read back as they were
(csv_cells).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.store.bulk_runs import NewRun, create_runs
from core.store.csv_cells import csv_cell, restore_cell
from core.store.runs import Run, RunNameError, initial_status, validate_run_name

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
# Facts the lab's schema has no column for. Export writes them after the schema's columns
# (readers that go by column name are unaffected); import reads them when present.
# peak_gpu_GB and lora_gpu_GB are the lab's memory figures; the training_ columns are the
# same since training started (peak stats reset then; see core.train.memory).
EXTRA_COLUMNS = ("lora_alpha", "dataset", "device", "note", "training_peak_gpu_GB", "training_gpu_GB")
_WHOLE_NUMBER_COLUMNS = ("lora_r", "max_steps", "lora_alpha")
_DECIMAL_COLUMNS = (
    "train_loss",
    "train_runtime_sec",
    "peak_gpu_GB",
    "lora_gpu_GB",
    "training_peak_gpu_GB",
    "training_gpu_GB",
)
_MISSING_NUMBER_MARKERS = {"", "nan", "none", "null", "n/a", "na", "-"}
_WHOLE_NUMBER = re.compile(r"\d+(\.0*)?", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
# str.splitlines' line boundaries, found one at a time (see _lines).
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Bounds of one import. The Home page's upload limit is the same size (server.maxUploadSize in
# .streamlit/config.toml); 10,000 rows take a few seconds to import and fit in it.
MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_IMPORT_ROWS = 10_000
_SIZE_SLICE = 1 << 20  # characters encoded at a time to measure a text's size


class LogFormatError(ValueError):
    """The file as a whole is not an experiments_log.csv (no header, missing columns)."""


@dataclass(frozen=True)
class LogRow:
    """One parsed data row: its line number in the file and its typed values.

    `values` holds every LOG_COLUMNS key and those EXTRA_COLUMNS the file has.
    """

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
            parts.append(f"{len(self.problems)} row(s) skipped")
        return ", ".join(parts)


def _parse_cell(column: str, raw: str) -> Any:
    text = restore_cell(raw.strip())
    if column not in _WHOLE_NUMBER_COLUMNS + _DECIMAL_COLUMNS:
        return text or None
    if text.lower() in _MISSING_NUMBER_MARKERS:
        return None
    if column in _WHOLE_NUMBER_COLUMNS:
        whole = int(text.split(".")[0]) if _WHOLE_NUMBER.fullmatch(text) else 0
        if whole <= 0:
            raise ValueError(f"{column} {raw!r} is not a positive whole number")
        return whole
    number = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{column} {raw!r} is not a finite, non-negative number")
    return abs(number)  # turns -0.0 into 0.0


def _header(cells: list[str], line: int) -> list[str]:
    header = [cell.strip() for cell in cells]
    missing = [column for column in LOG_COLUMNS if column not in header]
    if missing:
        raise LogFormatError(
            f"Not an experiments_log.csv: line {line} lacks the column(s) {', '.join(missing)}. "
            f"Expected: {','.join(LOG_COLUMNS)}"
        )
    repeated = sorted({c for c in header if header.count(c) > 1 and c in LOG_COLUMNS + EXTRA_COLUMNS})
    if repeated:
        raise LogFormatError(f"Line {line} names the column(s) {', '.join(repeated)} more than once.")
    return header


def _lines(text: str) -> Iterator[str]:
    """The lines of `text` as str.splitlines gives them, one at a time: a big text is not copied
    into a list of lines."""
    start = 0
    for end in _LINE_BREAK.finditer(text):
        yield text[start : end.start()]
        start = end.end()
    if start < len(text):
        yield text[start:]


def _filled_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line of `text` that is not blank, a leading byte order mark
    dropped."""
    for number, physical in enumerate(_lines(text), start=1):
        if number == 1:
            physical = physical.lstrip("\ufeff")
        if physical.strip():
            yield number, physical


def _utf8_size(text: str) -> int:
    """The size of `text` in UTF-8 bytes, encoded a slice at a time (never all of it at once)."""
    return sum(
        len(text[start : start + _SIZE_SLICE].encode("utf-8", "surrogatepass"))
        for start in range(0, len(text), _SIZE_SLICE)
    )


def check_import_size(size: int) -> None:
    """Raise LogFormatError when a file of `size` bytes is larger than an import takes."""
    if size > MAX_IMPORT_BYTES:
        raise LogFormatError(
            f"The file is {size:,} bytes ({size / 2**20:.1f} MB); an import takes at most "
            f"{MAX_IMPORT_BYTES:,} bytes ({MAX_IMPORT_BYTES / 2**20:g} MB). Split it into smaller files."
        )


def _check_bounds(text: str) -> None:
    """Raise LogFormatError when `text` is larger than MAX_IMPORT_BYTES or has more than
    MAX_IMPORT_ROWS rows (non-blank lines after the header)."""
    check_import_size(_utf8_size(text))
    rows = sum(1 for _ in _filled_lines(text)) - 1  # the first is the header
    if rows > MAX_IMPORT_ROWS:
        raise LogFormatError(
            f"The file has {rows:,} rows; an import takes at most {MAX_IMPORT_ROWS:,}. "
            "Split it into smaller files."
        )


def parse_log(text: str) -> tuple[list[LogRow], list[str]]:
    """Parse the CSV text; return the good rows and one message per skipped row.

    Each physical line is one row (the schema has no multi-line values), so an unbalanced
    quote costs only its own line. Raises LogFormatError when the text is larger than
    MAX_IMPORT_BYTES or has more than MAX_IMPORT_ROWS rows, or when the header is missing,
    lacks a schema column or repeats one.
    """
    _check_bounds(text)
    header: list[str] | None = None
    rows: list[LogRow] = []
    problems: list[str] = []
    first_line_of: dict[str, int] = {}
    for line, physical in _filled_lines(text):
        try:
            cells = next(csv.reader([physical], strict=True))
        except csv.Error as exc:
            if header is None:
                raise LogFormatError(f"Line {line} is not a CSV header ({exc}).") from None
            problems.append(f"line {line}: not valid CSV ({exc})")
            continue
        if header is None:
            header = _header(cells, line)
            continue
        if len(cells) != len(header):
            problems.append(f"line {line}: {len(cells)} fields where the header has {len(header)}")
            continue
        cell_of = dict(zip(header, cells))
        try:
            values = {column: _parse_cell(column, cell_of[column]) for column in LOG_COLUMNS}
            values.update({c: _parse_cell(c, cell_of[c]) for c in EXTRA_COLUMNS if c in cell_of})
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
    if header is None:
        raise LogFormatError("The file is empty: an experiments_log.csv needs a header row.")
    return rows, problems


def run_documents(
    row: LogRow, source: str, details: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The config, status and metrics documents of the metrics-only run for `row`.

    `details` supplies EXTRA_COLUMNS facts the row leaves empty.
    """
    values = row.values
    extra = {
        column: values[column] if values.get(column) is not None else (details or {}).get(column)
        for column in EXTRA_COLUMNS
    }
    config = {
        "base_model": values["model_name"],
        "dataset": extra["dataset"],
        "split": values["dataset_split"],
        "lora_r": values["lora_r"],
        "lora_alpha": extra["lora_alpha"],
        "max_steps": values["max_steps"],
        "imported_from": {"file": source, "line": row.line},
    }
    if extra["note"]:
        config["note"] = extra["note"]
    status = initial_status("completed", max_steps=values["max_steps"])
    status["step"] = values["max_steps"]
    metrics = {
        "train_loss": values["train_loss"],
        "train_runtime_s": values["train_runtime_sec"],
        "peak_memory_gb": values["peak_gpu_GB"],
        "lora_memory_gb": values["lora_gpu_GB"],
        "memory_measure": "cuda_reserved",
        "device": extra["device"],
    }
    for key, column in (
        ("training_peak_memory_gb", "training_peak_gpu_GB"),
        ("training_memory_gb", "training_gpu_GB"),
    ):
        if extra[column] is not None:
            metrics[key] = extra[column]
    return config, status, metrics


def import_log(
    root: Path,
    text: str,
    *,
    source: str,
    details: dict[str, dict[str, Any]] | None = None,
) -> ImportReport:
    """Import every good row of `text` into `root` as a metrics-only run, all runs together
    (create_runs).

    `details` maps run names to EXTRA_COLUMNS facts. Existing runs are left unchanged; a
    row whose run cannot be written is reported like a malformed one. Raises
    LogFormatError if the file as a whole is unusable (see parse_log); creates nothing then.
    """
    rows, problems = parse_log(text)

    def new_runs() -> Iterator[NewRun]:
        for row in rows:
            name = row.values["run_name"]
            config, status, metrics = run_documents(row, source, (details or {}).get(name))
            yield NewRun(name, config, status, metrics)

    created = create_runs(root, new_runs())
    failed = [
        f"line {row.line}: run {name!r} could not be written ({created.failed[name]})"
        for row in rows
        if (name := row.values["run_name"]) in created.failed
    ]
    return ImportReport(created.created, created.existing, problems + failed)


def log_row(run: Run) -> dict[str, Any] | None:
    """The experiments_log row (schema and extra columns) of a completed run, else None."""
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
        "lora_alpha": config.get("lora_alpha"),
        "dataset": config.get("dataset"),
        "device": metrics.get("device"),
        "note": config.get("note"),
        "training_peak_gpu_GB": metrics.get("training_peak_memory_gb") if on_gpu else None,
        "training_gpu_GB": metrics.get("training_memory_gb") if on_gpu else None,
    }


def _format_cell(value: Any) -> str:
    return csv_cell(" ".join(value.split()) if isinstance(value, str) else value)


@dataclass(frozen=True)
class LogExport:
    """An exported experiments_log.csv and which runs it holds or leaves out."""

    text: str
    exported: list[str]
    left_out: list[str]


def export_log(runs: Iterable[Run]) -> LogExport:
    """The CSV of all completed runs in run-name order (the same runs give the same file, whenever
    and wherever they were made or imported); broken and unfinished runs are left out."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = LOG_COLUMNS + EXTRA_COLUMNS
    writer.writerow(columns)
    exported: list[str] = []
    left_out: list[str] = []
    for run in sorted(runs, key=lambda run: run.name):
        row = log_row(run)
        if row is None:
            left_out.append(run.name)
            continue
        writer.writerow([_format_cell(row[column]) for column in columns])
        exported.append(run.name)
    return LogExport(buffer.getvalue(), exported, left_out)
