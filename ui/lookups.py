"""Lookups that are slow to repeat on every rerun, cached for every session of the app."""

from __future__ import annotations

import streamlit as st

from core.machine.devices import Gpu, detect_gpus


@st.cache_data(ttl=300, show_spinner=False)
def cached_gpus() -> list[Gpu]:
    """nvidia-smi takes up to seconds: ask it every few minutes, not on every rerun."""
    return detect_gpus()
