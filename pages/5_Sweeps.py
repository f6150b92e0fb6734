"""Sweeps: a sweep's members as one experiment — parallel coordinates over the varied fields and the
outcomes (the sliders brush them and filter the table), which field mattered for each outcome, the
best member against the base, and the members' loss curves. The sweep is in the URL
(`Sweeps?sweep=NAME`)."""

import streamlit as st
from plotly.colors import qualitative

from core import MISSING
from core.jobs.lifecycle import ACTIVE_STATES
from core.jobs.queue import read_queue
from core.store.paths import runs_root
from core.sweeps.definition import SweepError, list_sweeps, read_sweep
from core.sweeps.outcomes import (
    OBJECTIVE_OUTCOMES,
    OUTCOMES,
    best_member,
    config_changes,
)
from core.sweeps.search import study_counts
from core.train.config import format_setting
from ui.compare_sections import loss_curves_section
from ui.jobs import POLL_SECONDS
from ui.labels import state_label
from ui.links import record_choice, run_url, synced_choice
from ui.owner import access_panel
from ui.sweeps import (
    brushed,
    importance_figure,
    keep_queue_going,
    members_frame,
    parcoords_figure,
    sweep_analysis,
)
from ui.text import escape_markdown

st.set_page_config(page_title="Sweeps · PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()
root = runs_root()
st.title("Sweeps")
st.caption(
    "A grid or an Optuna search of runs, queued on the Train page or with `python -m core sweep`, "
    "compared as one experiment."
)
keep_queue_going(root)

try:
    names = list_sweeps(root)
except OSError as exc:
    st.error(f"Cannot read the sweeps of {root}: {escape_markdown(exc)}")
    st.stop()
if not names:
    st.info(
        "No sweep yet. Define one on the Train page (Sweep), or run e.g. `python -m core sweep lr --preset "
        "cpu_smoke --grid lora_r=4,8 --grid learning_rate=0.01,0.02`."
    )
    st.stop()
synced_choice(
    "sweep", "sweeps_sweep", lambda value: value if value in names else names[0], lambda v: v in names
)
name = st.selectbox("Sweep", names, key="sweeps_sweep")
record_choice("sweep", "sweeps_sweep", name)
try:
    sweep = read_sweep(root, name)
except SweepError as exc:
    st.error(escape_markdown(exc))
    st.stop()


def view(was_active: bool) -> None:
    """The sweep's state and members, drawn again every POLL_SECONDS while one trains or waits."""
    analysis = sweep_analysis(root, sweep)
    runs, rows = analysis.runs, analysis.rows
    active = any(row.state in ACTIVE_STATES for row in rows) or any(i.sweep == name for i in read_queue(root))
    if active != was_active:
        st.rerun()
    varied = ", ".join(f"{k} ∈ {{{', '.join(map(format_setting, v))}}}" for k, v in sweep.axes.items())
    searched = ", ".join(f"{k}: {v}" for k, v in sweep.search.items())
    size = (
        f"{len(sweep.members)} runs"
        if sweep.kind == "grid"
        else f"{len(sweep.members)} of {sweep.trials} trials"
    )
    trials = study_counts(root, sweep.name) if sweep.kind == "search" else {}
    st.markdown(
        escape_markdown(
            f"{sweep.kind.title()} from {sweep.preset or 'a config file'}: {varied or searched}; {size}; "
            f"objective {sweep.objective} ({sweep.direction}); created {sweep.created}."
        )
    )
    if trials:
        st.caption(
            "Optuna's study: "
            + ", ".join(f"{count} {state.lower()}" for state, count in sorted(trials.items()))
            + " (a trial refused before its run was created is failed there, with no run)"
        )
    states = [row.state for row in rows]
    counts = st.columns(4)
    counts[0].metric("Completed", states.count("completed"))
    counts[1].metric("Active", sum(state in ACTIVE_STATES for state in states), help="running or queued")
    counts[2].metric("Failed", states.count("failed"))
    counts[3].metric("Stopped", states.count("stopped"))
    if not rows:
        st.info("No member yet: the search creates its runs one trial at a time.")
        return
    frame = members_frame(rows, sweep.fields)
    outcomes = [key for key in OUTCOMES if frame[key].notna().any()]
    dimensions = [*sweep.fields, *outcomes]

    st.subheader("Parallel coordinates")
    objective = OBJECTIVE_OUTCOMES[sweep.objective]
    shown, ranges = brushed(frame, dimensions)
    st.plotly_chart(
        parcoords_figure(frame, dimensions, ranges, objective if objective in outcomes else None),
        key="parcoords",
    )
    table = shown.assign(
        run=[run_url(run) for run in shown["run"]], state=[state_label(s) for s in shown["state"]]
    )
    st.dataframe(
        table.rename(columns=OUTCOMES),
        hide_index=True,
        placeholder=MISSING,
        column_config={"run": st.column_config.LinkColumn("Run", display_text=r"run=(.*)$", pinned=True)},
    )
    st.caption(f"{len(shown)} of {len(frame)} members inside the sliders' ranges.")

    st.subheader("Which field mattered")
    found = {key: value for key, value in analysis.importance.items() if isinstance(value, dict)}
    missing = [
        f"{OUTCOMES[key]}: {value}" for key, value in analysis.importance.items() if isinstance(value, str)
    ]
    if found:
        st.plotly_chart(importance_figure(found), key="importance")
        st.caption(
            "Optuna's PED-ANOVA importance: how differently each field's values are spread among the best members "
            "than among all of them, per outcome."
        )
    for line in missing:
        st.caption(escape_markdown(line))

    st.subheader("Best member")
    best = best_member(sweep, rows)
    if best is None:
        st.info(f"No completed member has a {OUTCOMES[objective].lower()} yet.")
    else:
        st.markdown(
            f"[{escape_markdown(best.run)}]({run_url(best.run)}): {OUTCOMES[objective].lower()} "
            f"**{best.outcomes[objective]:.4g}**"
        )
        changes = config_changes(sweep.base, best.config)
        st.table(
            {
                "field": list(changes),
                "base": [format_setting(b) for b, _ in changes.values()],
                best.run: [format_setting(v) for _, v in changes.values()],
            }
        )

    members = [runs[row.run] for row in rows if row.run in runs and not runs[row.run].broken]
    if members:
        palette = qualitative.Plotly
        colours = {run.name: palette[index % len(palette)] for index, run in enumerate(members)}
        loss_curves_section(members, best.run if best else members[0].name, colours)


active = any(item.sweep == name for item in read_queue(root))
st.fragment(run_every=POLL_SECONDS * 2 if active else None)(view)(active)
