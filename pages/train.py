"""Train: configure a run from a preset, start it as a job, and watch, stop, resume or delete runs."""

import shlex

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.compare import downsample, read_curve, smooth
from core.evaluate.answers import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_NEW_TOKENS_LIMIT,
    EvalError,
    check_request,
    load_eval_results,
)
from core.evaluate.prompt_sets import PromptSetError, list_prompt_sets, save_prompt_set
from core.export.gguf_files import ExportError
from core.export.hub import HubError, hub_token, validate_repo_id
from core.export.pipeline import (
    DEFAULT_QUANTS,
    QUANTS,
    delete_merged,
    folder_size,
    read_export,
    validate_quants,
)
from core.export.verify import file_verdict
from core.jobs.lifecycle import (
    JOB_KINDS,
    JobError,
    delete_run,
    job_view,
    request_stop,
    start_job,
    start_training,
    with_live_states,
)
from core.machine.system import detect_gpus, training_capability
from core.models.generation import InferenceError, check_adapter
from core.store.files import read_jsonl
from core.store.paths import runs_root
from core.store.runs import (
    ADAPTER_DIR,
    EVENTS_FILE,
    GGUF_DIR,
    MERGED_DIR,
    STATE_ICONS,
    RunExistsError,
    RunNameError,
    create_run,
    initial_status,
    latest_checkpoint,
    list_runs,
    read_run_folder,
    validate_run_name,
)
from core.train.config import (
    BACKENDS,
    FIELD_HELP,
    NUMBER_BOUNDS,
    OPTIMIZERS,
    SCHEDULERS,
    WHOLE_BOUNDS,
    ConfigError,
    RunConfig,
    apply_overrides,
    default_config,
    parse_config,
    with_resolved_paths,
)
from core.train.estimate import estimate_memory
from core.train.plan import PlanError, device_facts_from, plan_training
from core.train.presets import PRESETS, overrides_from, propose_run_name, train_command
from core.train.progress import format_duration, training_progress
from ui.secrets import app_secrets

FIELD_GROUPS = {
    "Model and data": ("base_model", "dataset", "split", "max_seq_length", "chat_template", "load_in_4bit", "backend"),
    "LoRA": ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora"),
    "Training": ("max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_steps",
                 "lr_scheduler", "optimizer", "weight_decay", "seed", "packing", "train_on_responses_only"),
    "Checkpoints and logging": ("save_steps", "save_total_limit", "logging_steps", "note"),
}
CHOICES = {"lr_scheduler": SCHEDULERS, "optimizer": OPTIMIZERS, "backend": BACKENDS}
POLL_SECONDS = 2.0
VIEWS = ("New run", "Runs")


@st.cache_data(ttl=300, show_spinner=False)
def gpus() -> list:
    return detect_gpus()


def key(field: str) -> str:
    return f"train_field_{field}"


def widget_value(value):
    """A config value as its widget holds it."""
    return ", ".join(value) if isinstance(value, (list, tuple)) else value


def fill_form(config: dict) -> None:
    for field, value in {**default_config(), **config}.items():
        if field in default_config():
            st.session_state[key(field)] = widget_value(value)


def closest_preset(config: dict) -> str:
    """The preset a config differs from in the fewest fields (the base of its command line)."""
    return min(PRESETS, key=lambda name: len(overrides_from(config, PRESETS[name].config())))


def on_preset_change() -> None:
    fill_form(PRESETS[st.session_state["train_preset"]].config())


def field_widget(field: str, problem: str | None) -> None:
    label, help_text = field.replace("_", " ").capitalize(), FIELD_HELP[field]
    default = getattr(RunConfig(), field)
    if field in CHOICES:
        st.selectbox(label, CHOICES[field], key=key(field), help=help_text)
    elif isinstance(default, bool):
        st.checkbox(label, key=key(field), help=help_text)
    elif field in WHOLE_BOUNDS:
        low, high = WHOLE_BOUNDS[field]
        st.number_input(label, min_value=low, max_value=high, step=1, key=key(field), help=help_text,
                        placeholder="keep all" if field == "save_total_limit" else None)
    elif field in NUMBER_BOUNDS:
        low, high, _ = NUMBER_BOUNDS[field]
        if field == "learning_rate":
            st.number_input(label, min_value=1e-8, max_value=high, step=1e-5, format="%.1e", key=key(field),
                            help=help_text)
        else:
            st.number_input(label, min_value=low, max_value=0.99 if field == "lora_dropout" else high, step=0.01,
                            key=key(field), help=help_text)
    elif field == "note":
        st.text_area(label, key=key(field), help=help_text, height=68)
    else:
        st.text_input(label, key=key(field), help=help_text)
    if problem:
        st.error(problem, icon=":material/error:")


