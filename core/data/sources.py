"""Where a dataset comes from: a Hub id with a split, a local JSON/JSONL/Parquet/CSV file, or an
upload kept under the runs root. Every source loads into a `datasets.Dataset` through one
function, so the Data page, the command line, recipes and training read the same rows in the
same order, and `datasets` caches them by content (its fingerprint) for the next look.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.store.files import write_file_atomic
from core.store.paths import cache_dir
from core.train.config import DATASET_SUFFIXES, SPLIT_PATTERN, is_hub_id, resolve_local_file
from core.train.data import DataError

UPLOADS_DIR = ".datasets"  # under the runs root: uploaded datasets, named by their content
MAX_UPLOAD_BYTES = 5 << 20  # the dashboard's server.maxUploadSize
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class DataSource:
    """A dataset (Hub id or local file) and the split (with an optional slice) to read."""

    dataset: str
    split: str = "train"

    @property
    def label(self) -> str:
        """`dataset [split]`, as the run's data report names it."""
        return f"{self.dataset} [{self.split}]"

    def to_dict(self) -> dict[str, str]:
        """The source as JSON (a recipe's `source`)."""
        return {"dataset": self.dataset, "split": self.split}


def datasets_cache() -> Path:
    """Where `datasets` keeps what it loaded and measured for the dashboard."""
    return cache_dir() / "datasets"


def check_source(source: DataSource) -> None:
    """DataError unless `source` names an existing local dataset file or a Hub id, with a valid split."""
    match = SPLIT_PATTERN.fullmatch(source.split)
    if match is None:
        raise DataError(f"{source.split!r} is not a split such as train, train[:10000] or train[:10%]")
    local = resolve_local_file(source.dataset)
    if local is not None:
        if local.suffix.lower() not in BUILDERS:
            raise DataError(f"{local.name}: a dataset file is one of {', '.join(DATASET_SUFFIXES)}")
        if match["name"] != "train":
            raise DataError(f"a local file has one split, 'train' (got {source.split!r})")
    elif Path(source.dataset).suffix.lower() in DATASET_SUFFIXES:
        raise DataError(f"no such file: {source.dataset}")
    elif not is_hub_id(source.dataset):
        raise DataError(f"{source.dataset!r} is neither a dataset file nor a Hub id such as owner/name")


def _cause(exc: BaseException) -> str:
    """The most telling message in an exception chain (datasets wraps the parser's error)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_source(source: DataSource) -> Any:
    """The rows `source` selects as a `datasets.Dataset`; DataError saying why when it cannot be read."""
    check_source(source)
    import datasets

    datasets.disable_progress_bars()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    local = resolve_local_file(source.dataset)
    try:
        if local is not None:
            loaded = datasets.load_dataset(
                BUILDERS[local.suffix.lower()],
                data_files=str(local),
                split=source.split,
                cache_dir=str(datasets_cache()),
            )
        else:
            loaded = datasets.load_dataset(
                source.dataset, split=source.split, cache_dir=str(datasets_cache())
            )
    except Exception as exc:  # datasets, arrow and the Hub raise many types; the cause is what matters
        where = local.name if local is not None else f"{source.dataset} from the Hub"
        raise DataError(f"cannot read {where} [{source.split}]: {_cause(exc)}") from None
    if not len(loaded):
        raise DataError(f"{source.label} has no rows")
    if not any(column in loaded.column_names for column in ("conversations", "messages")):
        raise DataError(
            f"{source.label} has no 'conversations' (ShareGPT from/value) or 'messages' (role/content) "
            f"column; its columns: {', '.join(loaded.column_names) or 'none'}"
        )
    return loaded


def save_upload(root: Path, filename: str, data: bytes) -> Path:
    """Keep an uploaded dataset under the runs root, named by its content; return its path.

    Only the file's suffix is taken from its name; DataError for another type or an oversized file.
    """
    suffix = Path(filename).suffix.lower()
    if suffix not in BUILDERS:
        raise DataError(f"{filename}: upload a {', '.join(DATASET_SUFFIXES)} file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(
            f"{filename} is {len(data) / 1e6:.1f} MB; uploads are at most {MAX_UPLOAD_BYTES / 1e6:.0f} MB "
            "(give a larger dataset by its Hub id or as a file on the machine)"
        )
    if not data.strip():
        raise DataError(f"{filename} is empty")
    path = root / UPLOADS_DIR / f"upload-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        write_file_atomic(path, lambda handle: handle.write(data))
    return path


def uploaded_files(root: Path) -> list[Path]:
    """The datasets uploaded to this runs root, newest first."""
    folder = root / UPLOADS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.suffix in BUILDERS and p.is_file() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
