"""The app's Streamlit secrets as a plain dict (core never imports Streamlit)."""

from __future__ import annotations

from typing import Any

import streamlit as st


def app_secrets() -> dict[str, Any]:
    """st.secrets as a dict, or {} when the app has none: Streamlit raises its own error type
    for a missing secrets.toml."""
    try:
        return dict(st.secrets)
    except Exception:
        return {}