def form_document() -> dict:
    """The config document the form holds, with text fields typed as `--set` types them."""
    document = {field: st.session_state.get(key(field)) for field in default_config()}
    text_modules = document.get("target_modules")
    if isinstance(text_modules, str):
        document["target_modules"] = apply_overrides({}, [f"target_modules={text_modules}"])["target_modules"]
    return document


def new_run_form(root, can_train: bool, training_detail: str) -> None:
    if "train_preset" not in st.session_state:  # the tiny CPU run only where it can run now
        st.session_state["train_preset"] = "cpu_smoke" if can_train and not gpus() else "t1_baseline"
        fill_form(PRESETS[st.session_state["train_preset"]].config())
    preset = st.selectbox("Start from", list(PRESETS), key="train_preset", on_change=on_preset_change,
                          format_func=lambda name: PRESETS[name].title)
    st.caption(PRESETS[preset].description)

    document = form_document()
    try:
        config, problems = with_resolved_paths(parse_config(document)), {}
    except ConfigError as exc:
        config, problems = None, exc.problems

    taken = {path.name for path in root.iterdir()} if root.is_dir() else set()
    proposal = propose_run_name(document, preset, taken)
    if st.session_state.get("train_run_name") in (None, "", st.session_state.get("train_name_proposal")):
        st.session_state["train_run_name"] = proposal
    st.session_state["train_name_proposal"] = proposal
    name = st.text_input("Run name", key="train_run_name",
                         help="1-64 letters, digits, '.', '_' or '-'; proposed from the config until you edit it")
    try:
        validate_run_name(name)
        if name in taken:
            problems["name"] = f"a run named {name} already exists: pick another name"
    except RunNameError as exc:
        problems["name"] = str(exc)
    if "name" in problems:
        st.error(problems["name"], icon=":material/error:")

    for group, fields in FIELD_GROUPS.items():
        with st.expander(group, expanded=group != "Checkpoints and logging"):
            columns = st.columns(2)
            for index, field in enumerate(fields):
                with columns[index % 2]:
                    field_widget(field, problems.get(field))
    for field in set(problems) - {"name"} - set(default_config()):
        st.error(f"{field}: {problems[field]}")

    st.subheader("What will run")
    plan, plan_problem = None, None
    if config is not None:
        try:
            plan = plan_training(config, device_facts_from(gpus()))
        except PlanError as exc:
            plan_problem = str(exc)
    columns = st.columns(3)
    if plan:
        columns[0].metric("Device", plan.device.upper(), help=f"backend {plan.backend}, optimizer {plan.optimizer}, "
                          f"precision {plan.precision}")
        columns[1].metric("Backend", plan.backend)
    estimate = estimate_memory(config) if config else None
    if estimate:
        columns[2].metric("Peak GPU memory (estimate)", f"≈ {estimate.peak_gb:.1f} GB",
                          help=f"weights {estimate.weights_gb:.2f} GB + training {estimate.training_gb:.2f} GB, "
                          "scaled from the lab's T4 measurements; a rough guide, not a promise")
    elif config is not None:
        columns[2].metric("Peak memory (estimate)", "–", help="only the lab's Llama 3.2 1B/3B can be estimated")
    for warning in plan.warnings if plan else ():
        st.warning(warning)
    if plan_problem:
        st.warning(f"This config cannot run here: {plan_problem}. The command below runs it where it can.")
    if config is not None and "name" not in problems:
        st.code(shlex.join(train_command(name, config.to_dict(), preset=preset)), language="bash")
    if not can_train:
        st.info(f"Training is not available in this installation ({training_detail}). Run the command above on "
                "a machine with `pip install -r requirements-train.txt` and a GPU; copy its run folder into the "
                "runs folder to see it here.")

    if st.button("Start training", type="primary", disabled=not can_train):
        if problems or config is None:
            st.error("Fix the problems marked above; nothing was created.")
        elif plan_problem:
            st.error(f"Cannot train here: {plan_problem}. Nothing was created.")
        else:
            try:
                path = create_run(root, name, config.to_dict(), status=initial_status("queued", config.max_steps))
            except (RunExistsError, RunNameError, OSError) as exc:
                st.error(f"Could not create the run: {exc}")
                return
            try:
                start_training(path)
            except (JobError, OSError) as exc:
                delete_run(path)
                st.error(f"Could not start the job ({exc}); the run was not kept.")
            else:
                st.session_state["train_pending"] = {"view": "Runs", "run": name}
                st.rerun()


