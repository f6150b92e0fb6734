"""Links between pages that carry what they show in the URL (a run's link can be shared)."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

RUN_PAGE = "pages/2_Run.py"
TRAIN_PAGE = "pages/1_Train.py"
COMPARE_PAGE = "pages/3_Compare.py"


def run_url(name: str) -> str:
    """The Run page's relative URL for run `name` (pages sit side by side under the app's root)."""
    return "Run?" + urlencode({"run": name})


def run_link(name: str, label: str | None = None) -> None:
    """A link to the run's own page."""
    st.page_link(RUN_PAGE, label=label or name, icon=":material/open_in_new:", query_params={"run": name})


def open_run(name: str) -> None:
    """Go to the run's page now."""
    st.switch_page(RUN_PAGE, query_params={"run": name})


def flash(message: str) -> None:
    """Show `message` as a toast on the next run of whatever page comes next."""
    st.session_state["flash"] = message


def show_flash() -> None:
    """The message a previous action left, once."""
    if message := st.session_state.pop("flash", None):
        st.toast(message, icon=":material/check_circle:")
