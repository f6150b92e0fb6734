"""The Run page's Export panel: merge, convert to GGUF, verify and push, as a job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import MISSING
from core.export.gguf_files import ExportError
from core.export.hub import HubError, hub_token, pushed_repo, validate_repo_id
from core.export.pipeline import (
    DEFAULT_QUANTS,
    QUANTS,
    delete_merged,
    export_file_rows,
    read_export,
    validate_quants,
)
from core.jobs.lifecycle import start_job
from core.machine.system import Capability
from core.models.generation import InferenceError, check_adapter
from core.store.files import folder_size, is_real_dir
from core.store.runs import GGUF_DIR, MERGED_DIR
from ui.jobs import act, job_panel
from ui.secrets import app_secrets
from ui.text import escape_markdown

FILE_COLUMNS = {
    "file": "File",
    "quant": "Type",
    "size_mb": "Size (MB)",
    "sha256": "sha256",
    "verification": "Verification",
}


def export_panel(path: Path, models_here: Capability) -> None:
    """Start an export, follow it, list its files, delete merged/."""
    st.markdown("#### Export to GGUF")
    st.caption(
        "Merge the adapter into the base model in 16-bit, convert with llama.cpp, verify every file "
        "against the merged model, and optionally push to the Hugging Face Hub."
    )
    view = job_panel(path, "export", "Export")
    if not models_here.available:
        st.info(
            f"Exporting needs the training stack here ({models_here.detail}). Run "
            f"`python -m core export {path.name}` where it is installed."
        )
    columns = st.columns([2, 2, 1])
    quants = columns[0].multiselect(
        "GGUF types",
        QUANTS,
        default=list(DEFAULT_QUANTS),
        key="export_quants",
        help="q8_0 is what the lab shipped; k-quants are made from f16 by llama.cpp's quantizer",
    )
    repo = columns[1].text_input(
        "Push to Hub repo (optional)", key="export_repo", placeholder="your-user/my-model"
    )
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
            st.error(escape_markdown(exc))
        else:
            act(
                lambda: start_job(
                    path, "export", arguments + (["--delete-merged"] if delete_after else []), secrets
                )
            )
    export = read_export(path)
    if export:
        st.dataframe(
            pd.DataFrame(export_file_rows(export), columns=list(FILE_COLUMNS)).rename(columns=FILE_COLUMNS),
            hide_index=True,
            placeholder=MISSING,
        )
        if pushed := pushed_repo(export):
            st.markdown(f"Pushed to [{escape_markdown(pushed[0])}]({pushed[1]}).")
        converter = export.get("converter")
        version = converter.get("version", "?") if isinstance(converter, dict) else "?"
        st.caption(f"Files in {path / GGUF_DIR}. Converter: " + escape_markdown(version))
    merged = path / MERGED_DIR
    deletable = is_real_dir(merged) and not view.active
    if deletable and st.button(
        f"Delete merged/ ({folder_size(merged) / 1e6:.0f} MB)", key="export_delete_now"
    ):
        act(lambda: delete_merged(path))
