"""The ways in: a Trainer output folder or TensorBoard logs, from a folder on this machine (the
command line, any size) or an uploaded zip (the Home page, bounded by the upload limit).

An upload is unpacked (core.interop.archive: bounded, no links, no paths leaving the folder) into
a hidden staging folder in the runs root, read from there, and deleted whatever happens.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.interop.archive import unpack_zip
from core.interop.runs import ImportReport, InteropError, import_runs
from core.interop.tensorboard import event_folders, read_tensorboard_folder
from core.interop.trainer import read_trainer_folder, trainer_root
from core.store.files import staging_dir
from core.store.runs import validate_run_name

MAX_UPLOAD_NAME = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def import_trainer(
    root: Path, folder: Path, *, name: str, source: str, base_model: str | None = None
) -> ImportReport:
    """Import the Trainer output folder `folder` as the run `name`; InteropError when it cannot
    be (nothing is created then)."""
    validate_run_name(name)
    run, problems = read_trainer_folder(folder, name=name, source=source, base_model=base_model)
    return import_runs(root, [run], ImportReport(problems=problems))


def import_tensorboard(root: Path, folder: Path, *, name: str | None, source: str) -> ImportReport:
    """Import every folder of event files under `folder` as a run (`name`, or `name`-PATH for
    folders below it); InteropError when none can be (nothing is created then)."""
    runs, problems = read_tensorboard_folder(folder, name=name, source=source)
    return import_runs(root, runs, ImportReport(problems=problems))


def detect_kind(folder: Path) -> str:
    """Which importer reads `folder`: trainer (a trainer_state.json) before tensorboard (event
    files); InteropError when it is neither."""
    try:
        trainer_root(folder)
        return "trainer"
    except InteropError:
        pass
    if event_folders(folder):
        return "tensorboard"
    raise InteropError(
        "neither a Trainer output folder (trainer_state.json) nor TensorBoard logs (events.out.tfevents.*)"
    )


def import_folder(
    root: Path,
    folder: Path,
    *,
    name: str | None,
    source: str,
    kind: str | None = None,
    base_model: str | None = None,
) -> ImportReport:
    """Import `folder` with the importer of `kind` (None: the one that reads it, detect_kind); a
    Trainer folder's run is named `name`, or after `source`."""
    if (kind or detect_kind(folder)) == "trainer":
        return import_trainer(
            root, folder, name=name or Path(source).stem, source=source, base_model=base_model
        )
    return import_tensorboard(root, folder, name=name, source=source)


def upload_file_name(name: str) -> str:
    """An uploaded file's name as a run's origin and the messages may hold it: its last part,
    without control characters, at most MAX_UPLOAD_NAME characters ("upload.zip" when nothing is
    left)."""
    cleaned = _CONTROL.sub("", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()[:MAX_UPLOAD_NAME]
    return cleaned if cleaned.strip(".") else "upload.zip"


def import_zip(
    root: Path,
    data: bytes,
    *,
    upload_name: str,
    name: str | None,
    kind: str | None = None,
    base_model: str | None = None,
) -> ImportReport:
    """Import a zip of a Trainer output folder or TensorBoard logs (import_folder); InteropError
    saying why when it is refused, and nothing is created then."""
    upload_name = upload_file_name(upload_name)
    root.mkdir(parents=True, exist_ok=True)
    with staging_dir(root / "upload") as staging:
        folder = staging / (Path(upload_name).stem.lstrip(".") or "upload")  # named in messages
        folder.mkdir()
        try:
            unpack_zip(data, folder)
        except InteropError as exc:
            raise InteropError(f"{upload_name}: {exc}") from None
        return import_folder(root, folder, name=name, source=upload_name, kind=kind, base_model=base_model)
