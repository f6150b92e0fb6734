"""One answer on the Compare page: its checks, text, cost and the person's rating form."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from core import describe
from core.compare import Cell, Column, PromptRow
from core.evaluate.answers import variant_label
from core.evaluate.checks import CHECK_MARKS, FAIL, NEEDS_JUDGE, NOT_RUN, PASS, stored_verdict
from core.evaluate.ratings import answer_sha256, save_rating
from ui.owner import OWNER_ONLY, is_owner
from ui.text import escape_markdown

RATINGS = (None, 1, 2, 3, 4, 5)


def store_rating(run_path: Path, column: Column, prompt_id: str, answer: str, key: str) -> None:
    """Form callback: store the rating and note the person entered for `answer` (before the page
    reruns), when this session is the owner's."""
    if not is_owner():
        st.session_state["rating_problem"] = f"The rating for {column.label} was not saved. {OWNER_ONLY}"
        return
    try:
        save_rating(
            run_path,
            column.variant,
            prompt_id,
            st.session_state[f"{key}:rating"],
            st.session_state[f"{key}:note"],
            answer=answer,
        )
    except (OSError, ValueError) as exc:
        st.session_state["rating_problem"] = f"The rating for {column.label} was not saved: {describe(exc)}"
    else:
        st.session_state["rating_saved"] = f"Saved the rating of {column.label} on {prompt_id}."


VERDICT_WORDS = {PASS: "passed", FAIL: "failed", NEEDS_JUDGE: "needs a judge", NOT_RUN: "not run"}


def check_mark(check: dict) -> str:
    """A stored check result's mark (CHECK_MARKS): passed, failed, needs a judge, not run."""
    return CHECK_MARKS[stored_verdict(check)]


def check_lines(checks: Sequence[dict]) -> str:
    """Check results as Markdown lines: mark, name and detail (escaped), or "no checks"."""
    return (
        "  \n".join(
            f"{check_mark(check)} {escape_markdown(check.get('name'))}: {escape_markdown(check.get('detail', ''))}"
            for check in checks
        )
        or "no checks"
    )


def answer_cell(run_path: Path, column: Column, row: PromptRow, cell: Cell | None) -> None:
    """A column's answer to the row's prompt, with its check results and a rating form."""
    st.markdown(f"**{column.run}**  \n`{variant_label(column.variant)}`")
    if cell is None:
        st.caption("No answer to this prompt.")
        return
    st.markdown(check_lines(cell.checks))
    st.code(cell.answer, language=None, wrap_lines=True)
    latency = f"{cell.latency_s:.2f} s" if cell.latency_s is not None else "latency unknown"
    tokens = f", {cell.new_tokens:.0f} tokens" if cell.new_tokens is not None else ""
    st.caption(latency + tokens)
    # The answer's hash in the key: a new answer gets fresh widgets, not the old answer's rating.
    key = (
        f"rating|{column.run}|{column.variant}|{row.prompt_set}|{row.prompt_id}|{answer_sha256(cell.answer)}"
    )
    with st.form(key, border=False):
        st.selectbox(
            "Rating",
            RATINGS,
            index=RATINGS.index(cell.rating),
            key=f"{key}:rating",
            format_func=lambda value: "not rated" if value is None else "★" * value,
        )
        st.text_input("Note", value=cell.note, key=f"{key}:note")
        st.form_submit_button(
            "Save rating",
            key=f"{key}:save",
            on_click=store_rating,
            args=(run_path, column, row.prompt_id, cell.answer, key),
        )
