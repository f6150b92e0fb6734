"""Sweeps on the pages: the Train page's sweep form, queue controls and "duplicate, change one
field"; the Sweeps page's parallel coordinates, brushing filters and importance figure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.jobs.lifecycle import delete_run
from core.jobs.queue import (
    QueueError,
    QueueItem,
    cancel_items,
    cancel_rest,
    current_item,
    enqueue,
    ensure_runner,
    move_item,
    read_queue,
    run_item,
    runner_log,
    runner_running,
)
from core.machine.devices import DeviceFacts
from core.store.files import file_stamp
from core.store.runs import (
    CONFIG_FILE,
    EVAL_DIR,
    METRICS_FILE,
    STATUS_FILE,
    Run,
    read_run_folder,
)
from core.sweeps.definition import (
    OBJECTIVE_HELP,
    OBJECTIVES,
    SWEEPABLE,
    Sweep,
    SweepError,
    check_members,
    check_new_sweep,
    create_grid,
    create_member_run,
    duplicate_run,
    estimate,
    grid_members,
    list_sweeps,
    machine_check,
    new_sweep,
    parse_grid,
    read_sweep,
    record_path,
    recover_sweeps,
    retry_sweep,
)
from core.sweeps.outcomes import ADAPTER_RESULTS, OUTCOMES, MemberRow, importance, member_rows
from core.train.config import RunConfig, format_setting
from core.train.presets import DATA_ROWS
from ui.lookups import runs_of
from ui.owner import owner_only
from ui.text import escape_markdown

SHOWN_ITEMS = 20  # queue items (and active runs) listed; the rest are counted


def keep_queue_going(root: Path) -> None:
    """Settle sweep creations cut short (recover_sweeps) and start the queue's runner when items
    wait and none runs (after a restart of the dashboard or the machine, the queue continues at
    the first look); a runner whose state is unknown is warned of, and none started."""
    try:
        recover_sweeps(root)
        ensure_runner(root)
    except OSError as exc:
        st.warning(f"The queue's runner could not be started: {escape_markdown(exc)}")


@dataclass(frozen=True)
class Analysis:
    """A sweep's members read and weighed: their runs, their rows, and each outcome's importance
    (or why it has none)."""

    runs: dict[str, Run]
    rows: list[MemberRow]
    importance: dict[str, dict[str, float] | str]


@st.cache_resource(show_spinner=False, max_entries=8)
def analysed(root: str, name: str, signature: str) -> Analysis:
    """The sweep's Analysis, made again only when its record or a member's files change
    (`signature`); shared, not copied, by every rerun and session (nothing changes it)."""
    sweep = read_sweep(Path(root), name)
    runs = {n: read_run_folder(Path(root, n)) for n in sweep.run_names if Path(root, n).is_dir()}
    rows = member_rows(sweep, runs)
    measured = [key for key in OUTCOMES if any(row.outcomes[key] is not None for row in rows)]
    return Analysis(runs, rows, {key: importance(sweep, rows, key) for key in measured})


def sweep_analysis(root: Path, sweep: Sweep) -> Analysis:
    """The sweep's Analysis, from the cache while its record and its members' files are unchanged."""
    files = (CONFIG_FILE, STATUS_FILE, METRICS_FILE, f"{EVAL_DIR}/{ADAPTER_RESULTS}")
    stamps = [[file_stamp(root / name / file) for file in files] for name in sweep.run_names]
    return analysed(str(root), sweep.name, repr((file_stamp(record_path(root, sweep.name)), stamps)))


# --- the Train page --------------------------------------------------------------------------


def sweep_form(
    root: Path, base: dict[str, Any] | None, preset: str, check: Callable[[RunConfig], str | None]
) -> None:
    """Vary fields of the form's config: values per field, the members with their estimate, and
    a button that queues them all (nothing is created when one is refused)."""
    if base is None:
        st.caption("The sweep form needs a valid config above.")
        return
    fields = st.multiselect(
        "Fields to vary", SWEEPABLE, key="sweep_fields", help=f"{DATA_ROWS}: the first N rows of the split"
    )
    texts = [
        f"{field}={st.text_input(f'Values of {field}', key=f'sweep_values_{field}', placeholder='8,16,64')}"
        for field in fields
    ]
    name_column, objective_column = st.columns(2)
    name = name_column.text_input(
        "Sweep name", key="sweep_name", help="its runs are named NAME-<field><value>-..."
    )
    objective = objective_column.selectbox(
        "Objective",
        list(OBJECTIVES),
        key="sweep_objective",
        help="; ".join(f"{k}: {v}" for k, v in OBJECTIVE_HELP.items()),
    )
    if not fields or not name:
        st.caption("Pick fields, give their values (comma-separated) and name the sweep.")
        return
    try:
        check_new_sweep(root, name, objective, base)
        axes = parse_grid(texts, base)
        members = check_members(root, grid_members(name, base, axes), check)
    except (SweepError, ValueError) as exc:
        st.error(escape_markdown(exc))
        return
    cost = estimate(members)
    time = f"≈ {cost.total_s / 3600:.1f} h" if cost.total_s is not None else "no estimate"
    memory = f"≈ {cost.peak_gb:.1f} GB" if cost.peak_gb is not None else "no estimate"
    columns = st.columns(3)
    columns[0].metric("Members", len(members))
    columns[1].metric(
        "Total time on a T4", time, help="the lab's T4 step times, scaled; only for the lab's models"
    )
    columns[2].metric("Peak GPU memory", memory, help="the largest member's estimate; they run one at a time")
    st.dataframe(
        pd.DataFrame(
            [{"Run": m.name, **{k: format_setting(v) for k, v in m.values.items()}} for m in members]
        ),
        hide_index=True,
    )
    if st.button(f"Queue {len(members)} runs", type="primary", key="sweep_queue") and owner_only():
        sweep = new_sweep(name, base, preset=preset, axes=axes, objective=objective)
        sweep = replace(sweep, members=[{"run": m.name, "values": m.values} for m in members])
        try:
            create_grid(root, sweep, members)
        except (SweepError, OSError) as exc:
            st.error(f"Nothing was queued: {escape_markdown(exc)}")
            return
        keep_queue_going(root)
        st.success(f"Queued {len(members)} runs of sweep {escape_markdown(name)}.")


def duplicate_form(root: Path, runs: Sequence[Run], check: Callable[[RunConfig], str | None]) -> None:
    """Duplicate a run with one field changed, queued."""
    usable = [run.name for run in runs if not run.broken and not run.imported]
    if not usable:
        st.caption("No run to duplicate yet.")
        return
    source, field, value = st.columns(3)
    picked = source.selectbox("Run", usable, key="duplicate_run")
    key = field.selectbox("Field", SWEEPABLE, key="duplicate_field")
    text = value.text_input("New value", key="duplicate_value")
    if st.button("Queue the copy", key="duplicate_queue", disabled=not text) and owner_only():
        run = next(run for run in runs if run.name == picked)
        try:
            member = duplicate_run(root, run.config, run.name, key, text, check)
        except (SweepError, ValueError, OSError) as exc:
            st.error(f"Nothing was queued: {escape_markdown(exc)}")
            return
        try:
            path = create_member_run(root, member)
        except (SweepError, ValueError, OSError) as exc:
            st.error(f"Nothing was queued: {escape_markdown(exc)}")
            return
        try:
            enqueue(root, [run_item(member.name)])
        except OSError as exc:
            delete_run(path)
            st.error(f"Nothing was queued: {escape_markdown(exc)}")
            return
        keep_queue_going(root)
        st.success(f"Queued {escape_markdown(member.name)}.")


def sweep_panels(root: Path, config: RunConfig | None, preset: str, facts: DeviceFacts) -> None:
    """The Train page's sweep form over the form's config, and "duplicate a run, change one field"."""
    check = machine_check(lambda backend: facts)
    with st.expander("Sweep: queue this config with some fields varied"):
        sweep_form(root, config.to_dict() if config else None, preset, check)
    with st.expander("Duplicate a run, change one field"):
        duplicate_form(root, runs_of(root), check)


def recorded_sweeps(root: Path) -> list[Sweep]:
    """The readable sweeps of the runs root, newest first."""
    found = []
    for name in list_sweeps(root):
        try:
            found.append(read_sweep(root, name))
        except SweepError:
            continue
    return found


def queue_controls(root: Path) -> None:
    """The durable queue: its first SHOWN_ITEMS items in order with move and remove, the runner's
    state, cancel the rest, retry a sweep's failed runs."""
    items = read_queue(root)
    st.markdown("**Queued runs and searches**")
    try:
        working = current_item(root)
        running = runner_running(root)
    except QueueError as exc:
        st.warning(escape_markdown(exc))
        return
    st.caption(
        ("The runner works on the item marked ▶. " if running else "No runner is running. ")
        + f"{len(items)} item(s) wait."
    )
    try:
        queue_items(root, items, working)
    except QueueError as exc:
        st.error(escape_markdown(exc))
        return
    retry_control(root)
    if lines := runner_log(root):
        with st.expander("Runner log"):
            st.code("\n".join(lines), language="log")


