"""Crash-safe file writes and tolerant reads for the run folder.

Every writer writes a temporary file next to the target and `os.replace`s it, so a reader
sees the old content or the new one, never half of either. Folders (a run, an adapter, a
merged model, a built or fetched tool) are built the same way: under a hidden name beside
their place (`staging_dir`), then put in place in one step (`replace_dir`, `place_new_dir`);
`delete_dir` takes a folder away in one step before deleting it. Append-only logs (JSON
lines) are read tolerantly: a torn or corrupt line is skipped and counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
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


# --- folders: build beside, then put in place in one step -------------------------------------

_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # linux/fs.h
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


@functools.cache
def _renameat2() -> Any:
    """Linux's renameat2 from the C library, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _rename_with(flag: int, source: Path, target: Path) -> bool:
    """renameat2(source, target, flag); False where the system or the file system has no such
    rename (the caller then does without), OSError when it fails."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flag) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(target))


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step; False where that cannot be done here."""
    return _rename_with(_RENAME_EXCHANGE, first, second)


def hidden_beside(target: Path, purpose: str) -> Path:
    """A fresh hidden name beside `target` (`.NAME.RANDOM.PURPOSE`) that no reader takes for it."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.{purpose}")


def _remove(path: Path) -> None:
    """Delete a folder or file; what cannot be deleted stays (under its hidden name)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A new, empty hidden folder beside `target` to build its next content in; whatever is
    left of it when the block ends (the build failed, or it was not put in place) is deleted.

        with staging_dir(run / "merged") as staging:
            model.save_pretrained(staging)
            replace_dir(staging, run / "merged")
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = hidden_beside(target, "partial")
    staging.mkdir()
    try:
        yield staging
    finally:
        _remove(staging)


def replace_dir(staging: Path, target: Path) -> None:
    """Put the folder `staging` at `target`, replacing what is there, in one step.

    Where Linux can swap the two atomically, it does, and the old folder (now under the
    staging name) is deleted: at every moment `target` holds the old folder or the new one,
    complete, and a crash leaves at most a hidden folder beside it. Elsewhere the old folder is
    renamed aside to a hidden name, the new one renamed in, and the old one deleted; a failure
    between the two renames puts the old one back (only a crash of the process right there
    leaves the old folder under its hidden name and none at `target`). `staging` must lie on
    the same file system as `target`: beside it, as staging_dir makes it. One writer per
    `target` at a time.
    """
    if not staging.is_dir() or staging.is_symlink():
        raise FileNotFoundError(errno.ENOENT, "no folder to put in place", str(staging))
    aside = None
    if os.path.lexists(target):
        if _exchange(staging, target):
            _remove(staging)
            return
        aside = hidden_beside(target, "old")
        os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        if aside is not None:
            os.rename(aside, target)
        raise
    if aside is not None:
        _remove(aside)


def place_new_dir(staging: Path, target: Path) -> bool:
    """Rename the folder `staging` to `target` when nothing is there; False, and `staging` left
    as it is, when something is (a run of that name, a tool another process has built)."""
    if os.path.lexists(target):
        return False
    try:
        if not _rename_with(_RENAME_NOREPLACE, staging, target):
            os.rename(staging, target)  # without renameat2 an empty folder at `target` is replaced
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def delete_dir(path: Path) -> None:
    """Delete the folder `path`. It is renamed to a hidden name first, so it leaves its place
    at once and a failure or crash half-way leaves a hidden leftover, never a half-deleted
    folder under its name. FileNotFoundError when there is none."""
    doomed = hidden_beside(path, "deleting")
    os.rename(path, doomed)
    _remove(doomed)
