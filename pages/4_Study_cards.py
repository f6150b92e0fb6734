"""Study cards: a topic or notes become flashcards, edited here and downloaded for Anki."""

import dataclasses
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from core.cards.anki import CARD_TYPES, Card, apkg_bytes, cards_to_csv
from core.cards.generation import (
    DIFFICULTIES,
    MAX_CARDS,
    CardRequest,
    CardRequestError,
    generate_cards,
    validate_request,
)
from core.models.gguf import ModelError, ModelSlot
from core.models.sources import (
    ModelChoice,
    ResolvedModel,
    bundled_choice,
    hub_choice,
    local_choice,
    resolve_model,
    run_choices,
)
from core.store.paths import runs_root
from ui.owner import access_panel, is_owner
from ui.secrets import app_secrets
from ui.text import escape_markdown

LOCAL_FILE = "A GGUF file on this machine..."

st.set_page_config(page_title="Study cards · PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()


@st.cache_resource
def model_slot() -> ModelSlot:
    """The process's one loaded model, shared by every session."""
    return ModelSlot()


@st.cache_data(ttl=600, show_spinner="Fetching the model...")
def resolved(choice: ModelChoice) -> ResolvedModel:
    """A model choice resolved to a file, remembered for 10 minutes (a Hub check per click is slow)."""
    return resolve_model(choice)


def cards_frame(cards: list[Card]) -> pd.DataFrame:
    return pd.DataFrame({"front": [c.front for c in cards], "back": [c.back for c in cards]})


def frame_cards(frame: pd.DataFrame) -> list[Card]:
    """The cards in the edited table; rows left empty are dropped."""
    rows = frame.fillna("").astype(str).to_dict("records")
    return [
        Card(r["front"].strip(), r["back"].strip()) for r in rows if r["front"].strip() or r["back"].strip()
    ]


def show_result(result, notice: str | None) -> None:
    if notice:
        st.warning(escape_markdown(notice))
    if len(result.cards) < result.requested:
        st.warning(
            f"Made {len(result.cards)} of {result.requested} cards: {escape_markdown(result.summary())}."
        )
    else:
        st.success(escape_markdown(result.summary()))


st.title("Study cards")
st.caption("A topic or your notes become flashcards for Anki, written by a GGUF model on this CPU.")

state = st.session_state
state.setdefault("card_version", 0)

choices = {c.label: c for c in [hub_choice(app_secrets()), bundled_choice(), *run_choices(runs_root())]}
model_column, path_column = st.columns(2)
model_label = model_column.selectbox(
    "Model",
    [*choices, *([LOCAL_FILE] if is_owner() else [])],  # any path on the server: the owner's only
    help="Without the Hub the bundled SmolLM2 model is used, and you are told so.",
)
local_path = (
    path_column.text_input("GGUF file path", placeholder="/path/to/model.gguf")
    if model_label == LOCAL_FILE
    else ""
)

with st.form("card_request"):
    topic = st.text_input("Topic", placeholder="e.g. photosynthesis", help="What the cards are about.")
    notes = st.text_area("Notes (optional)", height=140, help="Cards are made from these notes only.")
    upload = st.file_uploader("...or a notes file", type=["txt", "md"])
    left, middle, right = st.columns(3)
    count = left.slider("Cards", 1, MAX_CARDS, 5)
    difficulty = middle.selectbox("Difficulty", DIFFICULTIES)
    card_type = right.radio(
        "Card type",
        CARD_TYPES,
        horizontal=True,
        help="basic: question and answer; cloze: a sentence with a hidden term",
    )
    deck = st.text_input("Deck name", placeholder="Study cards: <topic>")
    tags = st.text_input(
        "Tags", placeholder="biology, exam 1", help="Comma-separated; spaces become _ (Anki tags have none)"
    )
    submitted = st.form_submit_button("Generate", type="primary")
if card_type == "cloze" and model_label == bundled_choice().label:
    st.info(
        "The bundled SmolLM2 model rarely manages cloze cards: expect few or none. A larger model does better."
    )


def uploaded_text() -> str | None:
    """The uploaded notes file as text; None (after saying why) when it is not UTF-8 text."""
    if upload is None:
        return ""
    try:
        return upload.getvalue().decode("utf-8-sig")
    except UnicodeDecodeError:
        st.error(f"{escape_markdown(upload.name)} is not UTF-8 text; paste the notes instead.")
        return None


file_text = uploaded_text() if submitted else None
if submitted and file_text is not None:
    request = CardRequest(
        topic=topic,
        notes=(notes + "\n\n" + file_text).strip(),
        count=count,
        difficulty=difficulty,
        card_type=card_type,
        deck=deck,
        tags=tuple(tags.split(",")),
    )
    try:
        validate_request(request)
        choice = local_choice(local_path) if model_label == LOCAL_FILE else choices[model_label]
        source = resolved(choice)
        with st.spinner(f"Loading {escape_markdown(source.path.name)}..."):
            model = model_slot().get(source.path)
        with st.status(f"Writing {count} cards with {escape_markdown(source.choice.label)}...") as progress:
            line = st.empty()
            result = generate_cards(
                model, request, on_progress=lambda text: line.caption(escape_markdown(text))
            )
            progress.update(label=escape_markdown(result.summary()), state="complete")
    except (CardRequestError, ModelError) as exc:
        for problem in getattr(exc, "problems", {"model": str(exc)}).items():
            st.error(f"{problem[0].capitalize()}: {escape_markdown(problem[1])}")
    else:
        state.update(
            cards=result.cards,
            request=request,
            result=result,
            notice=source.notice,
            model_path=str(source.path),
            card_version=state.card_version + 1,
        )

if "cards" in state:
    request, result = state.request, state.result
    show_result(result, state.notice)
    edited = st.data_editor(
        cards_frame(state.cards),
        num_rows="dynamic",
        width="stretch",
        key=f"cards_{state.card_version}",
        column_config={
            "front": st.column_config.TextColumn(
                "Front" if request.card_type == "basic" else "Text (with {{c1::...}})"
            ),
            "back": st.column_config.TextColumn("Back" if request.card_type == "basic" else "Extra"),
        },
    )
    cards = frame_cards(edited)

    again_column, button_column = st.columns([3, 1])
    number = again_column.selectbox("Regenerate card", range(1, len(cards) + 1), disabled=not cards)
    if button_column.button("Regenerate", disabled=not cards):
        try:  # the new card must differ from every card in the deck, the one it replaces included
            single = generate_cards(
                model_slot().get(Path(state.model_path)), dataclasses.replace(request, count=1), avoid=cards
            )
        except (CardRequestError, ModelError, OSError) as exc:
            st.error(escape_markdown(exc))
        else:
            result.raw_outputs.extend(single.raw_outputs)
            if single.cards:
                cards[number - 1] = single.cards[0]
                state.update(cards=cards, card_version=state.card_version + 1)
                st.rerun()
            st.warning(f"No new card: {escape_markdown(single.summary())}.")

    with st.expander("Raw model output"):
        for index, raw in enumerate(result.raw_outputs, 1):
            st.caption(f"Attempt {index}")
            st.code(raw, language="json")

    try:
        csv_text = cards_to_csv(cards, request.deck_name, request.card_type, request.tags)
        package = apkg_bytes(cards, request.deck_name, request.card_type, request.tags)
    except ValueError as exc:
        st.error(f"Cannot export the deck yet: {escape_markdown(exc)}")
    else:
        csv_column, apkg_column = st.columns(2)
        name = re.sub(r"[^\w-]+", "_", request.deck_name).strip("_") or "study_cards"
        csv_column.download_button(
            "Download CSV for Anki", csv_text, file_name=f"{name}.csv", mime="text/csv"
        )
        apkg_column.download_button(
            "Download Anki package (.apkg)",
            package,
            file_name=f"{name}.apkg",
            mime="application/octet-stream",
        )
