"""Run: one run, named by the URL (`Run?run=NAME`): live progress, stop, resume, evaluate, export."""

import streamlit as st

from core import MISSING
from core.compare import curve_of
from core.jobs.lifecycle import ACTIVE_STATES, job_view, start_training, with_live_states
from core.machine.system import training_capability
from core.remote.hf_jobs import TERMINAL_STAGES, job_record
from core.store.files import read_jsonl
from core.store.paths import runs_root
from core.store.runs import (
    ADAPTER_DIR,
    EVENTS_FILE,
    latest_checkpoint,
    list_runs,
    read_run_folder,
)
from core.store.seed import prepare_runs_root
from core.train.progress import format_duration, training_progress
from ui.bench_panel import bench_panel
from ui.charts import run_loss_figure
from ui.evaluate_panel import evaluate_panel
from ui.export_panel import export_panel
from ui.hf_jobs import job_panel
from ui.jobs import POLL_SECONDS, act, any_job_active, delete_controls, stop_controls
from ui.labels import state_label
from ui.links import COMPARE_PAGE, TRAIN_PAGE, forget_choice, record_choice, show_flash, synced_choice
from ui.lookups import cached_gpus
from ui.owner import access_panel
from ui.remote import elsewhere_notice, remote_sync, synced_remote
from ui.text import escape_markdown

PICK = "run_page_pick"  # the run picker's key

st.set_page_config(page_title="Run · PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()
show_flash()


def forget_run() -> None:
    """After a delete: the page with no run named."""
    forget_choice("run", PICK)
    st.rerun()


def watched(path) -> bool:
    """Whether the page follows the run live: a job of it is active here, its training runs
    elsewhere (a synced copy), or it was launched on Hugging Face Jobs and has not ended."""
    launched = bool(job_record(path)) and read_run_folder(path).state in ACTIVE_STATES
    return any_job_active(path) or job_view(path, "train").elsewhere or launched


def live_view(path, was_watched: bool) -> None:
    """Heading, progress, loss chart, log and the job's buttons; reruns itself while a job is
    active here or elsewhere."""
    sync = remote_sync(path.parent)  # a copy of a run elsewhere is fresh as of this sync
    run = read_run_folder(path)
    view = job_view(path, "train")
    following = watched(path)
    if following != was_watched:
        st.rerun()  # start or stop polling
    state = run.state
    st.markdown(f"### {state_label(state)} · {escape_markdown(run.name)}")
    if view.waiting_for:
        st.info(
            f"Queued: waiting for {escape_markdown(view.waiting_for)} to finish (one job at a time on this machine)."
        )
    elif state == "queued" and not view.active:
        st.info("Queued but not started.")
    if view.stop_requested:
        st.warning("Stopping…: the job saves a checkpoint at its current step, then ends.")
    if view.elsewhere:
        elsewhere_notice(path.parent, run.name, view, sync, st)
    record = job_record(path)
    stage = job_panel(record, path) if record else None
    launched = bool(record) and stage not in TERMINAL_STAGES  # not known to have ended: no second start
    ended_there = bool(record) and stage in TERMINAL_STAGES and state in ("queued", "running")
    if ended_there:
        st.warning(
            f"The Hugging Face job ended ({escape_markdown(stage)}) without recording its end here: this copy "
            "still says it runs. Delete it, or resume it where its checkpoints are."
        )
    if run.broken:
        st.error("This run folder is broken: " + escape_markdown("; ".join(run.problems)))
        delete_controls(path, run.name, st.columns(4)[3], forget_run)
        return
    if view.error or run.status.get("error"):
        st.error(escape_markdown(view.error or run.status.get("error")))

    try:
        events, skipped = read_jsonl(path / EVENTS_FILE)
    except OSError as exc:
        st.warning(f"The run's events cannot be read: {escape_markdown(exc)}")
        events, skipped = [], 0
    progress = training_progress(run.status, events, running=view.active and state == "running")
    pace = f" · {progress.seconds_per_step:.2f} s/step" if progress.seconds_per_step else ""
    st.progress(progress.fraction, text=f"step {progress.step}/{progress.max_steps or '?'}{pace}")
    columns = st.columns(4)
    columns[0].metric("Elapsed", format_duration(progress.elapsed_s))
    columns[1].metric("ETA", format_duration(progress.eta_s))
    columns[2].metric("Loss", MISSING if progress.loss is None else f"{progress.loss:.4f}")
    columns[3].metric(
        "Memory",
        MISSING if progress.memory_gb is None else f"{progress.memory_gb:.2f} GB",
        help="GPU reserved memory on a GPU; process RSS on a CPU",
    )
    curve = curve_of(events, skipped)
    if len(curve):
        weight = st.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="run_smoothing")
        st.plotly_chart(run_loss_figure(curve, weight), key="run_loss_chart")
    elif not run.imported:
        st.caption("The loss chart appears with the first logged step.")
    with st.expander("Log (last 20 lines)", expanded=state in ("failed", "running", "queued")):
        st.code("\n".join(view.tail()) or "(no output yet)", language="log")

    actions = st.columns(4)
    checkpoint = latest_checkpoint(path)
    if view.active:
        stop_controls(path, view, ("Stopping…" if view.stop_requested else "Stop", "Kill"), actions[:2])
    elif view.elsewhere:
        pass  # stopped through the remote (above): its side's job resumes it there
    elif state in ("stopped", "failed") and not run.imported:
        label = f"Resume from {checkpoint.name}" if checkpoint else "Restart (no checkpoint)"
        if actions[0].button(label, type="primary"):
            act(lambda: start_training(path, resume=True))
    elif state == "queued" and not launched and actions[0].button("Start", type="primary"):
        act(lambda: start_training(path))
    if not run.imported:
        actions[1].page_link(
            TRAIN_PAGE,
            label="New run from this config",
            icon=":material/content_copy:",
            query_params={"from": run.name},
            help="the Train form, filled with this run's settings",
        )
    actions[2].page_link(
        COMPARE_PAGE, label="Compare", icon=":material/compare_arrows:", query_params={"runs": run.name}
    )
    if not following or ended_there:
        delete_controls(path, run.name, actions[3], forget_run)


