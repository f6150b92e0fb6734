"""Lookups that are slow to repeat on every rerun, cached for every session of the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from core.compare import root_signature
from core.machine.devices import Gpu, detect_gpus
from core.store.runs import Run, list_runs


@st.cache_data(ttl=300, show_spinner=False)
def cached_gpus() -> list[Gpu]:
    """nvidia-smi takes up to seconds: ask it every few minutes, not on every rerun."""
    return detect_gpus()


@st.cache_resource(show_spinner="Loading the tokenizer…", max_entries=4)
def cached_tokenizer(model: str, chat_template: str, use_token: bool) -> Any:
    """A model's tokenizer with its chat template, loaded once per app (core.data.stats.load_tokenizer)."""
    from core.data.stats import load_tokenizer

    return load_tokenizer(model, chat_template, use_token=use_token)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_runs(root: str, signature: str) -> list[Run]:
    """list_runs, read again only when some run's config, status or metrics file changes.

    The signature comes as text (repr of core.compare.root_signature): Streamlit hashes a string
    much faster than thousands of nested tuples. A resource, not data: the list is shared by every
    rerun and session, not unpickled anew on each (40 ms for a thousand runs here);
    nothing changes it.
    """
    return list_runs(Path(root))


def runs_of(root: Path) -> list[Run]:
    """The runs under `root` (list_runs), from the cache while no run's files changed."""
    return cached_runs(str(root), repr(root_signature(root)))
