"""Job controls shared by the pages: a job's state panel with its Stop button, actions, delete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from core.data.recipes import RecipeError
from core.jobs.lifecycle import JOB_KINDS, JobError, JobView, delete_run, job_view, kill_job, request_stop
from core.store.files import finite_number
from core.store.runs import RunExistsError, RunNameError
from core.train.new_runs import create_queued_run
from ui.labels import STATE_ICONS
from ui.links import flash
from ui.owner import owner_only
from ui.text import escape_markdown

POLL_SECONDS = 1.0  # how often a view of an active job draws itself again
KILL_HELP = "The job did not stop after its stop request: end it and its children now (no checkpoint)."


def act(action: Callable[[], Any]) -> None:
    """Run a job action when this session is the owner's; show why it failed, or rerun the page
    to show its effect."""
    if not owner_only():
        return
    try:
        action()
    except (JobError, OSError) as exc:
        st.error(escape_markdown(exc))
    else:
        st.rerun()


def stop_controls(path: Path, view: JobView, labels: tuple[str, str], places: tuple[Any, Any]) -> None:
    """An active job's Stop button, and its Kill button once the stop is overdue (labels and the
    containers to draw them in, in that order)."""
    stop, kill = places
    if stop.button(labels[0], type="primary", key=f"stop_{view.kind}", disabled=view.stop_requested):
        act(lambda: request_stop(path, view.kind))
    if view.stop_overdue and kill.button(labels[1], key=f"kill_{view.kind}", help=KILL_HELP):
        act(lambda: kill_job(path, view.kind))


def any_job_active(path: Path) -> bool:
    """Whether any job of the run is queued or running."""
    return any(job_view(path, kind).active for kind in JOB_KINDS)


def job_panel(path: Path, kind: str, title: str) -> JobView:
    """The eval or export job's state, progress, error and log, with its Stop button, drawn again
    every POLL_SECONDS while the job is active; the job's view as the page run found it."""
    view = job_view(path, kind)
    st.fragment(run_every=POLL_SECONDS if view.active else None)(job_status)(path, kind, title, view.active)
    return view


def job_status(path: Path, kind: str, title: str, was_active: bool) -> None:
    """The body of job_panel; the whole page runs again when the job starts or ends (its buttons
    and results follow)."""
    view = job_view(path, kind)
    if view.active != was_active:
        st.rerun()
    if view.state is None:
        return
    icon, stage = STATE_ICONS.get(view.state, ""), view.status.get("stage") or ""
    if view.active:
        waiting = f" (waiting for {view.waiting_for})" if view.waiting_for else ""
        stopping = " · stopping…" if view.stop_requested else ""
        st.progress(
            min(1.0, max(0.0, finite_number(view.status.get("fraction")) or 0.0)),
            text=f"{icon} {title} " + escape_markdown(f"{view.state}: {stage}{waiting}{stopping}"),
        )
        stop_controls(path, view, (f"Stop {title.lower()}", f"Kill {title.lower()}"), (st, st))
    else:
        st.caption(
            f"Last {title.lower()}: {icon} "
            + escape_markdown(f"{view.state}, ended {view.status.get('ended_at') or '?'}")
        )
        if view.error and view.state != "completed":
            st.error(escape_markdown(view.error))
    with st.expander(f"{title} log"):
        st.code("\n".join(view.tail()) or "(no output yet)", language="log")


def delete_controls(path: Path, name: str, column: Any, after: Callable[[], None]) -> None:
    """Delete…, then a confirmation; only for a run with no job running. `after` runs once the
    run is gone (the page leaves the deleted run)."""
    if column.button("Delete…", key="delete_run"):
        st.session_state["confirm_delete"] = name
    if st.session_state.get("confirm_delete") != name:
        return
    st.warning(
        f"Delete {escape_markdown(name)} and everything in its folder (checkpoints, adapter, exports)?"
    )
    confirm, cancel = st.columns(2)
    if confirm.button(f"Yes, delete {escape_markdown(name)}", type="primary"):
        st.session_state.pop("confirm_delete")
        if not owner_only():
            return
        try:
            delete_run(path)
        except (JobError, OSError) as exc:
            st.error(escape_markdown(exc))
            return
        flash(f"Deleted {escape_markdown(name)}.")
        after()
    if cancel.button("Cancel"):
        st.session_state.pop("confirm_delete")
        st.rerun()


def new_queued_run(root: Path, name: str, config: Any) -> Path | None:
    """Create the run `name` with `config`, queued; None, after saying why, when it cannot be."""
    try:
        return create_queued_run(root, name, config)
    except (RunExistsError, RunNameError, RecipeError, OSError) as exc:
        st.error(f"Could not create the run: {escape_markdown(exc)}")
        return None
