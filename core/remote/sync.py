"""Mirroring a runs root to a remote (core.remote.stores) and back, file by file, each file
written by one side only.

What moves: a run's light files always (config, status, events, metrics, logs, eval/,
ratings, export.json, jobs/ state and logs, a stop request); its adapter/ once the run is
completed; checkpoints/, gguf/ and merged/ only on request (`extras`).

**Each file has one writer.** A side is a runs root (core.store.paths.runs_root_side). The side
whose job writes a file owns it: training's files (status.json, events, metrics, train.log,
adapter/, checkpoints/) belong to the side named in status.json, an evaluation's or an
export's to the side named in jobs/<kind>.json; ratings.json and a stop request belong to the
side named inside them. A push sends only what this side owns; a pull fetches only what it
does not, and never replaces a file this side owns. config.json, written once when a run is
created, and any file whose owner is not recorded, are copied only where they are missing.
So two sides syncing at once lose nothing.

**Incremental.** A manifest in the runs root (`.sync/<remote>.json`) keeps, for every file
moved or seen in place, its local size and modification time and the remote's stamp; a file
unchanged on both sides is not sent again.

Everything read from a remote is untrusted: paths must name a run (a valid run name) and a
file the contract knows, sizes are capped, downloads are written atomically without
following links, and a new run appears whole (its files gathered in a staging folder first).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.evaluate.ratings import SIDE_KEY
from core.remote.stores import RemoteError, RemoteFile, RemoteStore
from core.store.files import (
    MAX_DOCUMENT_BYTES,
    FileProblem,
    json_value,
    place_new_dir,
    read_capped,
    read_json_object,
    regular_files,
    staging_dir,
    write_file_atomic,
    write_json_atomic,
)
from core.store.paths import runs_root_side
from core.store.runs import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVAL_DIR,
    EXPORT_FILE,
    GGUF_DIR,
    MERGED_DIR,
    RATINGS_FILE,
    STATUS_FILE,
    RunNameError,
    validate_run_name,
)

STOP_REQUEST_FILE = "stop-request.json"  # written by a dashboard for a run whose job runs elsewhere
EXTRAS = ("checkpoints", "gguf", "merged")
MANIFEST_DIR = ".sync"
LIGHT_FILE_BYTES = 64 << 20  # a log, events, answers: far below this
HEAVY_FILE_BYTES = 64 << 30  # an adapter, a checkpoint's shard, a GGUF, a merged model's shard
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_JOB_FILE = re.compile(r"(?P<kind>[a-z]{1,20})(?:\.launch)?\.(?:json|log)")
_TRAINING_FILES = ("status.json", "events.jsonl", "metrics.json", "train.log")
_LIGHT_FILES = (CONFIG_FILE, *_TRAINING_FILES, RATINGS_FILE, EXPORT_FILE, STOP_REQUEST_FILE)


@dataclass
class SyncReport:
    """What one push or pull did."""

    sent: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # the other side's copy left alone: this side's file
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: files sent, received and kept, and problems."""
        parts = [f"{len(self.sent)} sent", f"{len(self.received)} received"]
        if self.kept:
            parts.append(f"{len(self.kept)} of this side's kept")
        if self.problems:
            parts.append(f"{len(self.problems)} problems")
        return ", ".join(parts)


# --- which files move, and whose they are --------------------------------------------------


def file_kind(relative: str) -> str | None:
    """What a run-relative path is to a sync: "light", "adapter", an extra ("checkpoints",
    "gguf", "merged"), or None for anything a sync never moves (locks, hidden files, unknown)."""
    parts = relative.split("/")
    if not all(_PART.fullmatch(part) for part in parts):
        return None
    if len(parts) == 1:
        return "light" if parts[0] in _LIGHT_FILES else None
    top = parts[0]
    if top == EVAL_DIR and len(parts) == 2:
        return "light"
    if top == "jobs" and len(parts) == 2 and _JOB_FILE.fullmatch(parts[1]):
        return "light"
    if top == ADAPTER_DIR and len(parts) == 2:
        return "adapter"
    if top == CHECKPOINTS_DIR and len(parts) == 3:
        return "checkpoints"
    if top in (GGUF_DIR, MERGED_DIR) and len(parts) == 2:
        return top
    return None


def _owner_document(relative: str) -> str | None:
    """The run-relative document that names the owner of `relative` (itself for a document that
    carries its own side), or None for a file written once (config.json)."""
    parts = relative.split("/")
    if relative == CONFIG_FILE:
        return None
    if relative in (RATINGS_FILE, STOP_REQUEST_FILE):
        return relative
    if relative in _TRAINING_FILES or parts[0] in (ADAPTER_DIR, CHECKPOINTS_DIR):
        return STATUS_FILE
    if parts[0] == "jobs":
        return f"jobs/{_JOB_FILE.fullmatch(parts[1])['kind']}.json"
    if parts[0] == EVAL_DIR:
        return "jobs/bench.json" if parts[1].startswith("bench-") else "jobs/eval.json"
    return "jobs/export.json"  # export.json, gguf/, merged/


