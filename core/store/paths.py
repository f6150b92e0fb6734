"""Where the project's own files, the runs root and the caches live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DATA_DIR = PROJECT_DIR / "data"

RUNS_DIR_ENV = "PEFT_RUNS_DIR"
CACHE_DIR_ENV = "PEFT_CACHE_DIR"


def runs_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The runs root: `explicit`, else `$PEFT_RUNS_DIR`, else `./runs`."""
    chosen = explicit or os.environ.get(RUNS_DIR_ENV) or "runs"
    return Path(chosen).expanduser().resolve()


def cache_dir() -> Path:
    """The dashboard's download cache: `$PEFT_CACHE_DIR`, else `~/.cache/peft-dashboard`."""
    chosen = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "peft-dashboard"
    return Path(chosen).expanduser().resolve()