def loss_chart(path, weight: float) -> None:
    curve = read_curve(path / EVENTS_FILE)
    if not len(curve):
        st.caption("The loss chart appears with the first logged step.")
        return
    figure = go.Figure()
    steps, raw = downsample(curve.step, curve.loss)
    figure.add_trace(go.Scatter(x=steps, y=raw, mode="lines", name="loss", line={"color": "#9ecae1", "width": 1}))
    steps, smoothed = downsample(curve.step, smooth(curve.loss, weight))
    figure.add_trace(go.Scatter(x=steps, y=smoothed, mode="lines", name=f"smoothed ({weight:.2f})",
                                line={"color": "#08519c", "width": 2}))
    figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title="step",
                         yaxis_title="training loss", legend={"orientation": "h", "y": -0.25})
    st.plotly_chart(figure, key="train_loss_chart")


def any_job_active(path) -> bool:
    return any(job_view(path, kind).active for kind in JOB_KINDS)


def job_state(path, kind: str, title: str):
    """The eval or export job's state, progress, error and log; its Stop button."""
    view = job_view(path, kind)
    if view.state is None:
        return view
    icon, stage = STATE_ICONS.get(view.state, ""), view.status.get("stage") or ""
    if view.active:
        waiting = f" (waiting for {view.waiting_for})" if view.waiting_for else ""
        st.progress(float(view.status.get("fraction") or 0.0), text=f"{icon} {title} {view.state}: {stage}{waiting}")
        if st.button(f"Stop {title.lower()}", key=f"train_stop_{kind}", disabled=view.stop_requested):
            act(lambda: request_stop(path, kind))
    else:
        st.caption(f"Last {title.lower()}: {icon} {view.state}, ended {view.status.get('ended_at') or '?'}")
        if view.error and view.state != "completed":
            st.error(view.error)
    with st.expander(f"{title} log"):
        st.code("\n".join(view.tail()) or "(no output yet)", language="log")
    return view


def eval_panel(root, path, models_here: bool) -> None:
    st.markdown("#### Evaluate")
    st.caption("Greedy answers to a prompt set, checked automatically; compare them side by side on **Compare**.")
    view = job_state(path, "eval", "Evaluation")
    ggufs = sorted((path / GGUF_DIR).glob("*.gguf")) if (path / GGUF_DIR).is_dir() else []
    variants = [*(["adapter", "base"] if models_here else []), *(f"gguf:{gguf.name}" for gguf in ggufs)]
    if not models_here:
        st.info("The adapter and the base model need the training stack (torch, transformers, peft), which this "
                "installation lacks; exported GGUF files can be evaluated here.")
    if not variants:
        return
    sets = list_prompt_sets(root)
    columns = st.columns(3)
    variant = columns[0].selectbox("Answer with", variants, key="eval_variant",
                                   help="the run's adapter on its base model, the base model alone, or an exported GGUF")
    usable = [entry.name for entry in sets if entry.prompt_set]
    prompt_set = columns[1].selectbox("Prompt set", usable, key="eval_prompt_set")
    max_new_tokens = columns[2].number_input("Max new tokens", 1, MAX_NEW_TOKENS_LIMIT, DEFAULT_MAX_NEW_TOKENS,
                                             key="eval_max_new_tokens")
    for entry in sets:
        if entry.problem:
            st.warning(f"Prompt set {entry.name} cannot be used: {entry.problem}")
    if st.button("Evaluate", disabled=view.active, key="eval_start"):
        try:
            check_request(path, variant, int(max_new_tokens))
        except (EvalError, PromptSetError) as exc:
            st.error(str(exc))
        else:
            act(lambda: start_job(path, "eval", ["--variant", variant, "--prompts", prompt_set,
                                                 "--max-new-tokens", str(int(max_new_tokens))]))
    results = load_eval_results(path)
    if results:
        st.dataframe(pd.DataFrame([{
            "Variant": name,
            "Prompt set": rows[0].get("prompt_set"),
            "Passed all checks": f"{sum(bool(row.get('passed')) for row in rows)}/{len(rows)}",
            "Mean latency (s)": round(sum(row.get("latency_s") or 0 for row in rows) / len(rows), 2),
            "Evaluated": rows[0].get("created_at"),
        } for name, rows in results.items() if rows]), hide_index=True)
    with st.expander("Add a prompt set"):
        st.caption("JSON in the schema of data/eval_prompts.json: a name, a title and prompts with their checks.")
        upload = st.file_uploader("Prompt set (.json)", type=["json"], key="eval_upload")
        set_name = st.text_input("Save as", key="eval_set_name", placeholder="my_prompts")
        if st.button("Save prompt set", key="eval_save_set") and upload is not None:
            try:
                saved = save_prompt_set(root, set_name, upload.getvalue().decode("utf-8-sig"))
            except (PromptSetError, UnicodeDecodeError) as exc:
                st.error(f"Not saved: {exc}")
            else:
                st.success(f"Saved {set_name}: {len(saved.prompts)} prompts.")


