"""Where a runs root is mirrored: a plain folder (a mounted Google Drive, a shared disk) or a
Hugging Face storage bucket (`hf://buckets/NAMESPACE/NAME[/prefix]`), behind one small
interface: list the files with a stamp that changes when a file does, read one, write one.

A folder remote is what the tests use; a bucket goes through huggingface_hub's bucket API
(list_bucket_tree, download_bucket_files, batch_bucket_files), which the tests drive with a
local stand-in of those three calls (the Hub cannot be reached from here). Paths are
relative, `/`-separated, and checked by the sync before they reach a store.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from core import describe
from core.store.files import open_regular, regular_files, write_file_atomic

BUCKET_SCHEME = "hf://buckets/"
_BUCKET_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


class RemoteError(OSError):
    """A remote that cannot be used as given, or a transfer that failed; the message says why."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a remote: its size and a stamp that changes whenever its content does."""

    size: int
    stamp: str


class RemoteStore(Protocol):
    """A remote's files under relative paths."""

    name: str

    def files(self, under: str | None = None) -> dict[str, RemoteFile]:
        """Every file (or every file under the folder `under`, a run), by relative path."""
        ...

    def read(self, path: str, into: BinaryIO) -> None:
        """Copy the file at `path` into `into`."""
        ...

    def write(self, uploads: dict[str, Path]) -> tuple[dict[str, RemoteFile], list[str]]:
        """Put each local file at its relative path, each whole or not at all; the files
        written, and why each other one was not."""
        ...


def _stamp(info: os.stat_result) -> RemoteFile:
    return RemoteFile(info.st_size, f"{info.st_size}:{info.st_mtime_ns}")