def queue_items(root: Path, items: Sequence[QueueItem], working: QueueItem | None) -> None:
    """The first SHOWN_ITEMS items with move and remove buttons (a count of the rest), and
    "Cancel the rest"."""
    for index, item in enumerate(items[:SHOWN_ITEMS]):
        label, up, down, remove = st.columns([6, 1, 1, 1])
        label.markdown(("▶ " if item == working else f"{index + 1}. ") + escape_markdown(item.label))
        if item == working:
            continue
        if up.button("↑", key=f"queue_up_{item.id}", disabled=index == 0) and owner_only():
            move_item(root, item.id, -1)
            st.rerun()
        if down.button("↓", key=f"queue_down_{item.id}", disabled=index == len(items) - 1) and owner_only():
            move_item(root, item.id, 1)
            st.rerun()
        if (
            remove.button("✕", key=f"queue_remove_{item.id}", help="remove it from the queue")
            and owner_only()
        ):
            cancel_items(root, lambda queued, chosen=item.id: queued.id == chosen)
            st.rerun()
    if (
        items
        and st.button("Cancel the rest", key="queue_cancel", help="remove every item that has not started")
        and owner_only()
    ):
        removed = cancel_rest(root)
        st.toast(f"Removed {len(removed)} item(s).")
        st.rerun()
    if len(items) > SHOWN_ITEMS:
        st.caption(f"... and {len(items) - SHOWN_ITEMS} more.")


