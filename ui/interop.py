"""Home's "Bring your runs" panel: upload a zip of a Trainer output folder or TensorBoard logs,
and download every run as TensorBoard event files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core.interop.archive import MAX_UNPACKED_BYTES
from core.interop.imports import import_zip, upload_file_name
from core.interop.tensorboard import MAX_EXPORT_RUNS, MAX_EXPORT_STEPS
from core.store.files import file_stamp
from core.store.runs import CONFIG_FILE, EVENTS_FILE, METRICS_FILE, Run, list_runs
from ui.owner import owner_only
from ui.text import escape_markdown

UPLOAD_HELP = (
    "A zip of a Trainer output folder (outputs/ with checkpoint-N/ folders: trainer_state.json, and "
    "adapter_config.json with adapter_model.safetensors to evaluate and export the run) or of TensorBoard "
    "logs (runs/, logs/: one run per folder of event files). The upload carries curves and small adapters "
    f"(Streamlit's upload limit, 5 MB here; at most {MAX_UNPACKED_BYTES >> 20} MB unpacked); `python -m core runs import-trainer FOLDER` and "
    "`runs import-tensorboard FOLDER` import any size from a folder on this machine. Pickles "
    "(training_args.bin, optimizer.pt, adapter_model.bin) are never loaded."
)


def bring_your_runs(root: Path) -> None:
    """The expander: the upload with an optional run name, and the TensorBoard download."""
    with st.expander("Bring your runs: a Trainer output folder or TensorBoard logs"):
        upload_column, download_column = st.columns(2)
        with upload_column:
            upload = st.file_uploader(
                "A zip of the folder", type=["zip"], help=UPLOAD_HELP, key="interop_upload"
            )
            name = st.text_input(
                "Run name (optional)",
                key="interop_name",
                help="Default: the zip's name; with several TensorBoard folders, the prefix of their names",
            )
            if upload is not None and st.button("Import the folder", key="interop_import") and owner_only():
                _import(root, upload.name, upload.getvalue(), name.strip() or None)
        with download_column:
            tensorboard_download(lambda: list_runs(root), "Prepare TensorBoard logs of every run", "interop")


def tensorboard_download(runs: Callable[[], list[Run]], label: str, key: str) -> None:
    """A button that writes the runs' TensorBoard logs (core.interop.tensorboard), then their download."""
    if st.button(label, key=f"{key}_export"):
        picked = runs()
        stamps = tuple(
            (
                str(run.path),
                *(file_stamp(run.path / name) for name in (EVENTS_FILE, CONFIG_FILE, METRICS_FILE)),
            )
            for run in picked
        )
        data, written, left_out = _tensorboard_zip(stamps, picked)
        st.download_button(
            f"Download {len(written)} run(s) as TensorBoard logs",
            data,
            file_name="tensorboard.zip",
            mime="application/zip",
            key=f"{key}_download",
        )
        st.caption(
            "Unzip and run `tensorboard --logdir tensorboard`: the HParams view lays the runs out by config. "
            f"A download holds at most {MAX_EXPORT_RUNS} runs and {MAX_EXPORT_STEPS:,} logged steps of each "
            "(evenly spread beyond that)."
            + (
                f" {len(left_out)} run(s) left out (no logged loss, unreadable, or over the cap)."
                if left_out
                else ""
            )
        )


@st.cache_data(max_entries=4, show_spinner="Writing TensorBoard logs...")
def _tensorboard_zip(stamps: tuple[object, ...], _runs: list[Run]) -> tuple[bytes, list[str], list[str]]:
    """tensorboard_zip of `_runs`, written once per state of their files (`stamps`: each run's
    path and the stamps of its events, config and metrics)."""
    from core.interop.tensorboard import tensorboard_zip

    return tensorboard_zip(_runs)


def _import(root: Path, upload_name: str, data: bytes, name: str | None) -> None:
    upload_name = upload_file_name(upload_name)
    try:
        with st.spinner(f"Importing {escape_markdown(upload_name)}..."):
            report = import_zip(root, data, upload_name=upload_name, name=name)
    except (ValueError, OSError) as exc:  # InteropError and RunNameError among them
        st.error(f"{escape_markdown(upload_name)} was not imported: {escape_markdown(exc)}")
        return
    message = f"{escape_markdown(upload_name)}: {escape_markdown(report.summary())}."
    (st.success if report.created else st.error)(message)
    for problem in report.problems:
        st.warning(f"Left out: {escape_markdown(problem)}")
