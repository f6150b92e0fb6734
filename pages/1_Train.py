"""Train: a new run from a preset or another run's settings, checked, shown as the command that
runs, and started as a job; a sweep of it, or a copy of a run with one field changed, queued; the
queue of jobs on this machine."""

import shlex

import streamlit as st

from core import MISSING
from core.jobs.lifecycle import (
    ACTIVE_STATES,
    JobError,
    delete_run,
    job_view,
    start_training,
    with_live_states,
)
from core.machine.devices import PlanError, device_facts_from
from core.machine.system import training_capability
from core.remote.dashboard import configured_remote
from core.store.paths import runs_root
from core.store.runs import (
    RunNameError,
    load_run,
    taken_names,
    validate_run_name,
)
from core.train.config import ConfigError, parse_config, with_resolved_paths
from core.train.estimate import estimate_memory
from core.train.plan import plan_training
from core.train.presets import PRESETS, closest_preset, propose_run_name, train_command
from ui.config_form import config_fields, fill_form, form_document, restore_form, save_form
from ui.data import recipe_into_form
from ui.hf_jobs import jobs_launcher
from ui.jobs import POLL_SECONDS, new_queued_run
from ui.labels import state_label
from ui.links import open_run, run_link, show_flash
from ui.lookups import cached_gpus, runs_of
from ui.owner import access_panel, owner_only
from ui.secrets import app_secrets
from ui.sweeps import SHOWN_ITEMS, keep_queue_going, queue_controls, sweep_panels
from ui.text import escape_markdown

