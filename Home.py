"""Home: what the tool is for, every run at a glance, and what this machine offers.

The entry point: `streamlit run Home.py`. The other pages are Streamlit's own pages/ folder.
"""

import pandas as pd
import streamlit as st

from core import MISSING
from core.jobs.lifecycle import ACTIVE_STATES, with_live_states
from core.machine.system import system_report
from core.store.experiments_log import (
    MAX_IMPORT_BYTES,
    MAX_IMPORT_ROWS,
    LogFormatError,
    export_log,
    import_log,
)
from core.store.paths import runs_root
from core.store.runs import RUN_TABLE_COLUMNS, run_summary
from core.store.seed import prepare_runs_root
from ui.interop import bring_your_runs
from ui.jobs import POLL_SECONDS
from ui.labels import state_label
from ui.links import run_url, show_flash
from ui.lookups import cached_gpus, runs_of
from ui.owner import access_panel, owner_only
from ui.remote import remote_sync, synced_remote
from ui.sweeps import keep_queue_going
from ui.text import escape_markdown

PAGE_SIZE = 100  # rows of the runs table at a time: a thousand runs stay quick to draw

st.set_page_config(page_title="PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()
show_flash()
root = runs_root()
synced_remote(root)
keep_queue_going(root)  # a queue left by a restart goes on


def runs_table(was_active: bool, listed: list) -> None:
    """Counts and the runs table, read again every POLL_SECONDS while a job is queued or running
    (here, or elsewhere through the runs remote); otherwise the runs the page run `listed` (the
    fragment runs only with the page then, and a thousand runs are not listed twice)."""
    synced = remote_sync(root)
    try:
        runs = with_live_states(runs_of(root)) if was_active or synced is not None or not listed else listed
    except OSError as exc:
        st.error(f"Cannot read the runs folder {root}: {escape_markdown(exc)}")
        return
    if any(run.state in ACTIVE_STATES for run in runs) != was_active:
        st.rerun()
    if not runs:
        st.info(
            f"No runs yet in `{root}`. Import an experiments_log.csv below, or run "
            "`python -m core runs import FILE` (`python -m core runs seed` brings back the lab's runs)."
        )
    else:
        states = [run.state for run in runs]
        counts = st.columns(4)
        counts[0].metric("Runs", len(runs))
        counts[1].metric("Completed", states.count("completed"))
        counts[2].metric("Active", states.count("running") + states.count("queued"), help="running or queued")
        counts[3].metric("Broken", states.count("broken"))
        shown = runs
        if len(runs) > PAGE_SIZE:
            pages = -(-len(runs) // PAGE_SIZE)
            page = st.number_input(
                f"Page (of {pages}, {PAGE_SIZE} runs each, newest first)", 1, pages, 1, key="home_page"
            )
            shown = runs[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        table = pd.DataFrame([run_summary(run) for run in shown], columns=list(RUN_TABLE_COLUMNS))
        table["state"] = [state_label(state) for state in table["state"]]
        table["name"] = [run_url(name) for name in table["name"]]
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            placeholder=MISSING,
            column_config={
                **{key: st.column_config.Column(label) for key, label in RUN_TABLE_COLUMNS.items()},
                "name": st.column_config.LinkColumn(
                    RUN_TABLE_COLUMNS["name"],
                    pinned=True,
                    display_text=r"run=(.*)$",
                    help="Opens the run's page",
                ),
            },
        )
        for run in runs:
            if run.broken:
                st.warning(
                    f"**{escape_markdown(run.name)}** cannot be read: {escape_markdown('; '.join(run.problems))}"
                )
    st.caption(f"Runs folder: `{root}` (set `PEFT_RUNS_DIR` to use another).")


st.title("PEFT Dashboard")
st.markdown(
    "Fine-tune small instruct models with LoRA, see which configuration is better and why, "
    "and what each run really costs.  \n"
    "Ship the winner as a GGUF file and turn any topic into Anki flashcards on a CPU."
)

try:
    prepare_runs_root(root)
except OSError as exc:
    st.error(f"Cannot add the lab's recorded runs to {root}: {escape_markdown(exc)}")

table_area = st.container()

with st.expander("Import or export an experiments_log.csv"):
    upload_column, download_column = st.columns(2)
    with upload_column:
        upload = st.file_uploader(
            "The lab's CSV schema, one row per run",
            type=["csv"],
            help=f"At most {MAX_IMPORT_ROWS:,} rows ({MAX_IMPORT_BYTES / 2**20:g} MB)",
        )
        if upload is not None and st.button("Import runs") and owner_only():
            try:
                with st.spinner(f"Importing {escape_markdown(upload.name)}..."):
                    report = import_log(root, upload.getvalue().decode("utf-8-sig"), source=upload.name)
            except (LogFormatError, UnicodeDecodeError, OSError) as exc:
                st.error(f"{escape_markdown(upload.name)} was not imported: {escape_markdown(exc)}")
            else:
                st.success(f"{escape_markdown(upload.name)}: {escape_markdown(report.summary())}.")
                for problem in report.problems:
                    st.warning(f"Skipped {escape_markdown(problem)}")

bring_your_runs(root)

try:
    runs = with_live_states(runs_of(root))
except OSError as exc:
    st.error(f"Cannot read the runs folder {root}: {escape_markdown(exc)}")
    runs = []

with download_column:
    export = export_log(runs)
    st.download_button(
        "Download experiments_log.csv", export.text, file_name="experiments_log.csv", mime="text/csv"
    )
    if export.left_out:
        st.caption(f"{len(export.left_out)} unfinished or broken run(s) are left out.")

with table_area:
    active = any(run.state in ACTIVE_STATES for run in runs)
    st.fragment(run_every=POLL_SECONDS if active else None)(runs_table)(active, runs)

st.subheader("System")
report = system_report(root, cached_gpus())
machine, capabilities = st.columns([1, 2])
with machine:
    if report.gpus:
        for gpu in report.gpus:
            st.markdown(f"**GPU:** {gpu.name}, {gpu.memory_gb:g} GB")
    else:
        st.markdown(
            "**GPU:** no GPU. Training here is for the tiny CPU model; train real runs on a GPU machine."
        )
    memory = f"{report.memory_gb:g} GB RAM" if report.memory_gb else "RAM unknown"
    st.markdown(f"**CPU:** {report.cpu_count} cores, {memory}")
    disk = f"{report.free_disk_gb:g} GB free" if report.free_disk_gb is not None else "free space unknown"
    st.markdown(f"**Disk:** {disk} · **Python** {report.python}")
with capabilities:
    for capability in report.capabilities:
        icon = "✅" if capability.available else "❌"
        st.markdown(f"{icon} **{capability.name}:** {capability.detail}")
