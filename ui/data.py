"""The Data page's pieces: the source picker, the charts of a measured dataset, the chat preview
and the recipe form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data.recipes import TAKES, RecipeError, RecipeSpec, build_recipe, load_recipe, save_recipe
from core.data.sources import DataSource, uploaded_files
from core.data.stats import LengthSummary, RowStats, source_counts, usable
from core.store.paths import DATA_DIR, PROJECT_DIR
from core.train.data import MalformedRow, standardize_conversation
from ui.config_form import fill_form, form_document
from ui.links import flash
from ui.owner import owner_only
from ui.text import escape_markdown

MARGINS = {"l": 10, "r": 10, "t": 30, "b": 10}
PREVIEW_ROWS = 5
ROLE_AVATARS = {"user": "user", "assistant": "assistant", "system": ":material/settings:"}


def project_files(root: Path) -> list[str]:
    """The dataset files a visitor may pick: the project's data/ samples and this runs root's uploads."""
    shipped = sorted(p for p in DATA_DIR.iterdir() if p.suffix in (".jsonl", ".parquet") and p.is_file())
    return [str(p.relative_to(PROJECT_DIR)) for p in shipped] + [str(p) for p in uploaded_files(root)]


def length_figure(tokens: np.ndarray, lengths: LengthSummary) -> go.Figure:
    """Token lengths of the usable rows, with max_seq_length as a line."""
    figure = go.Figure(go.Histogram(x=tokens, nbinsx=60, marker_color="#4c78a8", name="rows"))
    figure.add_vline(
        x=lengths.max_seq_length,
        line={"color": "#e45756", "dash": "dash"},
        annotation_text=f"max_seq_length {lengths.max_seq_length}",
    )
    figure.update_layout(
        height=300, margin=MARGINS, xaxis_title="tokens per conversation", yaxis_title="rows", bargap=0.05
    )
    return figure


def bar_figure(labels: list[str], counts: list[int], axis: str) -> go.Figure:
    """A plain bar chart of counts."""
    figure = go.Figure(go.Bar(x=labels, y=counts, marker_color="#72b7b2"))
    figure.update_layout(height=260, margin=MARGINS, xaxis_title=axis, yaxis_title="rows")
    return figure


def score_figure(scores: np.ndarray) -> go.Figure:
    """The histogram of the rows' scores."""
    figure = go.Figure(go.Histogram(x=scores, nbinsx=40, marker_color="#f58518"))
    figure.update_layout(height=260, margin=MARGINS, xaxis_title="score", yaxis_title="rows")
    return figure


def known(value: Any) -> bool:
    """Whether a cell of the source or score column holds a value (a list counts as one)."""
    return not pd.api.types.is_scalar(value) or not pd.isna(value)


def chat_preview(dataset: Any, table: Any, page: int) -> None:
    """PREVIEW_ROWS conversations from `page` (1-based), each drawn as a chat, text shown literally."""
    start = (page - 1) * PREVIEW_ROWS
    for index in range(start, min(start + PREVIEW_ROWS, len(table))):
        row = table.iloc[index]
        facts = [f"row {index}", f"{int(row['tokens'])} tokens" if row["problem"] == "" else row["problem"]]
        facts += [f"{name} {row[name]}" for name in ("source", "score") if known(row[name])]
        with st.container(border=True):
            st.caption(escape_markdown(" · ".join(map(str, facts))))
            try:
                messages = standardize_conversation(dataset[index])
            except MalformedRow as exc:
                st.warning(f"Skipped by training: {escape_markdown(exc)}")
                continue
            for message in messages:
                with st.chat_message(message["role"], avatar=ROLE_AVATARS[message["role"]]):
                    st.markdown(escape_markdown(message["content"]))


def recipe_form(source: DataSource, model: str, table: Any, *, patterns: bool) -> RecipeSpec:
    """The recipe's widgets over the measured rows; the spec they describe. Regular expressions
    only with `patterns` (the owner: a pattern can take the server's CPU for as long as it likes)."""
    names = [str(name) for name in source_counts(table).index]
    has_scores = table["score"].notna().any()
    left, right = st.columns(2)
    with left:
        low, high = st.columns(2)
        min_score = low.number_input(
            "Min score", value=None, step=0.1, disabled=not has_scores, key="recipe_min_score"
        )
        max_score = high.number_input(
            "Max score", value=None, step=0.1, disabled=not has_scores, key="recipe_max_score"
        )
        low, high = st.columns(2)
        min_tokens = low.number_input("Min tokens", value=None, step=16, min_value=0, key="recipe_min_tokens")
        max_tokens = high.number_input(
            "Max tokens", value=None, step=16, min_value=0, key="recipe_max_tokens"
        )
        sources = st.multiselect("Sources", names, key="recipe_sources", help="none picked: every source")
        locked = None if patterns else "the owner's: unlock in the sidebar"
        match = st.text_input(
            "Keep rows matching (regular expression)", key="recipe_match", disabled=not patterns, help=locked
        )
        exclude = st.text_input(
            "Drop rows matching (regular expression)",
            key="recipe_exclude",
            disabled=not patterns,
            help=locked,
        )
        drop = st.checkbox("Drop exact duplicates", value=True, key="recipe_drop_duplicates")
    with right:
        take = st.radio(
            "Sample",
            TAKES,
            horizontal=True,
            key="recipe_take",
            format_func=lambda t: {"random": "random rows", "top-score": "highest scores first"}[t],
        )
        rows = st.number_input(
            "Rows (empty: every row that passes)", value=None, min_value=1, step=1000, key="recipe_rows"
        )
        seed = st.number_input("Seed", value=3407, min_value=0, step=1, key="recipe_seed")
        validation = st.slider(
            "Held out for validation", 0.0, 0.5, 0.0, 0.01, key="recipe_validation", format="%.2f"
        )
        mix: dict[str, float] = {}
        if names and st.checkbox("Mix sources by weight (with Rows) or count", key="recipe_mix_on"):
            for name in sources or names:
                value = st.number_input(
                    escape_markdown(name), value=1.0, min_value=0.0, step=0.1, key=f"recipe_mix_{name}"
                )
                if value > 0:
                    mix[name] = float(value)
    return RecipeSpec(
        source=source,
        model=model,
        min_score=min_score,
        max_score=max_score,
        sources=tuple(sources),
        min_tokens=None if min_tokens is None else int(min_tokens),
        max_tokens=None if max_tokens is None else int(max_tokens),
        match=match if patterns else "",
        exclude=exclude if patterns else "",
        drop_duplicates=drop,
        mix=mix,
        take=take,
        rows=None if rows is None else int(rows),
        seed=int(seed),
        validation=float(validation),
    )


