"""Links between pages that carry what they show in the URL (a run's link can be shared)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import streamlit as st

RUN_PAGE = "pages/2_Run.py"
TRAIN_PAGE = "pages/1_Train.py"
COMPARE_PAGE = "pages/3_Compare.py"


def run_url(name: str) -> str:
    """The Run page's relative URL for run `name` (pages sit side by side under the app's root)."""
    return "Run?" + urlencode({"run": name})


def run_link(name: str) -> None:
    """A link to the run's own page."""
    st.page_link(RUN_PAGE, label=name, icon=":material/open_in_new:", query_params={"run": name})


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


def synced_choice(
    param: str, key: str, initial: Callable[[str | None], Any], keep: Callable[[Any], bool] = lambda _: True
) -> str | None:
    """Keep the keyed widget `key` and the URL's `param` in step, before the widget is drawn; the
    URL's value.

    A URL that names a value (a link, a bookmark) sets the widget to `initial(value)` when it changed
    from outside; a visit without it (by the sidebar) puts the session's last value back into the URL.
    The widget is set again when Streamlit dropped it (another page was shown) or `keep` refuses it.
    A keyed widget, not one whose index comes from the URL: that would be a new widget at every change.
    """
    remembered = f"{key}__url"
    value = st.query_params.get(param)
    if value is None and st.session_state.get(remembered) is not None:
        value = st.session_state[remembered]
        st.query_params[param] = value
    if (
        st.session_state.get(remembered) != value
        or key not in st.session_state
        or not keep(st.session_state[key])
    ):
        st.session_state[key] = initial(value)
    st.session_state[remembered] = value
    return value


def record_choice(param: str, key: str, value: str) -> None:
    """After the widget: the URL, and the session's memory of it, follow the widget's value."""
    st.query_params[param] = st.session_state[f"{key}__url"] = value


def forget_choice(param: str, key: str) -> None:
    """Drop the URL's `param` and the session's memory of it (the run it named is gone)."""
    st.query_params.pop(param, None)
    st.session_state.pop(f"{key}__url", None)
