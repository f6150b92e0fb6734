"""Unpack an uploaded zip (a Trainer output folder, TensorBoard logs) as hostile input.

Before anything is written the archive's listing is checked: at most MAX_MEMBERS members, at most
MAX_UNPACKED_BYTES declared in all, no absolute path, no `..`, no link, nothing but files and
folders. zipfile stops each member at the size it declares (a member that holds more fails its
CRC check and the archive is refused). Only regular files and folders are created, inside the
target, a member at a time in chunks.
"""

from __future__ import annotations

import io
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from core.interop.runs import InteropError

MAX_MEMBERS = 2_000
MAX_UNPACKED_BYTES = 256 << 20
"""A 5 MB upload (Streamlit's server.maxUploadSize) of event files or a small adapter unpacks far
below this; a zip bomb does not."""
_CHUNK = 1 << 20
_UNIX = 3  # ZipInfo.create_system of an archive written on Unix: only then are mode bits meaningful


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's relative path; InteropError for one that could leave the folder or is a link."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (path.parts and path.parts[0].endswith(":")) or ".." in path.parts:
        raise InteropError(f"{info.filename!r} lies outside the archive's folder: refused")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)  # 0: no file type given (Python's ZipFile.writestr), a regular file
    if info.create_system == _UNIX and kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a file or folder"
        raise InteropError(f"{info.filename!r} is {what}: refused")
    return path


def unpack_zip(data: bytes, target: Path) -> None:
    """Unpack the zip `data` into the empty folder `target`; InteropError saying why it is refused
    (not a zip, too many members, too large unpacked, an unsafe member). On an error `target` may
    hold part of the archive: the caller unpacks into a staging folder it deletes."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InteropError(f"not a zip archive ({exc})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise InteropError(f"{len(members):,} members; an upload takes at most {MAX_MEMBERS:,}")
        declared = sum(info.file_size for info in members)
        if declared > MAX_UNPACKED_BYTES:
            raise InteropError(
                f"unpacks to {declared:,} bytes; an upload takes at most {MAX_UNPACKED_BYTES:,} unpacked"
            )
        paths = [_member_path(info) for info in members]
        for info, path in zip(members, paths):
            destination = target.joinpath(*path.parts)
            try:
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as reader, open(destination, "xb") as writer:
                    shutil.copyfileobj(reader, writer, _CHUNK)
            except FileExistsError:
                raise InteropError(f"{info.filename!r} is in the archive twice: refused") from None
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
                raise InteropError(f"{info.filename!r} cannot be unpacked ({exc})") from None
