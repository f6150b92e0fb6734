"""Hugging Face Jobs on the pages: the Train page's launcher (hardware, price, the run's cost)
and the Run page's view of a launched job (stage, log, metrics; cancelled once a stop through
the remote is overdue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from core.export.gguf_files import environment_token
from core.jobs.lifecycle import delete_run, stop_grace_s
from core.remote.hf_jobs import (
    TERMINAL_STAGES,
    Hardware,
    HfJobError,
    JobReport,
    cancel_if_overdue,
    gpu_hardware,
    job_report,
    launch,
)
from core.remote.stores import BUCKET_SCHEME, RemoteError
from ui.jobs import new_queued_run
from ui.links import open_run
from ui.owner import owner_only
from ui.text import escape_markdown

REPORT_TTL_S = 10  # how often the Hub is asked about a job, whatever the sessions


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi()


@st.cache_data(ttl=600, show_spinner=False)
def _offered(token: str) -> list[Hardware]:
    return gpu_hardware(_api(), token)


@st.cache_data(ttl=REPORT_TTL_S, show_spinner=False)
def _report(job_id: str, token: str) -> JobReport:
    return job_report(_api(), {"job_id": job_id}, token)


def jobs_launcher(root: Path, remote: str, config: Any, name: str, problems: dict[str, str]) -> None:
    """The Train page's "Run on Hugging Face Jobs": shown when the runs remote is a bucket and a
    token is there; creates the run (queued) and launches it, or keeps nothing and says why."""
    token = environment_token()
    if not remote.startswith(BUCKET_SCHEME) or not token:
        return
    st.subheader("Or train on Hugging Face Jobs")
    try:
        offered = _offered(token)
    except HfJobError as exc:
        st.warning(escape_markdown(exc))
        return

    def label(hardware: Hardware) -> str:
        cost = hardware.cost_usd(config) if config is not None else None
        estimate = f" · this run ≈ ${cost:.2f}" if cost is not None else ""
        return f"{hardware.label} · ${hardware.usd_per_hour:.2f}/hour{estimate}"

    hardware = st.selectbox("GPU", offered, format_func=label, key="train_hf_flavor")
    st.caption(
        f"The job trains with `--sync` into `{escape_markdown(remote)}`: the run shows here live and is "
        "stopped from its page. Costs are estimated from the lab's T4 step times (setup included); "
        "other GPUs show their price only."
    )
    if not st.button("Launch on Hugging Face Jobs", disabled=hardware is None) or not owner_only():
        return
    if problems or config is None:
        st.error("Fix the problems marked above; nothing was created.")
        return
    path = new_queued_run(root, name, config)
    if path is None:
        return
    try:
        launch(root, name, config, remote, hardware.name, _api(), token)
    except (HfJobError, RemoteError) as exc:
        delete_run(path)
        st.error(f"Could not launch the job ({escape_markdown(exc)}); the run was not kept.")
        return
    open_run(name)


def job_panel(record: dict[str, Any], run_path: Path) -> str | None:
    """The launched job's stage, hardware, log tail and latest metrics; cancels it once a stop
    through the remote is overdue. Its stage, or None when the Hub cannot be asked."""
    token = environment_token()
    if not token:
        st.info(
            f"Launched on Hugging Face Jobs as {escape_markdown(record['job_id'])}; set HF_TOKEN to follow it."
        )
        return None
    try:
        report = _report(record["job_id"], token)
        if cancel_if_overdue(_api(), record, run_path, report, stop_grace_s(), token):
            st.warning("The job did not stop within the grace period of the stop request: it was cancelled.")
            _report.clear()
    except (HfJobError, RemoteError) as exc:
        st.warning(escape_markdown(exc))
        return None
    st.markdown(
        f"**Hugging Face job** `{escape_markdown(record['job_id'])}` on {escape_markdown(record.get('flavor'))}: "
        f"{escape_markdown(report.stage)}"
        + (f" ({escape_markdown(report.message)})" if report.message else "")
    )
    if report.metrics:
        st.caption(escape_markdown(", ".join(f"{key} {value}" for key, value in report.metrics.items())))
    with st.expander("Job log (last lines)", expanded=report.stage not in TERMINAL_STAGES):
        st.code("\n".join(report.log_tail) or "(no output yet)", language="log")
    return report.stage