st.set_page_config(page_title="Train · PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()
show_flash()


def start_form(can_train: bool) -> None:
    """The form's first values: another run's settings (`Train?from=RUN`), else a preset: the tiny
    CPU run only where it can run now."""
    source = st.query_params.get("from")
    if source and st.session_state.get("train_filled_from") != source:
        try:
            config = read_source_config(source)
        except (RunNameError, OSError, ValueError) as exc:
            st.warning(f"Cannot start from run {escape_markdown(repr(source))}: {escape_markdown(exc)}")
        else:
            st.session_state["train_preset"] = closest_preset(config)
            if refused := fill_form(config):
                st.warning(
                    f"Run {escape_markdown(source)}'s values for {', '.join(refused)} cannot be used; the defaults stand in."
                )
            st.session_state["train_run_name"] = ""  # a name proposed for the new config
            st.session_state["train_filled_from"] = source
            return
    if "train_preset" not in st.session_state:
        st.session_state["train_preset"] = "cpu_smoke" if can_train and not cached_gpus() else "t1_baseline"
        fill_form(PRESETS[st.session_state["train_preset"]].config())


def read_source_config(name: str) -> dict:
    """The config of the run a new one starts from."""
    run = load_run(root, name)
    if run.broken:
        raise ValueError("; ".join(run.problems))
    return run.config


def what_will_run(config, name: str | None, preset: str) -> str | None:
    """The device, backend and memory estimate of the config here; returns why it cannot run here."""
    st.subheader("What will run")
    plan, problem = None, None
    if config is not None:
        try:
            plan = plan_training(config, device_facts_from(cached_gpus()))
        except PlanError as exc:
            problem = str(exc)
    columns = st.columns(3)
    if plan:
        columns[0].metric(
            "Device",
            plan.device.upper(),
            help=f"backend {plan.backend}, optimizer {plan.optimizer}, precision {plan.precision}",
        )
        columns[1].metric("Backend", plan.backend)
    estimate = estimate_memory(config) if config else None
    if estimate:
        columns[2].metric(
            "Peak GPU memory (estimate)",
            f"≈ {estimate.peak_gb:.1f} GB",
            help=f"weights {estimate.weights_gb:.2f} GB + training {estimate.training_gb:.2f} GB, "
            "scaled from the lab's T4 measurements; a rough guide, not a promise",
        )
    elif config is not None:
        columns[2].metric(
            "Peak memory (estimate)", MISSING, help="only the lab's Llama 3.2 1B/3B can be estimated"
        )
    for warning in plan.warnings if plan else ():
        st.warning(escape_markdown(warning))
    if problem:
        st.warning(
            f"This config cannot run here: {escape_markdown(problem)}. The command below runs it where it can."
        )
    if config is not None and name is not None:
        st.code(shlex.join(train_command(name, config.to_dict(), preset=preset)), language="bash")
    elif config is None:
        st.caption("The command appears when every field is valid.")
    return problem


def start(config, name: str) -> None:
    """Create the run and start its job; open its page, or say why not (and keep nothing)."""
    if not owner_only() or (path := new_queued_run(root, name, config)) is None:
        return
    try:
        start_training(path)
    except (JobError, OSError) as exc:
        delete_run(path)
        st.error(f"Could not start the job ({escape_markdown(exc)}); the run was not kept.")
    else:
        save_form(next_name=True)
        open_run(name)


def active_runs() -> list:
    """The runs whose training job is queued or running ([] when the runs folder cannot be read)."""
    try:
        return [run for run in with_live_states(runs_of(root)) if run.state in ACTIVE_STATES]
    except OSError as exc:
        st.error(f"Cannot read the runs folder {root}: {escape_markdown(exc)}")
        return []


def queue(was_active: bool) -> None:
    """Every queued or running training job on this machine, with links to their runs; drawn
    again every POLL_SECONDS while there is one."""
    active = active_runs()
    if bool(active) != was_active:
        st.rerun()
    st.subheader(f"Queue ({len(active)})")
    if not active:
        st.caption(
            "No training job is queued or running. One job runs at a time here; the next starts by itself."
        )
    for run in active[:SHOWN_ITEMS]:  # the link short enough for a narrow column; the state under it
        waiting = job_view(run.path, "train").waiting_for
        step = f"step {run.status.get('step') or 0}/{run.status.get('max_steps') or '?'}"
        run_link(run.name)
        st.caption(
            escape_markdown(
                f"{state_label(run.state)} · {step}" + (f" · waiting for {waiting}" if waiting else "")
            )
        )
    if len(active) > SHOWN_ITEMS:
        st.caption(f"... and {len(active) - SHOWN_ITEMS} more.")
    queue_controls(root)


root = runs_root()
keep_queue_going(root)
capability = training_capability(cached_gpus())
st.title("Train")
restore_form()
start_form(capability.available)
recipe_into_form(root)
form_column, queue_column = st.columns([3, 1])
with queue_column:
    busy = bool(active_runs())
    st.fragment(run_every=POLL_SECONDS if busy else None)(queue)(busy)
with form_column:
    preset = st.selectbox(
        "Start from",
        list(PRESETS),
        key="train_preset",
        format_func=lambda n: PRESETS[n].title,
        on_change=lambda: fill_form(PRESETS[st.session_state["train_preset"]].config()),
    )
    st.caption(PRESETS[preset].description)
    document = form_document()
    try:
        config, problems = with_resolved_paths(parse_config(document)), {}
    except ConfigError as exc:
        config, problems = None, dict(exc.problems)

    try:
        taken = taken_names(root)
    except OSError as exc:
        st.error(f"Cannot read the runs folder {root}: {escape_markdown(exc)}")
        st.stop()
    proposal = propose_run_name(document, preset, taken)
    if st.session_state.get("train_run_name") in (None, "", st.session_state.get("train_name_proposal")):
        st.session_state["train_run_name"] = proposal
    st.session_state["train_name_proposal"] = proposal
    name = st.text_input(
        "Run name",
        key="train_run_name",
        help="1-64 letters, digits, '.', '_' or '-'; proposed from the config until you edit it",
    )
    try:
        validate_run_name(name)
        if name in taken:
            problems["name"] = f"a run named {name} already exists: pick another name"
    except RunNameError as exc:
        problems["name"] = str(exc)
    if "name" in problems:
        st.error(escape_markdown(problems["name"]), icon=":material/error:")
    config_fields(problems)
    plan_problem = what_will_run(config, None if "name" in problems else name, preset)
    if not capability.available:
        st.info(
            f"Training is not available in this installation ({capability.detail}). Run the command above on "
            "a machine with `pip install -r requirements-train.txt` and a GPU; copy its run folder into the "
            "runs folder to see it here."
        )
    if st.button("Start training", type="primary", disabled=not capability.available):
        if problems or config is None:
            st.error("Fix the problems marked above; nothing was created.")
        elif plan_problem:
            st.error(f"Cannot train here: {escape_markdown(plan_problem)}. Nothing was created.")
        else:
            start(config, name)
    jobs_launcher(root, configured_remote(app_secrets()), config, name, problems)
    sweep_panels(root, config, preset, device_facts_from(cached_gpus()))
save_form()