class FolderStore:
    """A remote that is a folder on this machine (a mounted drive, a shared disk)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = str(folder)

    def files(self, under: str | None = None) -> dict[str, RemoteFile]:
        """Regular files under the folder (or its folder `under`), no link followed, no hidden
        name (a write in progress)."""
        if not self.folder.is_dir():
            raise RemoteError(f"the remote folder {self.folder} does not exist")
        start = self.folder / under if under else self.folder
        if start.is_symlink() or not start.is_dir():
            return {}
        found = regular_files(start, f"{under}/" if under else "")
        return {path: _stamp(info) for path, info in found.items()}

    def _folder_for(self, path: str, *, make: bool) -> Path:
        """The folder the file `path` lies in, every part of it a real folder of the remote (made
        where missing when `make`): a link planted in the remote is never followed out of it."""
        current = self.folder
        for part in path.split("/")[:-1]:
            current = current / part
            if make:
                with contextlib.suppress(FileExistsError):
                    current.mkdir()
            try:
                real = stat.S_ISDIR(os.lstat(current).st_mode)
            except OSError as exc:
                raise RemoteError(f"{path}: {describe(exc)}") from None
            if not real:
                raise RemoteError(f"{path}: {part} in {self.name} is not a folder (a link is never followed)")
        return current

    def read(self, path: str, into: BinaryIO) -> None:
        """Copy the file at `path` (never through a link) into `into`."""
        try:
            descriptor = open_regular(self._folder_for(path, make=False) / path.rsplit("/", 1)[-1])
        except RemoteError:
            raise
        except OSError as exc:
            raise RemoteError(f"cannot read {path} from {self.name}: {describe(exc)}") from None
        with os.fdopen(descriptor, "rb") as source:
            shutil.copyfileobj(source, into, 1 << 20)

    def write(self, uploads: dict[str, Path]) -> tuple[dict[str, RemoteFile], list[str]]:
        """Copy each local file to its path, atomically (a temporary name, then a rename); the
        files written, and why each other one was not."""
        written, problems = {}, []
        for path, local in uploads.items():
            try:
                target = self._folder_for(path, make=True) / path.rsplit("/", 1)[-1]
                with os.fdopen(open_regular(local), "rb") as source:
                    write_file_atomic(
                        target, lambda handle, source=source: shutil.copyfileobj(source, handle, 1 << 20)
                    )
                written[path] = _stamp(os.stat(target, follow_symlinks=False))
            except RemoteError as exc:
                problems.append(str(exc))
            except OSError as exc:
                problems.append(f"cannot write {path} to {self.name}: {describe(exc)}")
        return written, problems


class BucketStore:
    """A remote that is a Hugging Face storage bucket, or a prefix in one."""

    def __init__(self, bucket_id: str, prefix: str, api: Any, token: str | None):
        self.bucket_id, self.prefix, self.api, self.token = bucket_id, prefix, api, token
        self.name = f"{BUCKET_SCHEME}{bucket_id}" + (f"/{prefix}" if prefix else "")

    def _full(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def files(self, under: str | None = None) -> dict[str, RemoteFile]:
        """The bucket's files under the prefix (and `under` in it), stamped with their content hash."""
        start = f"{self.prefix}/" if self.prefix else ""
        listed = "/".join(part for part in (self.prefix, under) if part) or None
        try:
            entries = list(
                self.api.list_bucket_tree(self.bucket_id, listed, recursive=True, token=self.token)
            )
        except Exception as exc:  # HTTP and auth errors come in many types
            raise RemoteError(f"cannot list {self.name}: {describe(exc)}") from None
        return {
            entry.path[len(start) :]: RemoteFile(int(entry.size), str(entry.xet_hash))
            for entry in entries
            if getattr(entry, "type", None) == "file" and entry.path.startswith(start)
        }

    def read(self, path: str, into: BinaryIO) -> None:
        """Download the file at `path` into `into` (through a private temporary folder)."""
        with tempfile.TemporaryDirectory(prefix="peft-bucket-") as folder:
            local = Path(folder) / "file"
            try:
                self.api.download_bucket_files(
                    self.bucket_id,
                    [(self._full(path), str(local))],
                    raise_on_missing_files=True,
                    token=self.token,
                )
                with os.fdopen(open_regular(local), "rb") as source:
                    shutil.copyfileobj(source, into, 1 << 20)
            except Exception as exc:
                raise RemoteError(f"cannot read {path} from {self.name}: {describe(exc)}") from None

    def write(self, uploads: dict[str, Path]) -> tuple[dict[str, RemoteFile], list[str]]:
        """Upload the files in one batch (each whole or not at all)."""
        if not uploads:
            return {}, []
        try:
            self.api.batch_bucket_files(
                self.bucket_id,
                add=[(str(local), self._full(path)) for path, local in uploads.items()],
                token=self.token,
            )
            after = self.files()
        except RemoteError:
            raise
        except Exception as exc:
            raise RemoteError(f"cannot write to {self.name}: {describe(exc)}") from None
        written = {path: after[path] for path in uploads if path in after}
        return written, [
            f"{path}: not in {self.name} after the upload" for path in uploads if path not in after
        ]


def parse_bucket(spec: str) -> tuple[str, str]:
    """The bucket id (`NAMESPACE/NAME`) and prefix of an `hf://buckets/...` remote."""
    parts = spec[len(BUCKET_SCHEME) :].strip("/").split("/")
    if len(parts) < 2 or not all(_BUCKET_PART.fullmatch(part) for part in parts):
        raise RemoteError(
            f"{spec!r} is not a bucket remote: hf://buckets/NAMESPACE/NAME[/prefix], each part letters, "
            "digits, '.', '_' or '-'"
        )
    return "/".join(parts[:2]), "/".join(parts[2:])


def open_remote(spec: str, *, api: Any = None, token: str | None = None) -> RemoteStore:
    """The store `spec` names: `hf://buckets/NAMESPACE/NAME[/prefix]` (through `api`, by default
    huggingface_hub's HfApi, with `token`) or a folder that exists."""
    if spec.startswith(BUCKET_SCHEME):
        bucket_id, prefix = parse_bucket(spec)
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi()
        return BucketStore(bucket_id, prefix, api, token)
    if "://" in spec:
        raise RemoteError(f"{spec!r}: a remote is hf://buckets/NAMESPACE/NAME[/prefix] or a folder")
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise RemoteError(f"the remote folder {folder} does not exist (create it first)")
    return FolderStore(folder.resolve())