def _side_in(document: dict[str, Any], relative: str) -> str | None:
    side = document.get(SIDE_KEY if relative == RATINGS_FILE else "side")
    return side if isinstance(side, str) and side else None


class _Owners:
    """The owner of each file of one side's copy, reading each owner document once."""

    def __init__(self, read: Any):
        self._read = read  # run-relative path -> dict (empty when missing or unreadable)
        self._documents: dict[str, dict[str, Any]] = {}

    def owner(self, run: str, relative: str) -> str | None:
        document = _owner_document(relative)
        if document is None:
            return None
        key = f"{run}/{document}"
        if key not in self._documents:
            self._documents[key] = self._read(key)
        return _side_in(self._documents[key], document)


def _local_document(root: Path, path: str) -> dict[str, Any]:
    try:
        return read_json_object(root / path)
    except (FileProblem, ValueError):
        return {}


def _remote_document(store: RemoteStore, files: dict[str, RemoteFile], path: str) -> dict[str, Any]:
    if path not in files or files[path].size > MAX_DOCUMENT_BYTES:
        return {}
    buffer = io.BytesIO()
    try:
        store.read(path, buffer)
        data = json_value(buffer.getvalue().decode("utf-8"))
    except (RemoteError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- listings and the manifest -------------------------------------------------------------


def _runs_of(paths: Iterable[str], only: set[str] | None) -> dict[str, list[str]]:
    """Paths grouped by run, keeping valid run names (and only those asked for)."""
    runs: dict[str, list[str]] = {}
    for path in paths:
        run, _, relative = path.partition("/")
        try:
            validate_run_name(run)
        except RunNameError:
            continue
        if relative and (only is None or run in only):
            runs.setdefault(run, []).append(relative)
    return runs


def local_files(root: Path, runs: set[str] | None = None) -> dict[str, tuple[int, int]]:
    """Regular files of the runs root's run folders, by `run/relative` path: (size, mtime_ns).
    No link is followed; a linked run folder is left out."""
    found: dict[str, tuple[int, int]] = {}
    try:
        entries = [entry for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return found
    for entry in entries:
        if runs is None or entry.name in runs:
            files = regular_files(Path(entry.path), f"{entry.name}/")
            found.update({path: (info.st_size, info.st_mtime_ns) for path, info in files.items()})
    return found


def _manifest_path(root: Path, store: RemoteStore) -> Path:
    return root / MANIFEST_DIR / (hashlib.sha256(store.name.encode()).hexdigest()[:16] + ".json")


def _load_manifest(root: Path, store: RemoteStore) -> dict[str, list[Any]]:
    try:
        data = json_value(read_capped(_manifest_path(root, store), 64 << 20).decode("utf-8"))
    except (FileProblem, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _save_manifest(root: Path, store: RemoteStore, files: dict[str, list[Any]]) -> None:
    path = _manifest_path(root, store)
    path.parent.mkdir(exist_ok=True)
    write_json_atomic(path, {"remote": store.name, "files": files})


def _entry(local: tuple[int, int], remote: RemoteFile) -> list[Any]:
    return [local[0], local[1], remote.stamp]


def _moves(relative: str, extras: set[str], completed: bool) -> bool:
    kind = file_kind(relative)
    return kind == "light" or (kind == "adapter" and completed) or (kind in extras)


def _completed(document: dict[str, Any]) -> bool:
    return document.get("state") == "completed"


def _check_extras(extras: Iterable[str]) -> set[str]:
    chosen = set(extras)
    unknown = sorted(chosen - set(EXTRAS))
    if unknown:
        raise RemoteError(f"unknown --with {', '.join(unknown)}: choose from {', '.join(EXTRAS)}")
    return chosen


# --- push and pull -------------------------------------------------------------------------


def push(
    root: Path, store: RemoteStore, runs: Iterable[str] | None = None, extras: Iterable[str] = ()
) -> SyncReport:
    """Send this side's changed files of `runs` (default: every run) to the remote."""
    chosen = _check_extras(extras)
    only = set(runs) if runs is not None else None
    me = runs_root_side(root)
    report = SyncReport()
    manifest = _load_manifest(root, store)
    local = local_files(root, only)
    remote = store.files()
    owners = _Owners(lambda path: _local_document(root, path))
    uploads: dict[str, Path] = {}
    for run, relatives in _runs_of(local, only).items():
        completed = _completed(_local_document(root, f"{run}/{STATUS_FILE}"))
        for relative in relatives:
            path = f"{run}/{relative}"
            if not _moves(relative, chosen, completed):
                continue
            owner = owners.owner(run, relative)
            if owner is None and path in remote:
                continue  # written once, or of no recorded side: never replaced
            if owner is not None and owner != me:
                continue  # the other side's: it came from there
            if path in remote and manifest.get(path) == _entry(local[path], remote[path]):
                continue  # unchanged since it was last sent
            uploads[path] = root / path
    written = store.write(uploads)
    for path, remote_file in written.items():
        manifest[path] = _entry(local[path], remote_file)
        report.sent.append(path)
    _save_manifest(root, store, manifest)
    return report


def _download(store: RemoteStore, path: str, size: int, target: Path) -> None:
    """Copy the remote file `path` to `target` atomically, refusing more than `size` bytes."""

    def write(handle: Any) -> None:
        class Capped:
            written = 0

            def write(self, data: bytes) -> int:
                Capped.written += len(data)
                if Capped.written > size:
                    raise RemoteError(f"{path} is larger than the remote listed ({size:,} bytes)")
                return handle.write(data)

        store.read(path, Capped())  # type: ignore[arg-type]

    target.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(target, write)


def pull(
    root: Path, store: RemoteStore, runs: Iterable[str] | None = None, extras: Iterable[str] = ()
) -> SyncReport:
    """Fetch the other sides' changed files of `runs` (default: every run) from the remote; a
    run new here appears whole."""
    chosen = _check_extras(extras)
    only = set(runs) if runs is not None else None
    me = runs_root_side(root)
    report = SyncReport()
    manifest = _load_manifest(root, store)
    remote = store.files()
    local = local_files(root, only)
    theirs = _Owners(lambda path: _remote_document(store, remote, path))
    ours = _Owners(lambda path: _local_document(root, path))
    for run, relatives in _runs_of(remote, only).items():
        completed = _completed(_remote_document(store, remote, f"{run}/{STATUS_FILE}"))
        wanted = []
        for relative in relatives:
            path = f"{run}/{relative}"
            kind = file_kind(relative)
            if not _moves(relative, chosen, completed):
                continue
            limit = LIGHT_FILE_BYTES if kind == "light" else HEAVY_FILE_BYTES
            if remote[path].size > limit:
                report.problems.append(
                    f"{path}: {remote[path].size:,} bytes, more than {limit:,}: not fetched"
                )
                continue
            if path in local:
                if ours.owner(run, relative) == me:
                    report.kept.append(path)
                    continue
                if theirs.owner(run, relative) in (None, me):
                    continue  # written once, or this side's own file come back: the copy here stands
                if manifest.get(path) == _entry(local[path], remote[path]):
                    continue
            elif theirs.owner(run, relative) == me:
                continue  # this side's file, deleted here: not brought back
            wanted.append(relative)
        if not wanted:
            continue
        try:
            if (root / run).is_dir():
                for relative in wanted:
                    _fetch(root, store, run, relative, remote, manifest, root / run / relative)
                    report.received.append(f"{run}/{relative}")
            else:
                _fetch_new_run(root, store, run, wanted, remote, manifest)
                report.received.extend(f"{run}/{relative}" for relative in wanted)
        except (RemoteError, OSError) as exc:
            report.problems.append(f"{run}: {exc}")
    _save_manifest(root, store, manifest)
    return report


def _fetch(
    root: Path,
    store: RemoteStore,
    run: str,
    relative: str,
    remote: dict[str, RemoteFile],
    manifest: dict[str, list[Any]],
    target: Path,
) -> None:
    path = f"{run}/{relative}"
    _download(store, path, remote[path].size, target)
    info = os.stat(root / path, follow_symlinks=False)
    manifest[path] = _entry((info.st_size, info.st_mtime_ns), remote[path])


def _fetch_new_run(
    root: Path,
    store: RemoteStore,
    run: str,
    relatives: list[str],
    remote: dict[str, RemoteFile],
    manifest: dict[str, list[Any]],
) -> None:
    """Gather a run new here in a staging folder, then put it in place whole."""
    with staging_dir(root / run) as staging:
        for relative in relatives:
            _download(store, f"{run}/{relative}", remote[f"{run}/{relative}"].size, staging / relative)
        if not place_new_dir(staging, root / run):
            raise RemoteError(f"a run named {run} appeared here meanwhile: fetched again at the next pull")
    for relative in relatives:
        path = f"{run}/{relative}"
        info = os.stat(root / path, follow_symlinks=False)
        manifest[path] = _entry((info.st_size, info.st_mtime_ns), remote[path])


def request_remote_stop(root: Path, store: RemoteStore, run: str, kind: str = "train") -> None:
    """Ask the job of `run` that runs on another side to stop: a stop request in the run
    folder, sent to the remote, which that job polls (see watch_remote_stop)."""
    from core.store.runs import now_iso

    path = root / validate_run_name(run) / STOP_REQUEST_FILE
    write_json_atomic(path, {"side": runs_root_side(root), "kind": kind, "requested_at": now_iso()})
    push(root, store, [run])


def remote_stop_request(store: RemoteStore, run: str) -> str | None:
    """When a stop of `run` was last requested through the remote (an ISO time in whole seconds,
    as now_iso writes it), or None when none was."""
    document = _remote_document(store, store.files(), f"{run}/{STOP_REQUEST_FILE}")
    requested = document.get("requested_at")
    return requested if isinstance(requested, str) else None


def remote_stop_requested(store: RemoteStore, run: str, since: str) -> bool:
    """Whether the remote holds a stop request for `run` made at or after `since` (the job's
    start; whole seconds: the same second counts)."""
    requested = remote_stop_request(store, run)
    return requested is not None and requested >= since
