"""Where the project's own files, the runs root and the caches live."""

from __future__ import annotations

import os
import re
import secrets
import socket
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


SIDE_FILE = ".side"
_SIDE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def runs_root_side(root: Path) -> str:
    """Which side of a sync this runs root is: a name made once and kept in `root/.side` (the
    host's name and a random part, so two runs roots on one machine are two sides). Jobs record
    it in their state files and the dashboard in the files it writes: a sync then knows whose
    each file is. Where the root cannot hold the file, or holds a bad one, the host's name."""
    from core.store.files import FileMissing, FileProblem, read_capped

    path = root / SIDE_FILE
    host = _SIDE_NAME.match(socket.gethostname())
    fallback = host[0] if host else "host"
    try:
        name = read_capped(path, 256).decode("ascii", "replace").strip()
        return name if _SIDE_NAME.fullmatch(name) else fallback
    except FileMissing:
        pass
    except FileProblem:
        return fallback
    made = root / f".side.{secrets.token_hex(4)}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        made.write_text(f"{fallback}-{secrets.token_hex(4)}\n", encoding="ascii")
        os.link(made, path)  # published whole, or not at all when another process was first
    except FileExistsError:
        pass
    except OSError:
        return fallback
    finally:
        made.unlink(missing_ok=True)
    return runs_root_side(root)
