"""Crash-safe file writes and tolerant reads for the run folder.

Every writer writes a temporary file next to the target and `os.replace`s it, so a reader
sees the old content or the new one, never half of either. Folders (a run, an adapter, a
merged model, a built or fetched tool) are built the same way: under a hidden name beside
their place (`staging_dir`), then put in place in one step (`replace_dir`, `place_new_dir`);
`delete_dir` takes a folder away in one step before deleting it. Append-only logs (JSON
lines) are read tolerantly: a torn or corrupt line is skipped and counted.

Run folders may come from elsewhere (an import, a sync, a copy), so every run-folder read and
write opens its file through `open_regular`: a symbolic link is never followed (neither the
file nor the folder it is in), only regular files are opened (a FIFO or a device named
`metrics.json` is refused without blocking), and reads stop at a size cap per kind of file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import math
import os
import re
import shutil
import stat
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


class FileProblem(OSError):
    """A file that is missing or cannot be understood; the message says which and why."""


class FileMissing(FileProblem):
    """The file is not there (readers that take a missing file as empty catch this one)."""


MAX_DOCUMENT_BYTES = 1 << 20  # config.json, status.json, metrics.json, a job's state: small documents
MAX_RECORDS_BYTES = 16 << 20  # JSON-lines records (answers, events): ~50,000 logged steps
TAIL_BYTES = 64 << 10  # what tail_lines reads from the end of a log

_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@contextlib.contextmanager
def _folder_of(path: Path) -> Iterator[int]:
    """A descriptor of the folder `path` lies in, opened without following a symbolic link."""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)
    try:
        yield folder
    finally:
        os.close(folder)


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """Open `path` as the run folder's files are opened; return the descriptor.

    Neither the file nor its folder may be a symbolic link (OSError ELOOP or ENOTDIR), and
    the file must be a regular one (OSError EINVAL for a FIFO, a device or a folder): nothing
    planted in a run folder is followed, blocks a reader, or streams without end. With
    os.O_CREAT in `flags` the file is created when missing.
    """
    with _folder_of(path) as folder:
        descriptor = os.open(path.name, flags | _NO_FOLLOW, mode, dir_fd=folder)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path` (see open_regular); FileProblem when it is missing,
    cannot be opened, or holds more than `limit` bytes (nothing beyond the cap is read)."""
    try:
        descriptor = open_regular(path)
    except FileNotFoundError:
        raise FileMissing(f"{path.name} is missing") from None
    except OSError as exc:
        raise FileProblem(f"{path.name} cannot be read ({why_not_opened(exc)})") from None
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileProblem(f"{path.name} is larger than {limit:,} bytes: not read")
    return data


def why_not_opened(exc: OSError) -> str:
    """Why open_regular refused a file, in words."""
    if exc.errno == errno.ELOOP:
        return "it or its folder is a symbolic link, which is not followed"
    if exc.errno == errno.ENOTDIR:
        return "its folder is not a folder"
    return exc.strerror or str(exc)  # EINVAL: "not a regular file"


def regular_files(folder: Path, prefix: str = "") -> dict[str, os.stat_result]:
    """The regular files under `folder` by `/`-separated relative path (after `prefix`), with
    their stat: no link is followed and hidden names (a write in progress, a lock) are skipped;
    a folder that cannot be read is left out."""
    found: dict[str, os.stat_result] = {}
    pending = [(prefix, folder)]
    while pending:
        start, current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                pending.append((f"{start}{entry.name}/", Path(entry.path)))
            elif stat.S_ISREG(info.st_mode):
                found[start + entry.name] = info
    return found


def write_file_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Fill `path` by `write(handle)` through a temporary file and an atomic replace. The
    temporary file is created new (never opened through a planted link) in the folder opened
    without following a link, and the replace puts a regular file where any link or file was;
    if `write` raises, `path` is left as it was."""
    tmp = f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    with _folder_of(path) as folder:
        try:
            descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o644, dir_fd=folder)
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # in use: sweep_debris leaves it alone
            with os.fdopen(descriptor, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
            raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` (UTF-8) through a temporary file and an atomic replace
    (write_file_atomic)."""
    write_file_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def json_document(data: Any) -> str:
    """`data` as the run folder's JSON documents are written: indented, UTF-8, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path`, atomically."""
    write_text_atomic(path, json_document(data))


