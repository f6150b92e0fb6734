"""The dashboard's side of a remote: with `PEFT_RUNS_REMOTE` set (a setting or a Streamlit
secret), every page run syncs the runs root with it (pull, then push: the dashboard's
ratings, evaluations and stop requests go back), at most every DASHBOARD_SYNC_EVERY_S
seconds per runs root and remote in this process, however many sessions look.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import describe, setting
from core.remote.stores import RemoteError, RemoteStore, open_remote
from core.remote.sync import SyncReport, pull, push

REMOTE_SETTING = "PEFT_RUNS_REMOTE"
DASHBOARD_SYNC_EVERY_S = 10.0


@dataclass
class DashboardSync:
    """The last sync of one runs root with one remote."""

    spec: str
    store: RemoteStore | None = None
    synced_at: float | None = None  # time.time() of the last sync that ran through
    error: str | None = None
    received: list[str] = field(default_factory=list)

    def age_s(self) -> float | None:
        """Seconds since the last sync that ran through."""
        return None if self.synced_at is None else max(0.0, time.time() - self.synced_at)


_syncs: dict[tuple[Path, str], DashboardSync] = {}
_guard = threading.Lock()
_running: set[tuple[Path, str]] = set()


def configured_remote(secrets: Mapping[str, Any]) -> str:
    """The remote the dashboard syncs with ("" when none is configured)."""
    return setting(REMOTE_SETTING, secrets)


def dashboard_sync(
    root: Path, spec: str, token: str | None, every_s: float = DASHBOARD_SYNC_EVERY_S
) -> DashboardSync:
    """Sync `root` with `spec` when the last sync is older than `every_s` seconds (a session
    that finds another one syncing does not wait: it gets the last state); the state after."""
    key = (root, spec)
    with _guard:
        state = _syncs.setdefault(key, DashboardSync(spec))
        due = state.synced_at is None or time.time() - state.synced_at >= every_s
        if not due or key in _running:
            return state
        _running.add(key)
    try:
        if state.store is None:
            state.store = open_remote(spec, token=token)
        root.mkdir(parents=True, exist_ok=True)
        pulled: SyncReport = pull(root, state.store)
        pushed = push(root, state.store)
        state.received = pulled.received
        state.error = "; ".join(pulled.problems + pushed.problems) or None
        state.synced_at = time.time()
    except (RemoteError, OSError) as exc:
        state.error = describe(exc)
    finally:
        with _guard:
            _running.discard(key)
    return state