def export_panel(path, models_here) -> None:
    st.markdown("#### Export to GGUF")
    st.caption("Merge the adapter into the base model in 16-bit, convert with llama.cpp, verify every file "
               "against the merged model, and optionally push to the Hugging Face Hub.")
    view = job_state(path, "export", "Export")
    if not models_here.available:
        st.info(f"Exporting needs the training stack here ({models_here.detail}). Run "
                f"`python -m core export {path.name}` where it is installed.")
    columns = st.columns([2, 2, 1])
    quants = columns[0].multiselect("GGUF types", QUANTS, default=list(DEFAULT_QUANTS), key="export_quants",
                                    help="q8_0 is what the lab shipped; k-quants are made from f16 by llama.cpp's quantizer")
    repo = columns[1].text_input("Push to Hub repo (optional)", key="export_repo", placeholder="your-user/my-model")
    delete_after = columns[2].checkbox("Delete merged/ after", key="export_delete_merged")
    if st.button("Export", disabled=view.active or not models_here.available, key="export_start"):
        try:
            arguments = [part for quant in validate_quants(quants) for part in ("--quant", quant)]
            check_adapter(path)
            secrets = None
            if repo.strip():
                arguments += ["--push", validate_repo_id(repo.strip())]
                secrets = {"HF_TOKEN": hub_token(app_secrets().get("HF_TOKEN"))}
        except (ExportError, InferenceError, HubError) as exc:
            st.error(str(exc))
        else:
            act(lambda: start_job(path, "export", arguments + (["--delete-merged"] if delete_after else []), secrets))
    export = read_export(path)
    if export:
        st.dataframe(pd.DataFrame([{
            "File": entry.get("file"), "Type": entry.get("quant"),
            "Size (MB)": round((entry.get("size") or 0) / 1e6, 2), "sha256": str(entry.get("sha256", ""))[:12],
            "Verification": file_verdict(entry.get("verification") or {}),
        } for entry in export.get("files", [])]), hide_index=True)
        hub = export.get("hub") or {}
        if hub.get("url"):
            st.markdown(f"Pushed to [{hub.get('repo_id', hub['url'])}]({hub['url']}) (commit `{hub.get('commit')}`).")
        st.caption(f"Files in {path / GGUF_DIR}. Converter: {(export.get('converter') or {}).get('version', '?')}.")
    merged = path / MERGED_DIR
    if merged.is_dir() and not view.active:
        if st.button(f"Delete merged/ ({folder_size(merged) / 1e6:.0f} MB)", key="export_delete_now"):
            act(lambda: delete_merged(path))


def run_panel(path, was_active: bool, models_here) -> None:
    run = read_run_folder(path)
    view = job_view(path, "train")
    if any_job_active(path) != was_active:
        st.rerun()  # start or stop polling
    state = run.state
    st.markdown(f"### {STATE_ICONS.get(state, '')} {run.name} · {state}")
    if view.waiting_for:
        st.info(f"Queued: waiting for {view.waiting_for} to finish (one job at a time on this machine).")
    elif state == "queued" and not view.active:
        st.info("Queued but not started.")
    if view.stop_requested:
        st.warning("Stop requested: the job is saving a checkpoint.")
    if run.broken:
        st.error("This run folder is broken: " + "; ".join(run.problems))
        delete_controls(path, run.name, st.columns(4)[3])
        return
    if view.error or run.status.get("error"):
        st.error(view.error or run.status.get("error"))

    events, _ = read_jsonl(path / EVENTS_FILE)
    progress = training_progress(run.status, events, running=view.active and state == "running")
    pace = f" · {progress.seconds_per_step:.2f} s/step" if progress.seconds_per_step else ""
    st.progress(progress.fraction, text=f"step {progress.step}/{progress.max_steps or '?'}{pace}")
    columns = st.columns(4)
    columns[0].metric("Elapsed", format_duration(progress.elapsed_s))
    columns[1].metric("ETA", format_duration(progress.eta_s))
    columns[2].metric("Loss", "–" if progress.loss is None else f"{progress.loss:.4f}")
    columns[3].metric("Memory", "–" if progress.memory_gb is None else f"{progress.memory_gb:.2f} GB",
                      help="GPU reserved memory on a GPU; process RSS on a CPU")
    weight = st.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="train_smoothing")
    loss_chart(path, weight)
    with st.expander("Log (last 20 lines)", expanded=state in ("failed", "running", "queued")):
        st.code("\n".join(view.tail()) or "(no output yet)", language="log")

    actions = st.columns(4)
    checkpoint = latest_checkpoint(path)
    if view.active:
        if actions[0].button("Stop", type="primary", disabled=view.stop_requested):
            act(lambda: request_stop(path, "train"))
    elif state in ("stopped", "failed") and not run.imported:
        label = f"Resume from {checkpoint.name}" if checkpoint else "Restart (no checkpoint)"
        if actions[0].button(label, type="primary"):
            act(lambda: start_training(path, resume=True))
    elif state == "queued":
        if actions[0].button("Start", type="primary"):
            act(lambda: start_training(path))
    if not run.imported and actions[2].button("New run from this config", help="the form, filled with this run's "
                                                  "settings, to change and start as a new run"):
        st.session_state["train_pending"] = {"view": "New run", "config": run.config}
        st.rerun()
    if not any_job_active(path):
        delete_controls(path, run.name, actions[3])

    if state == "completed" and (path / ADAPTER_DIR).is_dir():
        st.divider()
        eval_panel(path.parent, path, models_here.available)
        st.divider()
        export_panel(path, models_here)
        st.divider()
    with st.expander("Config"):
        st.json(run.config, expanded=False)
    if run.metrics:
        with st.expander("Metrics"):
            st.json(run.metrics, expanded=False)


