"""Settings the pages read from Streamlit secrets, without core importing Streamlit."""

from __future__ import annotations

from typing import Any, Callable, Mapping


def secrets_dict(load: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """The secrets `load` returns (the page passes `lambda: st.secrets`) as a plain dict, or {}
    when the app has none: Streamlit raises its own error type for a missing secrets.toml."""
    try:
        return dict(load())
    except Exception:
        return {}
