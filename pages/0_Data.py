"""Data: what a run would train on. Pick a dataset (a project file, an upload or a Hub id), see
its conversations as chats, token lengths against max_seq_length, turns, answer share, sources
and scores; then filter, mix and sample it into a recipe that runs train on. The choice is in
the URL (`Data?source=...&split=...&model=...`)."""

import streamlit as st

from core.data.recipes import RecipeError, RecipeSpec, build_recipe, save_recipe, saved_recipes, select_rows
from core.data.sources import DataSource, load_source, save_upload
from core.data.stats import (
    length_summary,
    problems,
    row_stats,
    scores,
    source_counts,
    turn_counts,
    usable,
)
from core.store.paths import runs_root
from core.train.config import MODEL_TEMPLATE, RunConfig, is_hub_id
from core.train.data import DataError
from core.train.tiny import TINY_MODEL_ID
from ui.data import (
    PREVIEW_ROWS,
    bar_figure,
    chat_preview,
    lab_question,
    length_figure,
    project_files,
    recipe_form,
    score_figure,
    summary_metrics,
)
from ui.links import TRAIN_PAGE, flash, show_flash
from ui.lookups import cached_tokenizer, runs_of
from ui.owner import access_panel, is_owner, owner_only
from ui.text import escape_markdown

st.set_page_config(page_title="Data · PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()
show_flash()
root = runs_root()
files = project_files(root)
defaults = RunConfig()
st.title("Data")
st.caption(
    "What a run trains on, measured with its tokenizer and chat template; a recipe of filters, a mix, a sample "
    "and a held-out validation share that runs can name (`recipe=NAME`)."
)

for widget, initial in {
    "data_hub": "mlabonne/FineTome-100k",
    "data_split": "train",
    "data_model": defaults.base_model,
}.items():
    st.session_state.setdefault(widget, initial)
# The URL's choice, taken when it names a project file, an upload or a Hub id (nothing else is read).
wanted = st.query_params.get("source")
if wanted and st.session_state.get("data_url_source") != wanted:
    st.session_state["data_url_source"] = wanted
    if wanted in files:
        st.session_state.update(data_kind="File", data_file=wanted)
    elif is_hub_id(wanted):
        st.session_state.update(data_kind="Hub", data_hub=wanted)
    for param, key in (("split", "data_split"), ("model", "data_model")):
        if st.query_params.get(param):
            st.session_state[key] = st.query_params[param]

kind = st.radio("Dataset", ("File", "Upload", "Hub"), horizontal=True, key="data_kind")
where, split_column, model_column, length_column = st.columns([3, 1, 2, 1])
dataset = None
with where:
    if kind == "File":
        dataset = st.selectbox(
            "File", files, key="data_file", help="the project's samples and uploaded datasets"
        )
    elif kind == "Hub":
        dataset = st.text_input("Hub dataset id", key="data_hub").strip()
    else:
        upload = st.file_uploader("A .jsonl, .json, .parquet or .csv of conversations", key="data_upload")
        if upload is not None and owner_only():
            try:
                dataset = str(save_upload(root, upload.name, upload.getvalue()))
            except (DataError, OSError) as exc:
                st.error(escape_markdown(exc))
split = split_column.text_input("Split", key="data_split")
model = model_column.text_input(
    "Tokenizer and chat template of",
    key="data_model",
    help="tiny-llama works offline",
)
max_seq_length = length_column.number_input(
    "max_seq_length",
    min_value=16,
    max_value=131072,
    value=defaults.max_seq_length,
    step=128,
    key="data_max_seq",
)
if not dataset:
    st.info("Pick a dataset file, upload one, or name a Hub dataset.")
    st.stop()
source = DataSource(dataset, split.strip() or "train")
choice = f"{dataset}|{source.split}|{model}"
if st.button("Measure", type="primary", key="data_measure") or wanted == dataset:
    st.session_state["data_measured"] = choice  # a link that names the dataset measures it at once
if st.session_state.get("data_measured") != choice:
    st.info(
        "Measure reads every row with the tokenizer (a Hub dataset is downloaded first); a second look is cached."
    )
    st.stop()
owner = is_owner()
visitor_models = {
    TINY_MODEL_ID,
    defaults.base_model,
    *(str(run.config.get("base_model")) for run in runs_of(root)),
}
if not owner and (kind != "File" or model not in visitor_models or "[" in source.split):
    owner_only()  # says why: a visitor measures project files, whole, with the runs' own models
    st.stop()
st.query_params.update(source=dataset, split=source.split, model=model)

try:
    tokenizer = cached_tokenizer(model, MODEL_TEMPLATE, owner)
    progress = st.progress(0.0, text=f"Measuring {escape_markdown(source.label)}…")
    stats = row_stats(
        source,
        tokenizer,
        model,
        lambda done, rows: progress.progress(
            done / max(rows, 1), text=f"Measuring: {done:,} of {rows:,} rows"
        ),
    )
    progress.empty()
    rows_dataset = load_source(source)
except (DataError, OSError) as exc:
    st.error(escape_markdown(exc))
    st.stop()
except ImportError as exc:
    st.error(
        f"Measuring data needs transformers and datasets ({escape_markdown(exc)}): pip install -r requirements.txt"
    )
    st.stop()

table = stats.table
lengths = length_summary(table, int(max_seq_length))
kept = usable(table)
summary_metrics(table, lengths)
if skipped := problems(table):
    st.warning(
        "Rows training would skip: "
        + escape_markdown(", ".join(f"{reason} ({count:,})" for reason, count in skipped.items()))
    )

lengths_tab, turns_tab, sources_tab, preview_tab = st.tabs(
    ["Token lengths", "Turns", "Sources and scores", "Conversations"]
)
with lengths_tab:
    st.plotly_chart(length_figure(kept["tokens"].to_numpy(), lengths), key="data_lengths")
    quantiles = " · ".join(f"p{round(q * 100)} {value:,}" for q, value in lengths.quantiles.items())
    st.caption(
        escape_markdown(
            f"Tokens per conversation: {quantiles}. {lengths.truncated_rows:,} of {len(kept):,} conversations are "
            f"longer than max_seq_length {lengths.max_seq_length:,}: training cuts them, losing "
            f"{lengths.tokens_lost:,} of {lengths.tokens:,} tokens."
        )
    )
with turns_tab:
    counts = turn_counts(table)
    st.plotly_chart(
        bar_figure(
            [str(t) for t in counts],
            list(counts.values()),
            "turns per conversation (messages, system prompt not counted)",
        ),
        key="data_turns",
    )
with sources_tab:
    by_source, found_scores = source_counts(table), scores(table)
    left, right = st.columns(2)
    if len(by_source):
        left.plotly_chart(
            bar_figure([str(n) for n in by_source.index], by_source.tolist(), "source"), key="data_sources"
        )
    else:
        left.caption("No `source` column.")
    if len(found_scores):
        right.plotly_chart(score_figure(found_scores), key="data_scores")
    else:
        right.caption("No numeric `score` column.")
with preview_tab:
    pages = max(1, -(-len(table) // PREVIEW_ROWS))
    page = st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, value=1, key="data_page")
    chat_preview(rows_dataset, table, int(page))

st.header("Recipe")
spec: RecipeSpec = recipe_form(source, model, table, patterns=owner)
try:
    selection = select_rows(spec, stats, rows_dataset)
except RecipeError as exc:
    selection = None
    st.warning(f"Nothing to train on: {escape_markdown(exc)}")
else:
    st.dataframe(
        {"step": [label for label, _ in selection.funnel], "rows": [count for _, count in selection.funnel]},
        hide_index=True,
    )
    for note in selection.notes:
        st.caption(escape_markdown(note))
name_column, replace_column, save_column = st.columns([3, 1, 1])
name = name_column.text_input("Recipe name", key="recipe_name", placeholder="e.g. top-score-10k")
replace = replace_column.checkbox("Replace a recipe of this name", key="recipe_replace")
if save_column.button("Save recipe", type="primary", disabled=selection is None) and owner_only():
    try:
        document = build_recipe(name.strip(), spec, stats, rows_dataset)
        save_recipe(root, document, replace_existing=replace)
    except (RecipeError, OSError) as exc:
        st.error(f"Not saved: {escape_markdown(exc)}")
    else:
        flash(
            f"Saved recipe {escape_markdown(document['name'])}: {document['train_count']:,} rows to train on."
        )
        st.rerun()

lab_question(root, spec, stats, rows_dataset)
recipes = saved_recipes(root)
if recipes:
    st.subheader("Saved recipes")
    st.dataframe(
        [
            {
                "recipe": name,
                "dataset": f"{doc['source']['dataset']} [{doc['source']['split']}]",
                "train rows": doc["train_count"],
                "validation rows": doc["validation_count"],
                "hash": doc["hash"][:16],
                "created": doc["created_at"],
            }
            for name, doc in recipes.items()
        ],
        hide_index=True,
    )
    chosen = st.selectbox("Train on", list(recipes), key="recipe_train_on")
    st.page_link(
        TRAIN_PAGE,
        label=f"Train a run on {escape_markdown(chosen)}",
        icon=":material/model_training:",
        query_params={"recipe": chosen},
    )
