"""The run config as a form: one widget per config field, drawn from the field's own declaration.

The widgets carry no bounds of their own: whatever is typed reaches the app, which validates it
with the config's checks and shows the problem under the field, so what the form shows, what it
validates and what it starts are one thing.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.train.config import (
    FORM_GROUPS,
    FieldSpec,
    apply_overrides,
    default_config,
    field_problem,
    field_specs,
)
from ui.text import escape_markdown

NUMBER_FORMATS = {"learning_rate": ("%.1e", 1e-5)}  # (format, step) where the default 0.01 step is wrong


def key(field: str) -> str:
    """The session-state key of a config field's widget."""
    return f"train_field_{field}"


def widget_value(value: Any) -> Any:
    """A config value as its widget holds it (module lists as comma-separated text)."""
    return ", ".join(value) if isinstance(value, (list, tuple)) else value


def fill_form(config: dict[str, Any]) -> list[str]:
    """Put `config` (over the defaults) into the form's widgets; the fields whose values could not
    be taken (a run folder from elsewhere may hold anything), which keep the defaults."""
    refused = []
    for field, value in {**default_config(), **config}.items():
        if field not in default_config():
            continue
        if field_problem(field, value, check_files=False) is not None:
            refused.append(field)
            value = default_config()[field]
        st.session_state[key(field)] = widget_value(value)
    return refused


FORM_KEYS = ("train_preset", "train_run_name", "train_name_proposal")
"""The Train page's own widgets of the form, besides the config fields."""


SAVED_FORM = "train_form_saved"  # a plain session value, not a widget's: Streamlit keeps it across pages


def form_keys() -> list[str]:
    """The session keys of everything the Train form holds."""
    return [*(key(field) for field in default_config()), *FORM_KEYS]


def save_form(*, next_name: bool = False) -> None:
    """Remember the form as this run of the Train page leaves it; with `next_name`, without its run
    name (that run was started: the next one gets a name proposed)."""
    saved = {name: st.session_state[name] for name in form_keys() if name in st.session_state}
    if next_name:
        saved["train_run_name"] = ""
    st.session_state[SAVED_FORM] = saved


def restore_form() -> None:
    """Put back what the form held when the Train page last ran: Streamlit drops the state of
    widgets a run does not draw, so a visit to another page would lose it (in a browser, the
    widgets come back blank or at the preset)."""
    for name, value in (st.session_state.get(SAVED_FORM) or {}).items():
        if name not in st.session_state:
            st.session_state[name] = value


def form_document() -> dict[str, Any]:
    """The config document the form holds, text fields typed as the command line's `--set` types them."""
    document = {field: st.session_state.get(key(field)) for field in default_config()}
    if isinstance(document.get("target_modules"), str):
        document["target_modules"] = apply_overrides({}, [f"target_modules={document['target_modules']}"])[
            "target_modules"
        ]
    return document


def field_widget(spec: FieldSpec, problem: str | None) -> None:
    """The widget of one field, and its problem right under it."""
    options = {"key": key(spec.name), "help": spec.help}
    if spec.kind == "choice":
        st.selectbox(spec.label, spec.choices, **options)
    elif spec.kind == "bool":
        st.checkbox(spec.label, **options)
    elif spec.kind == "whole":
        st.number_input(spec.label, value=None, step=1, placeholder=spec.none_means or None, **options)
    elif spec.kind == "number":
        number_format, step = NUMBER_FORMATS.get(spec.name, (None, 0.01))
        st.number_input(spec.label, value=None, step=step, format=number_format, **options)
    elif spec.kind == "long_text":
        st.text_area(spec.label, height=68, **options)
    else:
        st.text_input(spec.label, placeholder=spec.none_means or None, **options)
    if problem:
        st.error(escape_markdown(problem), icon=":material/error:")


def config_fields(problems: dict[str, str]) -> None:
    """Every config field, in its group, with the problems found in the current values."""
    specs = field_specs()
    for group in FORM_GROUPS:
        with st.expander(group, expanded=group != FORM_GROUPS[-1]):
            columns = st.columns(2)
            for index, spec in enumerate(spec for spec in specs.values() if spec.group == group):
                with columns[index % 2]:
                    field_widget(spec, problems.get(spec.name))
    for field in set(problems) - {"name"} - set(specs):
        st.error(escape_markdown(f"{field}: {problems[field]}"))
