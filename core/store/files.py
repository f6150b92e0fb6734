"""Crash-safe file writes and tolerant reads for the run folder.

Every writer writes a temporary file next to the target and `os.replace`s it, so a reader
sees the old content or the new one, never half of either. Append-only logs (JSON lines)
are read tolerantly: a torn or corrupt line is skipped and counted.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any


class FileProblem(Exception):
    """A file that is missing or cannot be understood; the message says which and why."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and an atomic replace."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path`, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json_object(path: Path) -> dict[str, Any]:
    """Read a JSON object from `path`; raise FileProblem with a readable reason otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileProblem(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileProblem(f"{path.name} cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileProblem(f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise FileProblem(f"{path.name} holds a {type(data).__name__}, not a JSON object")
    return data


def finite_number(value: Any) -> float | None:
    """`value` as a float when it is a finite number, else None: files from elsewhere may hold
    anything (text, booleans, NaN) where a number belongs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


FileStamp = tuple[str, int, int]


def file_stamp(path: Path) -> FileStamp | None:
    """(path, mtime_ns, size) of a file: it changes whenever the file does, so it keys caches of
    what was read from it; None when the file is absent. One stat call: Compare stamps every
    run's files on each rerun."""
    try:
        info = path.stat()
    except OSError:
        return None
    return str(path), info.st_mtime_ns, info.st_size


def read_json_or_empty(path: Path) -> dict[str, Any]:
    """The JSON object at `path`, or {} when it is missing or unreadable."""
    try:
        return read_json_object(path)
    except FileProblem:
        return {}


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record as a line; a crash mid-write leaves at most a torn last line.

    A torn line left by an earlier crash is closed first, so the new record stays whole.
    """
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "a+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
        handle.flush()


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Read JSON-lines records from `path`; return them and the number of lines skipped.

    A missing file reads as no records. Blank lines are ignored; a line that is not a JSON
    object (a torn last line after a crash, say) is skipped and counted.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records: list[dict[str, Any]] = []
    skipped = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace `path` with these JSON-lines records in one step."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def tail_lines(path: Path, lines: int = 20) -> list[str]:
    """The last `lines` lines of a log file (none if it is missing)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip("\r") for line in text.splitlines()[-lines:]]