def retry_control(root: Path) -> None:
    """Retry a recorded sweep's failed runs (a search: its further trials)."""
    retryable = recorded_sweeps(root)
    if retryable:
        chosen = st.selectbox("Sweep", [s.name for s in retryable], key="queue_retry_sweep")
        if (
            st.button(
                "Retry failed", key="queue_retry", help="queue its failed and stopped runs again, resumed"
            )
            and owner_only()
        ):
            try:
                queued = retry_sweep(root, next(s for s in retryable if s.name == chosen))
            except (SweepError, OSError) as exc:
                st.error(f"Nothing was queued again: {escape_markdown(exc)}")
                return
            keep_queue_going(root)
            st.toast(f"Queued again: {', '.join(queued) or 'nothing to retry'}.")


# --- the Sweeps page -------------------------------------------------------------------------


def members_frame(rows: Sequence[MemberRow], fields: Sequence[str]) -> pd.DataFrame:
    """One row per member: run, state, the varied values, the outcomes, the error."""
    return pd.DataFrame(
        [
            {
                "run": row.run,
                "state": row.state,
                **{f: row.values.get(f) for f in fields},
                **row.outcomes,
                "error": row.error,
            }
            for row in rows
        ],
        columns=["run", "state", *fields, *OUTCOMES, "error"],
    )


def brushed(
    frame: pd.DataFrame, dimensions: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, tuple[float, float]]]:
    """Range sliders over the numeric dimensions (the brush): the members inside every range and
    the ranges that differ from the full span (drawn as the chart's constraint ranges)."""
    ranges: dict[str, tuple[float, float]] = {}
    keep = pd.Series(True, index=frame.index)
    columns = st.columns(min(4, max(1, len(dimensions))))
    for index, name in enumerate(dimensions):
        values = pd.to_numeric(frame[name], errors="coerce")
        if values.isna().all() or values.min() == values.max():
            continue
        low, high = float(values.min()), float(values.max())
        chosen = columns[index % len(columns)].slider(
            OUTCOMES.get(name, name), low, high, (low, high), key=f"brush_{name}", format="%.4g"
        )
        if chosen != (low, high):
            ranges[name] = chosen
            keep &= values.between(*chosen)
    return frame[keep], ranges


def parcoords_figure(
    frame: pd.DataFrame, dimensions: Sequence[str], ranges: dict[str, tuple[float, float]], colour: str | None
) -> go.Figure:
    """Parallel coordinates: one line per member, one axis per varied field and outcome (text
    values such as a base model as labelled ticks), coloured by `colour`."""
    axes = []
    for name in dimensions:
        values = frame[name]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.isna().all() and values.notna().any():
            labels = sorted({str(v) for v in values.dropna()})
            codes = [labels.index(str(v)) if v is not None else None for v in values]
            axes.append(dict(label=name, values=codes, tickvals=list(range(len(labels))), ticktext=labels))
            continue
        axis = dict(label=OUTCOMES.get(name, name), values=numeric.tolist())
        if name in ranges:
            axis["constraintrange"] = list(ranges[name])
        axes.append(axis)
    line = (
        dict(
            color=pd.to_numeric(frame[colour], errors="coerce").tolist(), colorscale="Viridis", showscale=True
        )
        if colour
        else {}
    )
    figure = go.Figure(go.Parcoords(dimensions=axes, line=line))
    figure.update_layout(height=420, margin=dict(l=60, r=60, t=60, b=30))
    return figure


def importance_figure(found: dict[str, dict[str, float]]) -> go.Figure:
    """Horizontal bars: each varied field's importance for each outcome (Optuna's PED-ANOVA)."""
    figure = go.Figure()
    for outcome, importances in found.items():
        figure.add_trace(
            go.Bar(y=list(importances), x=list(importances.values()), name=OUTCOMES[outcome], orientation="h")
        )
    figure.update_layout(
        barmode="group",
        height=120 + 60 * max(len(v) for v in found.values()),
        xaxis_title="importance (sums to 1 per outcome)",
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return figure
