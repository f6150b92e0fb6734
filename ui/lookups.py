"""Lookups that are slow to repeat on every rerun, cached for every session of the app."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.machine.devices import Gpu, detect_gpus


@st.cache_data(ttl=300, show_spinner=False)
def cached_gpus() -> list[Gpu]:
    """nvidia-smi takes up to seconds: ask it every few minutes, not on every rerun."""
    return detect_gpus()


@st.cache_resource(show_spinner="Loading the tokenizer…", max_entries=4)
def cached_tokenizer(model: str, chat_template: str) -> Any:
    """A model's tokenizer with its chat template, loaded once per app (core.data.stats.load_tokenizer)."""
    from core.data.stats import load_tokenizer

    return load_tokenizer(model, chat_template)
