"""Where the project's own files, the runs root and the caches live."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DATA_DIR = PROJECT_DIR / "data"

RUNS_DIR_ENV = "PEFT_RUNS_DIR"
CACHE_DIR_ENV = "PEFT_CACHE_DIR"


def runs_root(
    explicit: str | os.PathLike[str] | None = None,
    environment: Mapping[str, str] | None = None,
    folder: Path | None = None,
) -> Path:
    """The runs root: `explicit`, else `$PEFT_RUNS_DIR`, else `./runs`, from `folder` (default:
    the working folder). `environment` and `folder` are another process's, to tell which runs
    root it uses (default: this process's)."""
    chosen = explicit or (os.environ if environment is None else environment).get(RUNS_DIR_ENV) or "runs"
    return ((folder or Path.cwd()) / Path(chosen).expanduser()).resolve()


def cache_dir() -> Path:
    """The dashboard's download cache: `$PEFT_CACHE_DIR`, else `~/.cache/peft-dashboard`."""
    chosen = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "peft-dashboard"
    return Path(chosen).expanduser().resolve()
