"""The remote the dashboard syncs its runs with (PEFT_RUNS_REMOTE), in the sidebar, and the
Stop of a job that runs elsewhere."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.export.gguf_files import environment_token
from core.jobs.lifecycle import JobView
from core.remote.dashboard import DashboardSync, configured_remote, dashboard_sync
from core.remote.sync import request_remote_stop
from ui.jobs import act
from ui.secrets import app_secrets
from ui.text import escape_markdown


def remote_sync(root: Path) -> DashboardSync | None:
    """Sync the runs root with the configured remote when due (no output: fragments call it as
    they poll); None when no remote is configured."""
    spec = configured_remote(app_secrets())
    return dashboard_sync(root, spec, environment_token()) if spec else None


def synced_remote(root: Path) -> DashboardSync | None:
    """remote_sync, saying in the sidebar how it went."""
    state = remote_sync(root)
    if state is None:
        return None
    spec = state.spec
    age = state.age_s()
    when = "not yet synced" if age is None else f"synced {age:.0f} s ago"
    st.sidebar.caption(f"Runs remote `{escape_markdown(spec)}`: {when}.")
    if state.error:
        st.sidebar.warning(f"Sync with the remote: {escape_markdown(state.error)}")
    return state


def elsewhere_notice(root: Path, name: str, view: JobView, sync: DashboardSync | None, place) -> None:
    """Where a job that runs on another side runs, how fresh this copy is, and its Stop
    (through the remote), or why there is none."""
    side = view.status.get("side") or view.status.get("host") or "another machine"
    if sync is None or sync.store is None:
        place.info(
            f"Runs on {escape_markdown(side)}. This is a copy: set PEFT_RUNS_REMOTE to the remote that "
            "job syncs with (`--sync`) to watch it live and stop it from here."
        )
        return
    age = sync.age_s()
    place.info(
        f"Runs on {escape_markdown(side)}, watched through the remote"
        + ("" if age is None else f" (synced {age:.0f} s ago)")
        + "."
    )
    if place.button("Stop (through the remote)", key=f"remote_stop_{view.kind}"):
        act(lambda: request_remote_stop(root, sync.store, name, view.kind))
