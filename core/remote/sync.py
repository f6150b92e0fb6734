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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.evaluate.ratings import SIDE_KEY, ratings_lock, ratings_side
from core.jobs.lifecycle import JOBS_DIR, state_path
from core.remote.stores import RemoteError, RemoteFile, RemoteStore
from core.store.files import (
    MAX_DOCUMENT_BYTES,
    FileProblem,
    json_value,
    place_new_dir,
    read_capped,
    read_json_or_empty,
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
    RECIPE_FILE,
    STATUS_FILE,
    RunNameError,
    now_iso,
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
_LIGHT_FILES = (CONFIG_FILE, RECIPE_FILE, *_TRAINING_FILES, RATINGS_FILE, EXPORT_FILE, STOP_REQUEST_FILE)


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
    if top == JOBS_DIR and len(parts) == 2 and _JOB_FILE.fullmatch(parts[1]):
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
    carries its own side), or None for a file written once (config.json, recipe.json)."""
    parts = relative.split("/")
    if relative in (CONFIG_FILE, RECIPE_FILE):
        return None
    if relative in (RATINGS_FILE, STOP_REQUEST_FILE):
        return relative
    if relative in _TRAINING_FILES or parts[0] in (ADAPTER_DIR, CHECKPOINTS_DIR):
        return STATUS_FILE
    if parts[0] == JOBS_DIR:
        return f"{JOBS_DIR}/{_JOB_FILE.fullmatch(parts[1])['kind']}.json"
    if parts[0] == EVAL_DIR:
        return f"{JOBS_DIR}/bench.json" if parts[1].startswith("bench-") else f"{JOBS_DIR}/eval.json"
    return f"{JOBS_DIR}/export.json"  # export.json, gguf/, merged/


def _side_in(document: dict[str, Any], relative: str) -> str | None:
    side = document.get(SIDE_KEY if relative == RATINGS_FILE else "side")
    return side if isinstance(side, str) and side else None


class _Owners:
    """The owner of each file of one side's copy, reading each owner document once."""

    def __init__(self, read: Callable[[str], dict[str, Any]]):
        self._read = read  # run-relative path -> its document ({} when missing or unreadable)
        self._documents: dict[str, dict[str, Any]] = {}

    def owner(self, run: str, relative: str) -> str | None:
        document = _owner_document(relative)
        if document is None:
            return None
        key = f"{run}/{document}"
        if key not in self._documents:
            self._documents[key] = self._read(key)
        return _side_in(self._documents[key], document)


def _taken_over(
    run: str, relative: str, remote_documents: Callable[[str], dict[str, Any]], root: Path
) -> bool:
    """Whether a job on another side has since taken over a job's files of this side: its state
    file there names another side and a later start (a run resumed elsewhere). Ratings and stop
    requests are never taken over."""
    document = _owner_document(relative)
    if document is None or document in (RATINGS_FILE, STOP_REQUEST_FILE):
        return False
    there, here = remote_documents(f"{run}/{document}"), read_json_or_empty(root / f"{run}/{document}")
    started_there, started_here = there.get("started_at"), here.get("started_at")
    return isinstance(started_there, str) and isinstance(started_here, str) and started_there > started_here