def sync_file_system(path: Path) -> None:
    """Flush everything written to the file system that holds `path` (Linux's syncfs; os.sync,
    every file system, elsewhere)."""
    function = getattr(_libc(), "syncfs", None) if _libc() is not None else None
    if function is None:
        os.sync()
        return
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if function(descriptor) != 0:
            os.sync()
    finally:
        os.close(descriptor)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_value(text: str) -> Any:
    """json.loads, refusing what no page or file could hold: a lone surrogate (`\\ud800`) from an
    escape raises UnicodeEncodeError (a ValueError), as writing or showing it would later."""
    data = json.loads(text)
    if _SURROGATE_ESCAPE.search(text):
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    return data


def read_json_object(path: Path, limit: int = MAX_DOCUMENT_BYTES) -> dict[str, Any]:
    """Read a JSON object of at most `limit` bytes from `path` (see read_capped); raise
    FileProblem with a readable reason otherwise."""
    try:
        text = read_capped(path, limit).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{path.name} cannot be read ({exc})") from None
    try:
        data = json_value(text)
    except RecursionError:
        raise FileProblem(f"{path.name} is nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise FileProblem(f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:  # a number of more digits than Python converts, a lone surrogate
        raise FileProblem(f"{path.name} cannot be read ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise FileProblem(f"{path.name} holds a {type(data).__name__}, not a JSON object")
    return data


def finite_number(value: Any) -> float | None:
    """`value` as a float when it is a finite number, else None: files from elsewhere may hold
    anything (text, booleans, NaN) where a number belongs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)  # an int of over 308 digits does not fit
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


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
    with os.fdopen(open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT), "a+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
        handle.flush()


def read_jsonl(path: Path, limit: int = MAX_RECORDS_BYTES) -> tuple[list[dict[str, Any]], int]:
    """Read JSON-lines records from `path`; return them and the number of lines skipped.

    A missing file reads as no records. Blank lines are ignored; a line that is not a JSON
    object (a torn last line after a crash, say) is skipped and counted. FileProblem when the
    file cannot be opened as a regular file or is larger than `limit` bytes.
    """
    try:
        raw = read_capped(path, limit)
    except FileMissing:
        return [], 0
    records: list[dict[str, Any]] = []
    skipped = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            record = json_value(line.decode("utf-8"))
        except (ValueError, RecursionError):  # not JSON, not UTF-8, a number too long, too deep
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
    """The last `lines` lines of a log file, from its last TAIL_BYTES (none if it is missing or
    not a regular file)."""
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = handle.read(TAIL_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip("\r") for line in text.splitlines()[-lines:]]


# --- folders: build beside, then put in place in one step -------------------------------------

_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # linux/fs.h
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


@functools.cache
def _libc() -> Any:
    """Linux's C library, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


@functools.cache
def _renameat2() -> Any:
    """Linux's renameat2 from the C library, or None where there is none."""
    function = getattr(_libc(), "renameat2", None) if _libc() is not None else None
    if function is None:
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


def is_real_dir(path: Path) -> bool:
    """True for a folder that is not a symbolic link: a run's subfolders are never followed."""
    return path.is_dir() and not path.is_symlink()


def folder_size(folder: Path) -> int:
    """Bytes taken by the regular files in `folder` and its subfolders, no link followed; 0 when
    it is no real folder. What cannot be read counts nothing."""
    if not is_real_dir(folder):
        return 0
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(parent, name))
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def hidden_beside(target: Path, purpose: str) -> Path:
    """A fresh hidden name beside `target` (`.NAME.RANDOM.PURPOSE`) that no reader takes for it."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.{purpose}")


DEBRIS_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.(partial|old|deleting|tmp)")


def _hold(descriptor: int) -> bool:
    """Take an exclusive flock on `descriptor` without waiting; False when another holds one."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def sweep_debris(folder: Path) -> list[str]:
    """Delete what killed writers left in `folder`: hidden staging folders and temporary files
    (`.NAME.RANDOM.partial` / `.tmp`), folders set aside or being deleted (`.old`,
    `.deleting`); return their names. A staging folder or temporary file still being written
    is held under an flock by its writer (staging_dir, write_text_atomic) and left alone. A
    folder that is a symbolic link is not swept: what it points at is not ours."""
    if not is_real_dir(folder):
        return []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    swept = []
    for entry in entries:
        if not DEBRIS_NAME.fullmatch(entry.name):
            continue
        try:
            descriptor = os.open(entry.path, os.O_RDONLY | _NO_FOLLOW)
        except OSError:  # a link, or gone already: a link is removed, not followed
            if entry.is_symlink():
                _remove(Path(entry.path))
                swept.append(entry.name)
            continue
        try:
            if _hold(descriptor):
                _remove(Path(entry.path))
                swept.append(entry.name)
        finally:
            os.close(descriptor)
    return swept


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
    held = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # in use: sweep_debris leaves it alone
        yield staging
    finally:
        _remove(staging)
        os.close(held)


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