def delete_controls(path, name: str, column) -> None:
    """Delete…, then a confirmation; only for a run with no job running."""
    if column.button("Delete…"):
        st.session_state["train_confirm_delete"] = name
    if st.session_state.get("train_confirm_delete") == name:
        st.warning(f"Delete {name} and everything in its folder (checkpoints, adapter, exports)?")
        confirm, cancel = st.columns(2)
        if confirm.button(f"Yes, delete {name}", type="primary"):
            st.session_state.pop("train_confirm_delete")
            act(lambda: delete_run(path))
        if cancel.button("Cancel"):
            st.session_state.pop("train_confirm_delete")
            st.rerun()


def act(action) -> None:
    """Run a job action; show why it failed, or rerun the whole page to show its effect."""
    try:
        action()
    except (JobError, OSError) as exc:
        st.error(str(exc))
    else:
        st.rerun()


def runs_view(root, models_here) -> None:
    runs = [run for run in with_live_states(list_runs(root)) if not run.imported]
    if not runs:
        st.info("No runs trained here yet: start one under **New run**. (Imported runs are on Home and Compare.)")
        return
    names = [run.name for run in runs]
    states = {run.name: run.state for run in runs}
    if st.session_state.get("train_selected") not in names:
        st.session_state["train_selected"] = names[0]
    name = st.selectbox("Run", names, key="train_selected",
                        format_func=lambda n: f"{STATE_ICONS.get(states[n], '')} {n} · {states[n]}")
    with st.expander(f"All runs ({len(runs)})"):
        st.dataframe(pd.DataFrame([{
            "Run": run.name, "State": f"{STATE_ICONS.get(run.state, '')} {run.state}",
            "Step": f"{run.status.get('step') or 0}/{run.status.get('max_steps') or '?'}",
            "Base model": run.config.get("base_model"), "Created": run.status.get("created_at"),
        } for run in runs]), hide_index=True)
    path = root / name
    active = any_job_active(path)
    st.fragment(run_every=POLL_SECONDS if active else None)(run_panel)(path, active, models_here)


st.title("Train")
root = runs_root()
for kept in [name for name in st.session_state if name.startswith("train_field_")] + ["train_run_name", "train_preset"]:
    if kept in st.session_state:  # keep the form while the Runs view is shown (Streamlit drops unrendered widgets)
        st.session_state[kept] = st.session_state[kept]
capability = training_capability(gpus())
pending = st.session_state.pop("train_pending", None)
if pending:
    st.session_state["train_view"] = pending["view"]
    if "run" in pending:
        st.session_state["train_selected"] = pending["run"]
    if "config" in pending:
        st.session_state["train_preset"] = closest_preset(pending["config"])
        fill_form(pending["config"])
        st.session_state["train_run_name"] = ""  # a name proposed for the new config
view_name = st.radio("View", VIEWS, key="train_view", horizontal=True, label_visibility="collapsed")
if view_name == "New run":
    new_run_form(root, capability.available, capability.detail)
else:
    runs_view(root, capability)