def _remote_document(store: RemoteStore, files: dict[str, RemoteFile], path: str) -> dict[str, Any]:
    """A small JSON document of the remote (a status, a job's state, ratings), {} when it is
    missing, too large or not a JSON object."""
    if path not in files or files[path].size > MAX_DOCUMENT_BYTES:
        return {}
    buffer = io.BytesIO()
    try:
        store.read(path, _Capped(buffer, min(files[path].size, MAX_DOCUMENT_BYTES), path))
        data = json_value(buffer.getvalue().decode("utf-8"))
    except (RemoteError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _RemoteDocuments:
    """The remote's documents, each read once; one the manifest records as fetched unchanged
    since is read from the copy here instead (no transfer)."""

    def __init__(
        self, root: Path, store: RemoteStore, files: dict[str, RemoteFile], manifest: dict, local: dict
    ):
        self.root, self.store, self.files, self.manifest, self.local = root, store, files, manifest, local
        self._read: dict[str, dict[str, Any]] = {}

    def __call__(self, path: str) -> dict[str, Any]:
        if path not in self._read:
            same = (
                path in self.local
                and path in self.files
                and _unchanged(self.manifest, path, self.local, self.files)
            )
            self._read[path] = (
                read_json_or_empty(self.root / path)
                if same
                else _remote_document(self.store, self.files, path)
            )
        return self._read[path]


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


def _changed_here(manifest: dict[str, list[Any]], path: str, local: dict[str, tuple[int, int]]) -> bool:
    """Whether the file here differs from what the last sync left (or was never synced)."""
    entry = manifest.get(path)
    return entry is None or entry[:2] != list(local[path])


def _changed_there(manifest: dict[str, list[Any]], path: str, remote: dict[str, RemoteFile]) -> bool:
    """Whether the remote's file differs from what the last sync left (or was never synced)."""
    entry = manifest.get(path)
    return entry is None or entry[2] != remote[path].stamp


def _unchanged(manifest: dict, path: str, local: dict, remote: dict) -> bool:
    """Whether neither side's file moved since the last sync."""
    return not _changed_here(manifest, path, local) and not _changed_there(manifest, path, remote)


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
    remote = store.files(under=next(iter(only)) if only is not None and len(only) == 1 else None)
    owners = _Owners(lambda path: read_json_or_empty(root / path))
    theirs = _Owners(_RemoteDocuments(root, store, remote, manifest, local))
    uploads: dict[str, Path] = {}
    for run, relatives in _runs_of(local, only).items():
        completed = _completed(read_json_or_empty(root / f"{run}/{STATUS_FILE}"))
        for relative in relatives:
            path = f"{run}/{relative}"
            if not _moves(relative, chosen, completed):
                continue
            owner = owners.owner(run, relative)
            if path not in remote:
                if owner in (None, me):
                    uploads[path] = root / path  # new there: a run created here, or this side's file
                continue
            if owner != me or not _changed_here(manifest, path, local):
                continue  # another side's (or written once), or unchanged since it was last synced
            if _changed_there(manifest, path, remote) and theirs.owner(run, relative) not in (None, me):
                report.kept.append(path)  # another side has taken it over meanwhile: theirs stands
                continue
            uploads[path] = root / path
    written, report.problems = store.write(uploads)
    for path, remote_file in written.items():
        manifest[path] = _entry(local[path], remote_file)
        report.sent.append(path)
    _save_manifest(root, store, manifest)
    return report


class _Capped:
    """A writer that refuses more than `limit` bytes (a remote file that grew, or lied)."""

    def __init__(self, handle: Any, limit: int, path: str):
        self.handle, self.limit, self.path, self.written = handle, limit, path, 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise RemoteError(f"{self.path} is larger than the remote listed ({self.limit:,} bytes)")
        return self.handle.write(data)


def _download(store: RemoteStore, path: str, size: int, target: Path) -> None:
    """Copy the remote file `path` to `target` atomically, refusing more than `size` bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(target, lambda handle: store.read(path, _Capped(handle, size, path)))  # type: ignore[arg-type]


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
    remote = store.files(under=next(iter(only)) if only is not None and len(only) == 1 else None)
    local = local_files(root, only)
    documents = _RemoteDocuments(root, store, remote, manifest, local)
    theirs = _Owners(documents)
    ours = _Owners(lambda path: read_json_or_empty(root / path))
    for run, relatives in _runs_of(remote, only).items():
        if (root / run).is_symlink():
            report.problems.append(f"{run}: the run folder here is a link: nothing is written through it")
            continue
        config = f"{run}/{CONFIG_FILE}"
        if config in local and config in remote and documents(config) != read_json_or_empty(root / config):
            report.problems.append(
                f"{run}: a different run of that name is here (another config): not merged"
            )
            continue
        completed = _completed(documents(f"{run}/{STATUS_FILE}"))
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
                if not _changed_there(manifest, path, remote) or theirs.owner(run, relative) is None:
                    continue  # as last synced, or written once: the copy here stands
                if ours.owner(run, relative) == me and not _taken_over(run, relative, documents, root):
                    report.kept.append(path)  # this side's: never replaced
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
    if relative == RATINGS_FILE:  # a page may be saving a rating now: under its lock, and only
        with ratings_lock(root / run):  # while the copy here is still another side's
            if ratings_side(root / run) == runs_root_side(root):
                raise RemoteError(f"{path}: rated here meanwhile: this side's copy stands")
            _download(store, path, remote[path].size, target)
    else:
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
    folder, sent to the remote, which that job polls (core.remote.live). It names the job by
    the start its synced state file records, so no clock of this machine is compared with
    that job's."""
    path = root / validate_run_name(run)
    started = read_json_or_empty(state_path(path, kind)).get("started_at")
    request = {
        "side": runs_root_side(root),
        "kind": kind,
        "job_started_at": started if isinstance(started, str) else None,
        "requested_at": now_iso(),
    }
    write_json_atomic(path / STOP_REQUEST_FILE, request)
    push(root, store, [run])


def remote_stop_request(store: RemoteStore, run: str) -> dict[str, Any]:
    """The remote's stop request for `run` ({} when there is none)."""
    return _remote_document(store, store.files(under=run), f"{run}/{STOP_REQUEST_FILE}")


def remote_stop_requested(store: RemoteStore, run: str, started_at: str) -> bool:
    """Whether the remote holds a stop request for the job of `run` that started at `started_at`
    (as its own state file says): one naming that start, or, made before the requester saw any
    start, one made at or after it (whole seconds; two clocks, so the same second counts)."""
    request = remote_stop_request(store, run)
    named, requested = request.get("job_started_at"), request.get("requested_at")
    if isinstance(named, str):
        return named == started_at
    return isinstance(requested, str) and requested >= started_at