def usable_tokens(table: Any) -> np.ndarray:
    """The usable rows' token counts."""
    return usable(table)["tokens"].to_numpy()


def recipe_into_form(root: Path) -> None:
    """The Train form's data from the recipe a link names (`Train?recipe=NAME`), once per link."""
    name = st.query_params.get("recipe")
    if not name or st.session_state.get("train_filled_recipe") == name:
        return
    st.session_state["train_filled_recipe"] = name
    try:
        document = load_recipe(root, name)
    except (RecipeError, OSError) as exc:
        st.warning(f"Cannot train on recipe {escape_markdown(repr(name))}: {escape_markdown(exc)}")
        return
    source = document["source"]
    fill_form({**form_document(), "recipe": name, "dataset": source["dataset"], "split": source["split"]})
    st.session_state["train_run_name"] = ""  # a name proposed for the new config


def summary_metrics(table: Any, lengths: LengthSummary) -> None:
    """The measured dataset in six figures."""
    kept = usable(table)
    quantiles = lengths.quantiles
    figures = st.columns(6)
    figures[0].metric("Rows", f"{len(table):,}", help="rows of the split")
    figures[1].metric("Usable", f"{len(kept):,}", help="conversations training would use")
    figures[2].metric(
        "Median tokens",
        f"{quantiles.get(0.5, 0):,}",
        help=f"p90 {quantiles.get(0.9, 0):,} · p99 {quantiles.get(0.99, 0):,} · max {quantiles.get(1.0, 0):,}",
    )
    figures[3].metric(
        "Cut by max_seq_length", f"{lengths.truncated_rows:,}", help=f"{lengths.tokens_lost:,} tokens lost"
    )
    share = lengths.answer_share
    figures[4].metric(
        "Answer tokens",
        "—" if share is None else f"{share:.0%}",
        help="tokens of the answers' text: what train_on_responses_only trains on (with each answer's "
        "end-of-turn token)",
    )
    figures[5].metric("Exact duplicates", f"{int(kept['row_hash'].duplicated().sum()):,}")


LAB_VALIDATION = 0.02


def lab_question(root: Path, spec: RecipeSpec, stats: RowStats, dataset: Any) -> None:
    """The lab's open question as a ready experiment: N random rows against the N highest-scored ones,
    two recipes with the same validation share, to train with the same settings (a sweep over recipe)."""
    with st.expander("The lab's question: does data quality beat random data?"):
        st.caption(
            "The lab trained on train[:N] of FineTome-100k blind and concluded that composition matters more "
            "than volume without testing it. Save two recipes of this dataset (N random rows, and the N rows "
            f"with the highest score), each holding out {LAB_VALIDATION:.0%}, and train both with one sweep."
        )
        usable_rows = int((stats.table["problem"] == "").sum())
        rows = st.number_input(
            "N",
            min_value=1,
            max_value=max(1, usable_rows),
            value=min(10_000, max(1, usable_rows)),
            key="lab_rows",
        )
        names = {take: f"lab-{'random' if take == 'random' else 'top-score'}-{int(rows)}" for take in TAKES}
        if st.button("Save both recipes", key="lab_save") and owner_only():
            try:
                for take, name in names.items():
                    base = RecipeSpec(
                        source=spec.source,
                        model=spec.model,
                        take=take,
                        rows=int(rows),
                        validation=LAB_VALIDATION,
                    )
                    save_recipe(root, build_recipe(name, base, stats, dataset), replace_existing=True)
            except (RecipeError, OSError) as exc:
                st.error(f"Not saved: {escape_markdown(exc)}")
            else:
                flash(f"Saved recipes {' and '.join(names.values())}.")
                st.rerun()
        st.code(
            f"python -m core sweep lab-data-{int(rows)} --preset t1_baseline --grid recipe={','.join(names.values())}",
            language="bash",
        )