root = runs_root()
st.title("Run")
synced_remote(root)
try:
    prepare_runs_root(root)  # a shared link to a lab run may be the first page a session opens
except OSError as exc:
    st.error(f"Cannot add the lab's recorded runs to {root}: {escape_markdown(exc)}")
try:
    runs = with_live_states(list_runs(root))
except OSError as exc:
    st.error(f"Cannot read the runs folder {root}: {escape_markdown(exc)}")
    st.stop()
if not runs:
    st.info("No runs yet.")
    st.page_link(TRAIN_PAGE, label="Start one on Train", icon=":material/model_training:")
    st.stop()
names = [run.name for run in runs]
notice = st.empty()  # why no run is shown, above the picker
wanted = synced_choice(
    "run",
    PICK,
    lambda value: names[0] if value is None else value if value in names else None,
    lambda pick: pick in names,
)
name = st.selectbox(
    "Run",
    names,
    key=PICK,
    placeholder="Pick a run",
    help="The page's address names the run: copy it to share or bookmark this run.",
)
if name is None:
    notice.warning(f"There is no run named {escape_markdown(repr(wanted))} in {root}; pick one below.")
    st.stop()
record_choice("run", PICK, name)
path = root / name
run = read_run_folder(path)
following = watched(path)
st.fragment(run_every=POLL_SECONDS if following else None)(live_view)(path, following)

if run.state == "completed" and (path / ADAPTER_DIR).is_dir():
    capability = training_capability(cached_gpus())
    st.divider()
    evaluate_panel(root, path, capability.available)
    bench_panel(path, capability.available)
    st.divider()
    export_panel(path, capability)
    st.divider()
with st.expander("Config"):
    st.json(run.config, expanded=False)
if run.metrics:
    with st.expander("Metrics"):
        st.json(run.metrics, expanded=False)
